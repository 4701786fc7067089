"""Real `chatsvc serve` processes on free loopback ports, and the process trees they leave."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import IO, Any

import httpx

from chatsvc.ports import LOOPBACK, free_port
from chatsvc.testing.databases import DatabaseFactory

# Argon2 at its cheapest: suites and load runs hash hundreds of passwords.
CHEAP_HASHING = {"CHATSVC_ARGON2_TIME_COST": "1", "CHATSVC_ARGON2_MEMORY_KIB": "64"}
# For tests of something else than the limiters: they would only turn requests into 429s.
NO_RATE_LIMITS = {"CHATSVC_RATE": "0", "CHATSVC_AUTH_RATE": "0"}
# Warnings and errors only, and no access log: for tests that do not read the log.
QUIET_LOGS = {"CHATSVC_ACCESS_LOG": "false", "CHATSVC_LOG_LEVEL": "warning"}
# A server started here exits at once on stop() (SIGTERM): the default 5 s drain delay, paid by every
# server the suite stops, was minutes of a run. Tests of the drain set CHATSVC_DRAIN_DELAY themselves.
NO_DRAIN_DELAY = {"CHATSVC_DRAIN_DELAY": "0"}
SERVE = (sys.executable, "-m", "chatsvc", "serve")
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0


def start_time(pid: int) -> str | None:
    """The start time of a live (non-zombie) process, to tell it from a later one with its pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return None if fields[0] in "ZX" else fields[19]


def _processes() -> dict[int, list[str]]:
    """Every process's /proc/<pid>/stat fields after the command name (state, ppid, pgrp, ...)."""
    fields: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, ValueError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                fields[int(entry)] = stat[stat.rindex(")") + 2:].split()
    return fields


def in_group(pgid: int) -> bool:
    """Whether any live process is in process group `pgid`."""
    return any(f[2] == str(pgid) and f[0] not in "ZX" for f in _processes().values())


def descendants(root: int) -> dict[int, str]:
    """Every live descendant of `root`, by pid, with its start time (from /proc/<pid>/stat)."""
    parents = {pid: int(f[1]) for pid, f in _processes().items()}
    found: dict[int, str] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in found and (started := start_time(pid)):
                found[pid] = started
                frontier.append(pid)
    return found


def kill_if_same(processes: dict[int, str]) -> None:
    """SIGKILL each pid still running with the start time recorded for it."""
    for pid, started in processes.items():
        if start_time(pid) == started:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


class ServerProcess:
    """A real `chatsvc serve` (or `argv`) subprocess on loopback ports, in a process group of its own."""

    def __init__(self, database_url: str, log_path: Path, *, port: int | None = None,
                 admin_port: int | None = None, cheap_hashing: bool = True,
                 argv: Sequence[str] = SERVE, **settings: str) -> None:
        self.port = port or free_port()
        self.admin_port = admin_port or free_port()
        self.database_url = database_url
        self.log_path = Path(log_path)
        self.argv = list(argv)
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "CHATSVC_HOST": LOOPBACK,
            "CHATSVC_PORT": str(self.port),
            "CHATSVC_ADMIN_PORT": str(self.admin_port),
            **NO_DRAIN_DELAY,
            **(CHEAP_HASHING if cheap_hashing else {}),
            **settings,
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.stopped = False
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://{LOOPBACK}:{self.admin_port}"

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start the process and return at once, not waiting until it serves."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        # A session of its own: stop() can kill the whole group, and a terminal's Ctrl-C meant
        # for the test runner does not reach the server behind the test's back.
        self.stopped = False
        self.process = subprocess.Popen(self.argv, env=self.env, stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        return self.process

    def start(self, timeout: float = READY_TIMEOUT) -> ServerProcess:
        """Start the process and return once `GET /check` answers 200."""
        process = self.spawn()
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    raise RuntimeError(f"{self.argv[-1]} exited {process.returncode}:\n{self.log()[-5000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(self.url + "/check", timeout=1).status_code == 200:
                        return self
                time.sleep(0.05)
            raise RuntimeError(f"{self.argv[-1]} was not ready in {timeout} s:\n{self.log()[-5000:]}")
        except BaseException:
            self.stop()
            raise

    def wait_listening(self, workers: int, timeout: float = 10) -> None:
        """Until each of `workers` processes has logged that it serves (needs log level info).

        Hypercorn logs "Running on" once a worker has installed its signal handlers, which
        `GET /check` alone cannot tell when several workers share the socket.
        """
        line = f"Running on {self.url}"
        deadline = time.monotonic() + timeout
        while self.log().count(line) < workers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{workers} workers were not all listening in {timeout} s:\n"
                                   f"{self.log()[-3000:]}")
            time.sleep(0.05)

    def signal(self, signum: int = signal.SIGTERM) -> None:
        assert self.process is not None, "not started"
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        """The exit status; subprocess.TimeoutExpired if it is still running after `timeout`."""
        assert self.process is not None, "not started"
        return self.process.wait(timeout)

    def descendants(self) -> dict[int, str]:
        """Its live child processes (workers, helpers), each with its start time."""
        return descendants(self.process.pid) if self.process is not None else {}

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM and wait; then SIGKILL its process group and any worker still alive. Idempotent."""
        process = self.process
        if process is not None and not self.stopped:
            self.stopped = True
            # Workers have process groups of their own: remember them before the supervisor goes.
            children = self.descendants()
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            # Its group outlives it only while a member does, and a group id in use is never
            # handed out as a new pid: so this reaches only what it left behind.
            if in_group(process.pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
            kill_if_same(children)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@contextlib.asynccontextmanager
async def serving(databases: DatabaseFactory, log_path: Path, **options: Any) -> AsyncIterator[ServerProcess]:
    """A started ServerProcess on a fresh migrated database, stopped on the way out."""
    server = ServerProcess(await databases.create(migrated=True), log_path, **options)
    with server:
        yield server
