"""The servers under load: `chatsvc serve` (Hypercorn) at production settings, and the same app
under uvicorn for comparison."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from chatsvc.bench.options import LOGS, ROOT, BenchError, Options, log
from chatsvc.bench.procfs import children, cmdline, process_tree, started_at

# The settings where the benchmark differs from production, named in the report.
SERVER_ENV_SHOWN = ("CHATSVC_WORKERS", "CHATSVC_ACCESS_LOG", "CHATSVC_TRUSTED_PROXIES", "CHATSVC_DRAIN_DELAY")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def http_get(url: str, timeout: float) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (loopback)
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


class Server:
    """`chatsvc serve` or uvicorn, as a process group we own, with its worker processes."""

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str], port: int, admin_port: int | None, workers: int
    ) -> None:
        self.name, self.argv, self.env = name, argv, env
        self.port, self.admin_port, self.expected_workers = port, admin_port, workers
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.worker_pids: list[int] = []

    def start(self, timeout: float = 90) -> Server:
        LOGS.mkdir(parents=True, exist_ok=True)
        self._log = (LOGS / f"{self.name}.log").open("ab")
        self.process = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(
                    f"{self.name} exited with {self.process.returncode}; see {LOGS / (self.name + '.log')}"
                )
            with contextlib.suppress(OSError):
                self.worker_pids = self.workers()
                if (
                    http_get(self.url + "/check", 2)[0] == 200
                    and len(self.worker_pids) >= self.expected_workers
                ):
                    time.sleep(1)  # let every worker finish its start-up before the first run
                    return self
            time.sleep(0.2)
        raise BenchError(f"{self.name} was not ready within {timeout:g} s")

    def workers(self) -> list[int]:
        if self.process is None:
            return []
        pids = [pid for pid in children(self.process.pid) if b"spawn_main" in cmdline(pid)]
        return pids or [self.process.pid]  # a single process serves by itself

    def tree(self) -> list[int]:
        return process_tree(self.process.pid) if self.process else []

    def stop(self) -> None:
        if self.process is None:
            return
        # (pid, start time): a pid reused by another process after ours exited is never killed.
        ours = {(pid, started_at(pid)) for pid in {*self.worker_pids, *self.tree()}}
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(40)
            except subprocess.TimeoutExpired:
                log(f"{self.name} did not stop in 40 s: killing it")
        for pid, start in ours:  # workers run in process groups of their own
            if start is not None and started_at(pid) == start:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)
        self._log.close()
        self.process = None


def server_env(opts: Options, dsn: str, port: int, admin_port: int) -> dict[str, str]:
    """Production settings, except where a benchmark on one machine must differ (see BENCHMARKS.md)."""
    return {
        **os.environ,
        "DATABASE_URL": dsn,
        "CHATSVC_HOST": "127.0.0.1",
        "CHATSVC_PORT": str(port),
        "CHATSVC_ADMIN_PORT": str(admin_port),
        "CHATSVC_WORKERS": str(opts.workers),
        "CHATSVC_ACCESS_LOG": "false",
        # wrk stands in for an ingress: each simulated client has its own X-Forwarded-For.
        "CHATSVC_TRUSTED_PROXIES": "127.0.0.1",
        "CHATSVC_DRAIN_DELAY": "0",
    }


def shown_settings(opts: Options) -> str:
    """The settings where the benchmark differs from production, as the report names them."""
    env = server_env(opts, "", 0, 0)
    return " ".join(f"{name}={env[name]}" for name in SERVER_ENV_SHOWN)


def chatsvc_server(opts: Options, dsn: str, name: str = "hypercorn") -> Server:
    port, admin = free_port(), free_port()
    return Server(
        name,
        [sys.executable, "-m", "chatsvc", "serve"],
        server_env(opts, dsn, port, admin),
        port,
        admin,
        opts.workers,
    )


def uvicorn_argv(opts: Options, port: int | str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "chatsvc.asgi:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(opts.workers),
        "--loop",
        "uvloop",
        "--http",
        "h11",
        "--no-access-log",
        "--no-proxy-headers",
        "--lifespan",
        "on",
        "--log-level",
        "warning",
    ]


def uvicorn_server(opts: Options, dsn: str) -> Server:
    try:
        import uvicorn  # noqa: F401
    except ImportError:
        raise BenchError(
            "uvicorn is not installed: `make bench` installs it (pip install -e '.[bench]')"
        ) from None
    port = free_port()
    return Server(
        "uvicorn",
        uvicorn_argv(opts, port),
        server_env(opts, dsn, port, free_port()),
        port,
        None,
        opts.workers,
    )


def fanout_server(dsn: str, name: str, settings: dict[str, str]) -> Server:
    """One `chatsvc serve` process for the fan-out: no rate limits, cheap password hashing."""
    port, admin = free_port(), free_port()
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "CHATSVC_HOST": "127.0.0.1",
        "CHATSVC_PORT": str(port),
        "CHATSVC_ADMIN_PORT": str(admin),
        "CHATSVC_RATE": "0",
        "CHATSVC_AUTH_RATE": "0",
        "CHATSVC_ACCESS_LOG": "false",
        "CHATSVC_LOG_LEVEL": "warning",
        "CHATSVC_DRAIN_DELAY": "0",
        "CHATSVC_ARGON2_TIME_COST": "1",
        "CHATSVC_ARGON2_MEMORY_KIB": "64",
        **settings,
    }
    return Server(name, [sys.executable, "-m", "chatsvc", "serve"], env, port, admin, 1)
