"""Load generation: wrk running the Lua scripts of lua/ against a server, and what each run cost."""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from chatsvc.bench import statements
from chatsvc.bench.data import Dataset
from chatsvc.bench.options import LOGS, ROOT, BenchError, Options, log
from chatsvc.bench.procfs import cpu_seconds, cpu_split, reset_peak_rss, status_kib, tree
from chatsvc.bench.servers import BenchServer

LUA_DIR = Path(__file__).resolve().parent / "lua"


@dataclass
class Run:
    """One measured run of wrk or pgbench."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    non_2xx: int = 0
    socket_errors: int = 0
    server_cpu: float | None = None  # CPU seconds per 1000 requests
    server_sys: float | None = None  # the part of server_cpu spent in the kernel
    pg_cpu: float | None = None
    client_cpu: float | None = None
    peak_rss_mb: float | None = None  # the largest worker's peak during this run
    rss_mb: float | None = None  # the largest worker's RSS at the end of this run
    # (calls per request, mean ms, name) of the run's costliest statements (pg_stat_statements)
    statements: tuple[tuple[float, float, str], ...] = ()

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


class Meter:
    """CPU of the server's processes, of PostgreSQL's and of our own clients, and workers' peak RSS."""

    def __init__(self, server: BenchServer | None, pg_pid: int, dsn: str | None = None) -> None:
        self.server, self.pg_pid, self.dsn = server, pg_pid, dsn

    def __enter__(self) -> Meter:
        if self.dsn:
            statements.reset(self.dsn)
        if self.server:
            self.workers = self.server.workers()
            reset_peak_rss(self.workers)
            self.server_cpu = cpu_split(self.server.tree())
        self.pg_cpu = cpu_seconds(tree(self.pg_pid))
        self.client = resource.getrusage(resource.RUSAGE_CHILDREN)
        return self

    def __exit__(self, *exc: object) -> None:
        client = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.client_seconds = client.ru_utime + client.ru_stime - self.client.ru_utime - self.client.ru_stime
        self.pg_seconds = cpu_seconds(tree(self.pg_pid)) - self.pg_cpu
        if self.server:
            user, system = cpu_split(self.server.tree())
            self.server_seconds = user + system - sum(self.server_cpu)
            self.server_sys_seconds = system - self.server_cpu[1]
            self.peak = max(status_kib(pid, "VmHWM") for pid in self.workers) / 1024
            self.rss = max(status_kib(pid, "VmRSS") for pid in self.workers) / 1024

    def fill(self, run: Run) -> Run:
        per_1000 = 1000 / run.requests if run.requests else 0.0
        run.pg_cpu = self.pg_seconds * per_1000
        run.client_cpu = self.client_seconds * per_1000
        if self.server:
            run.server_cpu = self.server_seconds * per_1000
            run.server_sys = self.server_sys_seconds * per_1000
            run.peak_rss_mb, run.rss_mb = self.peak, self.rss
        if self.dsn:
            run.statements = statements.top(self.dsn, run.requests)
        return run


class Load:
    """Runs wrk against one dataset, keeping every output under .data/bench/logs and each measured
    run's command for the report."""

    def __init__(self, opts: Options, data: Dataset, pg_pid: int) -> None:
        self.opts, self.data, self.pg_pid = opts, data, pg_pid
        self.wrk_path = find_wrk()
        self.background: list[subprocess.Popen[str]] = []
        self.commands: dict[str, str] = {}
        self.servers: list[BenchServer] = []  # all that must be idle before a run starts

    def settle(self, limit: float = 90) -> None:
        """Wait until the servers are idle: logins queued by a run whose clients have gone keep
        hashing for a while, and would slow the next run down."""
        deadline = time.monotonic() + limit
        before = sum(cpu_seconds(server.tree()) for server in self.servers)
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now = sum(cpu_seconds(server.tree()) for server in self.servers)
            if now - before < 0.06:  # below about a tenth of a core
                return
            before = now
        log("the servers did not go idle; measuring anyway")

    def wrk(
        self,
        script: str,
        server: BenchServer,
        *,
        seconds: float | None = None,
        connections: int | None = None,
        label: str = "",
        measure: bool = True,
        env: dict[str, str] | None = None,
        settle: bool = True,
    ) -> Run:
        """One run of `script`; `label` names a measured run (its command is shown in the report)."""
        seconds = self.opts.seconds if seconds is None else seconds
        argv = self._argv(script, server.url, seconds, connections or self.opts.connections)
        if label and label not in self.commands:
            self.commands[label] = shown_command(argv, env)
        if settle:
            self.settle()
        with Meter(server if measure else None, self.pg_pid, self.data.dsn if measure else None) as meter:
            proc = subprocess.run(
                argv, env=self._env(env), capture_output=True, text=True, timeout=seconds + 120, check=False
            )
        with (LOGS / f"wrk-{label or script}.log").open("a") as saved:
            saved.write(proc.stdout + proc.stderr)
        return meter.fill(parse_wrk(proc))

    def paced(
        self, server: BenchServer, label: str = "", *, measure: bool = True, settle: bool = True,
        request: str = "get_messages",
    ) -> Run:
        """A request of lua/common.lua (GET /messages unless `request` names another) at a fixed
        moderate load: each connection waits pace_ms between requests (a warm-up unless `measure`)."""
        return self.wrk(
            "paced.lua",
            server,
            seconds=self.opts.seconds if measure else self.opts.warmup,
            connections=self.opts.paced_connections,
            label=label,
            measure=measure,
            env={"BENCH_PACE_MS": str(self.opts.pace_ms), "BENCH_REQUEST": request},
            settle=settle,
        )

    def wrk_in_background(
        self, script: str, server: BenchServer, seconds: float, connections: int, label: str
    ) -> subprocess.Popen[str]:
        argv = self._argv(script, server.url, seconds, connections)
        if not label.startswith("profile"):
            self.commands.setdefault(label, shown_command(argv))
        self.settle()
        proc = subprocess.Popen(
            argv, env=self._env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.background.append(proc)
        return proc

    def finish(self, proc: subprocess.Popen[str], label: str) -> Run:
        out, _ = proc.communicate(timeout=300)
        self.background.remove(proc)
        with (LOGS / f"wrk-{label}.log").open("a") as saved:
            saved.write(out)
        return parse_wrk(subprocess.CompletedProcess(proc.args, proc.returncode, out, ""))

    def stop_background(self) -> None:
        for proc in self.background:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
        self.background.clear()

    def _argv(self, script: str, url: str, seconds: float, connections: int) -> list[str]:
        return [
            self.wrk_path,
            f"-t{min(self.opts.threads, connections)}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(LUA_DIR / script),
            url,
        ]

    def _env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {
            **os.environ,
            "BENCH_DATA": str(self.data.lua),
            "LUA_PATH": f"{LUA_DIR}/?.lua;;",
            **(extra or {}),
        }


def find_wrk() -> str:
    if found := shutil.which("wrk"):
        return found
    raise BenchError(
        "wrk is not installed: install it and run again: `bin/system-deps` as root, or `apt-get install wrk` "
        "(Debian, Ubuntu), `dnf install wrk` (Fedora), `brew install wrk` (macOS)."
    )


def shown_command(argv: list[str], env: dict[str, str] | None = None) -> str:
    """The command as a person would type it from the project directory."""
    shown = ["wrk", *argv[1:-1], "http://127.0.0.1:<port>"]
    prefix = " ".join(f"{k}={v}" for k, v in (env or {}).items())
    return (prefix + " " if prefix else "") + " ".join(shown).replace(str(ROOT) + "/", "")


def parse_wrk(proc: subprocess.CompletedProcess[str]) -> Run:
    """The run as lua/common.lua's `done` summed it up in one BENCH_JSON line."""
    match = re.search(r"^BENCH_JSON (\{.*\})$", proc.stdout, re.MULTILINE)
    if proc.returncode != 0 or not match:
        raise BenchError(f"wrk failed ({proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    data = json.loads(match.group(1))
    return Run(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        non_2xx=data["non_2xx_3xx"],
        socket_errors=sum(data[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts")),
    )
