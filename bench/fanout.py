#!/usr/bin/env python3
"""Fan-out latency of `GET /messages/stream`: from a POST's 201 on process A to the event's arrival
on a stream held by process B, with N streams open on B.

    .venv/bin/python bench/fanout.py                         # 100 streams, 2000 messages, 1 and 8 posters
    .venv/bin/python bench/fanout.py --streams 1000 --messages 5000 --concurrency 1,16

PostgreSQL: a throwaway database on DATABASE_URL's server when it is set (dropped afterwards),
else a private cluster (chatsvc.devdb) in a temporary directory. Both `chatsvc serve` processes
and the cluster are stopped on exit. Each of the N users holds one stream on B; one sender posts
on A, to the N users in turn, from `concurrency` connections at once. Latency is measured on one
clock: the arrival of event `id` minus the moment the 201 naming `id` was read. It can be a little
negative: the event may arrive before the 201 is read. Every event must arrive exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from chatsvc.migrate import migrate  # noqa: E402

WARMUP = 50


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=100, help="streams open on process B (100)")
    parser.add_argument("--messages", type=int, default=2000, help="messages per run (2000)")
    parser.add_argument("--concurrency", default="1,8",
                        help="comma-separated numbers of concurrent posters, one run each (1,8)")
    args = parser.parse_args()
    runs = [int(n) for n in args.concurrency.split(",")]
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(bench(args.streams, args.messages, runs))
    return uvloop.run(bench(args.streams, args.messages, runs))


async def bench(streams: int, messages: int, runs: list[int]) -> int:
    with contextlib.ExitStack() as stack:
        async with database() as url:
            await migrate(url)
            logs = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="chatsvc-fanout-")))
            settings = {"CHATSVC_STREAM_MAX_PER_PROCESS": str(streams + 10),
                        "CHATSVC_DB_POOL_MAX": "20"}
            a = stack.enter_context(Server(url, logs / "a.log", settings))
            b = stack.enter_context(Server(url, logs / "b.log", settings))
            print(f"PostgreSQL {await server_version(url)}; A :{a.port}, B :{b.port}; "
                  f"{streams} streams on B; {messages} messages per run (first {WARMUP} not counted)")
            async with httpx.AsyncClient(base_url=a.url, timeout=30,
                                         limits=httpx.Limits(max_connections=64)) as client:
                users = await asyncio.gather(*(sign_up(client) for _ in range(streams + 1)))
            sender, recipients = users[0], users[1:]
            failed = False
            for concurrency in runs:
                failed |= not await run(a, b, sender, recipients, messages, concurrency)
            return 1 if failed else 0


@dataclass
class User:
    id: int
    token: str


async def sign_up(client: httpx.AsyncClient) -> User:
    credentials = {"username": f"bench-{secrets.token_hex(6)}", "password": secrets.token_urlsafe(12)}
    created = await client.post("/users", json=credentials)
    created.raise_for_status()
    login = await client.post("/login", json=credentials)
    login.raise_for_status()
    return User(created.json()["id"], login.json()["token"])


@dataclass
class Arrivals:
    at: dict[int, float] = field(default_factory=dict)
    duplicates: int = 0
    expected: int = 0
    complete: asyncio.Event = field(default_factory=asyncio.Event)

    def record(self, message_id: int) -> None:
        if message_id in self.at:
            self.duplicates += 1
            return
        self.at[message_id] = time.perf_counter()
        if self.expected and len(self.at) >= self.expected:
            self.complete.set()


async def run(a: Server, b: Server, sender: User, recipients: list[User], messages: int,
              concurrency: int) -> bool:
    arrivals = Arrivals()
    ready = [asyncio.Event() for _ in recipients]
    readers = [asyncio.create_task(read_stream(b.port, user, arrivals, opened))
               for user, opened in zip(recipients, ready, strict=True)]
    try:
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in ready)), 60)
        answered: dict[int, float] = {}
        sent: dict[int, float] = {}
        turn = iter(range(messages))

        async def post(client: httpx.AsyncClient) -> None:
            for n in turn:
                recipient = recipients[n % len(recipients)]
                started = time.perf_counter()
                response = await client.post("/messages", headers={"Authorization": f"Bearer {sender.token}"},
                                             json={"recipient": recipient.id,
                                                   "content": {"type": "text", "text": f"bench {n}"}})
                done = time.perf_counter()
                response.raise_for_status()
                message_id = response.json()["id"]
                answered[message_id], sent[message_id] = done, started

        arrivals.expected = messages
        started = time.perf_counter()
        async with httpx.AsyncClient(base_url=a.url, timeout=30,
                                     limits=httpx.Limits(max_connections=concurrency)) as client:
            await asyncio.gather(*(post(client) for _ in range(concurrency)))
        posting = time.perf_counter() - started
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(arrivals.complete.wait(), 15)
    finally:
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    ordered = sorted(answered)
    counted = ordered[WARMUP:]
    missing = [i for i in ordered if i not in arrivals.at]
    from_201 = sorted((arrivals.at[i] - answered[i]) * 1000 for i in counted if i in arrivals.at)
    from_post = sorted((arrivals.at[i] - sent[i]) * 1000 for i in counted if i in arrivals.at)
    print(f"\nconcurrency {concurrency}: {messages} messages in {posting:.2f} s "
          f"({messages / posting:.0f}/s); received {len(arrivals.at)}, missing {len(missing)}, "
          f"duplicates {arrivals.duplicates}")
    print(f"  201 -> event on B   p50 {pct(from_201, 50):6.2f} ms   p99 {pct(from_201, 99):6.2f} ms   "
          f"max {from_201[-1]:6.2f} ms")
    print(f"  POST -> event on B  p50 {pct(from_post, 50):6.2f} ms   p99 {pct(from_post, 99):6.2f} ms   "
          f"max {from_post[-1]:6.2f} ms")
    return not missing and not arrivals.duplicates


def pct(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1] if len(values) > 1 else values[0]


async def read_stream(port: int, user: User, arrivals: Arrivals, opened: asyncio.Event) -> None:
    """A minimal SSE client: one connection, chunked decoding, `id:` lines of `message` events."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET /messages/stream HTTP/1.1\r\nHost: bench\r\n"
                     f"Authorization: Bearer {user.token}\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"stream refused: {head[:200]!r}")
        buffer = b""
        while True:
            size = int((await reader.readline()).strip(), 16)
            if size == 0:
                return
            chunk = await reader.readexactly(size + 2)
            buffer += chunk[:-2]
            *blocks, buffer = buffer.split(b"\n\n")
            for block in blocks:
                if block.startswith(b"retry:"):
                    opened.set()
                elif b"\nevent: message\n" in block:
                    arrivals.record(int(block[4:block.index(b"\n")]))
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


class Server:
    """One `chatsvc serve` subprocess on free loopback ports."""

    def __init__(self, url: str, log: Path, settings: dict[str, str]) -> None:
        self.port, self.admin_port = free_port(), free_port()
        self.log = log
        self.env = {**os.environ, "DATABASE_URL": url, "CHATSVC_HOST": "127.0.0.1",
                    "CHATSVC_PORT": str(self.port), "CHATSVC_ADMIN_PORT": str(self.admin_port),
                    "CHATSVC_RATE": "0", "CHATSVC_AUTH_RATE": "0", "CHATSVC_ACCESS_LOG": "false",
                    "CHATSVC_LOG_LEVEL": "warning", "CHATSVC_DRAIN_DELAY": "0",
                    "CHATSVC_ARGON2_TIME_COST": "1", "CHATSVC_ARGON2_MEMORY_KIB": "64", **settings}
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        self._log = self.log.open("ab")
        self.process = subprocess.Popen([sys.executable, "-m", "chatsvc", "serve"], env=self.env,
                                        stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"chatsvc serve exited:\n{self.log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/check", timeout=1).status_code == 200:
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"chatsvc serve was not ready:\n{self.log.read_text()[-3000:]}")

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.asynccontextmanager
async def database() -> AsyncIterator[str]:
    """A fresh database: on DATABASE_URL's server, else in a private cluster."""
    if server := os.environ.get("DATABASE_URL"):
        name = f"chatsvc_fanout_{secrets.token_hex(4)}"
        admin = await asyncpg.connect(server)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        try:
            yield urlunsplit(urlsplit(server)._replace(path="/" + name))
        finally:
            admin = await asyncpg.connect(server)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await admin.close()
        return
    from chatsvc.devdb import PrivateCluster

    root = Path(tempfile.mkdtemp(prefix="chatsvc-fanout-pg-"))
    cluster = PrivateCluster(root)
    try:
        yield await asyncio.to_thread(cluster.start)
    finally:
        await asyncio.to_thread(cluster.stop)
        shutil.rmtree(root, ignore_errors=True)


async def server_version(url: str) -> str:
    connection = await asyncpg.connect(url)
    try:
        return await connection.fetchval("SHOW server_version")
    finally:
        await connection.close()


if __name__ == "__main__":
    sys.exit(main())
