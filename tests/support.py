"""Test helpers that are not fixtures: throwaway databases, users, live server processes."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def with_database(dsn: str, name: str) -> str:
    """`dsn` pointing at database `name` on the same server."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + name))


class DatabaseFactory:
    """Creates throwaway databases on one server and drops them all at the end."""

    def __init__(self, server_dsn: str) -> None:
        self.server_dsn = server_dsn
        self.names: list[str] = []

    async def create(self) -> str:
        name = f"chatsvc_test_{secrets.token_hex(4)}"
        connection = await asyncpg.connect(self.server_dsn)
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()
        self.names.append(name)
        return with_database(self.server_dsn, name)

    async def drop_all(self) -> None:
        connection = await asyncpg.connect(self.server_dsn)
        try:
            for name in self.names:
                await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()


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
    username = username or f"user-{secrets.token_hex(6)}"
    password = secrets.token_urlsafe(12)
    created = await client.post("/users", json={"username": username, "password": password})
    assert created.status_code == 201, created.text
    login = await client.post("/login", json={"username": username, "password": password})
    assert login.status_code == 200, login.text
    return User(created.json()["id"], username, password, login.json()["token"])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerProcess:
    """A real `chatsvc serve` subprocess on free loopback ports."""

    def __init__(self, database_url: str, log_path: Path, **settings: str) -> None:
        self.port = free_port()
        self.admin_port = free_port()
        self.log_path = log_path
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "CHATSVC_HOST": "127.0.0.1",
            "CHATSVC_PORT": str(self.port),
            "CHATSVC_ADMIN_PORT": str(self.admin_port),
            "CHATSVC_ARGON2_TIME_COST": "1",
            "CHATSVC_ARGON2_MEMORY_KIB": "64",
            **settings,
        }
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def start(self, timeout: float = 30) -> ServerProcess:
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "chatsvc", "serve"], env=self.env,
            stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"chatsvc serve exited {self.process.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/check", timeout=1).status_code == 200:
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"chatsvc serve was not ready in {timeout}s:\n{self.log()}")

    def signal(self, signum: int = signal.SIGTERM) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
