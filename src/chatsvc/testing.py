"""The live-server harness: real `chatsvc serve` processes for the test suite and the benchmarks.

One place starts servers, makes users and checks error answers, so every test and benchmark
does it the same way. It needs the development extras (httpx, pytest for `require_program`).

Databases
    `postgres_server(root)`      context manager: DATABASE_URL's server when set, else a private
                                 cluster under `root` (shared with another run already holding it).
    `DatabaseFactory(dsn)`       `await create(migrated=True)` makes a throwaway database on that
                                 server and returns its URL; `await drop_all()` drops them all.

Servers
    `free_port()`                a free loopback TCP port.
    `ServerProcess(database_url, log_path, **settings)`
                                 a `chatsvc serve` on free public and admin ports (or `port=`,
                                 `admin_port=`), with cheap password hashing unless
                                 `cheap_hashing=False`. `start()` returns once `GET /check` is 200;
                                 `stop()` sends SIGTERM, waits, then kills whatever is left of its
                                 process group and its workers. Also `url`, `admin_url`, `env`,
                                 `process`, `log()`, `signal()`, `wait()`, `spawn()` (start without
                                 waiting), `wait_listening(workers)`, `descendants()`. A context
                                 manager: `with ServerProcess(...) as server:`.
    `descendants(pid)`, `start_time(pid)`
                                 a process tree read from /proc, each pid with its start time so a
                                 reused pid is never mistaken for ours.

Users and clients
    `User`                       `id`, `username`, `password`, `token`, and `.auth` (the header).
    `sign_up_and_log_in(client)` one fresh user through `POST /users` and `POST /login`.
    `make_users(server, count)`  `count` fresh users of a server (a ServerProcess or a base URL).
    `client_for(server, user)`   an httpx.AsyncClient on the server, logged in as `user` if given.

Checks
    `assert_error(response, status, code)`
                                 the response is the error envelope: that status, JSON, an
                                 X-Request-ID, exactly {"error": {"code", "message"}} with that
                                 code (or one of a set) and a message; returns the message.
    `require_program(program, package)`
                                 the program's path; when it is missing, the test is skipped with
                                 the Debian package to install, or fails when CI=true.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx

from chatsvc.migrate import migrate

LOOPBACK = "127.0.0.1"
# Argon2 at its cheapest: suites and load runs hash hundreds of passwords.
CHEAP_HASHING = {"CHATSVC_ARGON2_TIME_COST": "1", "CHATSVC_ARGON2_MEMORY_KIB": "64"}
SERVE = (sys.executable, "-m", "chatsvc", "serve")
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
CLIENT_TIMEOUT = 10.0


# --- databases ---------------------------------------------------------------------------------

def with_database(dsn: str, name: str) -> str:
    """`dsn` pointing at database `name` on the same server."""
    return urlunsplit(urlsplit(dsn)._replace(path="/" + name))


@contextlib.contextmanager
def postgres_server(root: Path) -> Iterator[str]:
    """A PostgreSQL server's DSN: DATABASE_URL's when set, else a private cluster under `root`."""
    if url := os.environ.get("DATABASE_URL"):
        yield url
        return
    from chatsvc.devdb import PrivateCluster

    cluster = PrivateCluster(root, durable=False)  # throwaway: speed over crash safety
    if running := cluster.url():
        # Another run holds it: share it (each run makes databases of its own on it).
        yield running
        return
    with cluster:
        assert cluster.dsn is not None
        yield cluster.dsn


class DatabaseFactory:
    """Creates throwaway databases on one server and drops them all at the end."""

    def __init__(self, server_dsn: str, prefix: str = "chatsvc_test") -> None:
        self.server_dsn = server_dsn
        self.prefix = prefix
        self.names: list[str] = []

    async def create(self, *, migrated: bool = False) -> str:
        """A new empty database's URL; with `migrated`, the schema applied."""
        name = f"{self.prefix}_{secrets.token_hex(4)}"
        connection = await asyncpg.connect(self.server_dsn)
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()
        self.names.append(name)
        url = with_database(self.server_dsn, name)
        if migrated:
            await migrate(url)
        return url

    async def drop_all(self) -> None:
        connection = await asyncpg.connect(self.server_dsn)
        try:
            for name in self.names:
                await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()
        self.names.clear()


# --- processes ---------------------------------------------------------------------------------

def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nothing listens on now (the kernel's pick)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def start_time(pid: int) -> str | None:
    """The start time of a live (non-zombie) process, to tell it from a later one with its pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return None if fields[0] in "ZX" else fields[19]


def descendants(root: int) -> dict[int, str]:
    """Every live descendant of `root`, by pid, with its start time (from /proc/<pid>/stat)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                parents[int(entry)] = int(stat[stat.rindex(")") + 2:].split()[1])
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
        self.log_path = Path(log_path)
        self.argv = list(argv)
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "CHATSVC_HOST": LOOPBACK,
            "CHATSVC_PORT": str(self.port),
            "CHATSVC_ADMIN_PORT": str(self.admin_port),
            **(CHEAP_HASHING if cheap_hashing else {}),
            **settings,
        }
        self.process: subprocess.Popen[bytes] | None = None
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
        """SIGTERM and wait; then SIGKILL its process group and any worker still alive."""
        process = self.process
        if process is not None:
            # Workers have process groups of their own: remember them before the supervisor goes.
            children = self.descendants()
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
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


# --- users and clients -------------------------------------------------------------------------

@dataclass
class User:
    id: int
    username: str
    password: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def sign_up_and_log_in(client: httpx.AsyncClient, username: str | None = None) -> User:
    """A fresh user through the API itself: `POST /users`, then `POST /login`."""
    username = username or f"user-{secrets.token_hex(6)}"
    password = secrets.token_urlsafe(12)
    created = await client.post("/users", json={"username": username, "password": password})
    assert created.status_code == 201, created.text
    login = await client.post("/login", json={"username": username, "password": password})
    assert login.status_code == 200, login.text
    return User(created.json()["id"], username, password, login.json()["token"])


def base_url(server: ServerProcess | str) -> str:
    return server if isinstance(server, str) else server.url


def client_for(server: ServerProcess | str, user: User | None = None, *,
               timeout: float = CLIENT_TIMEOUT, **options: Any) -> httpx.AsyncClient:
    """An httpx client on the server's public listener; sending `user`'s token when given."""
    headers = user.auth if user is not None else {}
    return httpx.AsyncClient(base_url=base_url(server), headers=headers, timeout=timeout,
                             **options)


async def make_users(server: ServerProcess | str, count: int, *,
                     timeout: float = CLIENT_TIMEOUT) -> list[User]:
    """`count` fresh signed-up, logged-in users of a live server."""
    async with client_for(server, timeout=timeout) as client:
        return [await sign_up_and_log_in(client) for _ in range(count)]


# --- checks ------------------------------------------------------------------------------------

def media_type(response: httpx.Response) -> str:
    return response.headers.get("content-type", "").split(";")[0].strip()


def assert_error(response: httpx.Response, status: int, code: str | Collection[str]) -> str:
    """`response` is the error envelope with `status` and `code` (or one of them); returns its message."""
    assert response.status_code == status, (response.status_code, response.text)
    assert media_type(response) == "application/json", response.headers
    assert response.headers.get("x-request-id"), response.headers
    assert "Traceback" not in response.text, response.text
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    assert isinstance(body["error"], dict) and set(body["error"]) == {"code", "message"}, body
    codes = {code} if isinstance(code, str) else set(code)
    assert body["error"]["code"] in codes, body
    message = body["error"]["message"]
    assert isinstance(message, str) and message, body
    return message


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def require_program(program: str, package: str) -> str:
    """The path of `program`; if it is missing, skip the test naming the Debian package (fail in CI).

    `bin/system-deps` installs the same packages; this only reports what it could not.
    """
    import pytest

    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/sbin"])
    if found := shutil.which(program, path=search):
        return found
    reason = (f"{program} is not installed: install the Debian package {package} "
              f"(apt-get install -y {package}, or run bin/system-deps as root)")
    if in_ci():
        pytest.fail(f"CI=true: {reason}", pytrace=False)
    pytest.skip(reason)
