"""Fan-out latency of `GET /messages/stream`: from a POST's 201 on process A to the event's arrival
on a stream held by process B, with N streams open on B.

Each of the N users holds one stream on B; one sender posts on A, to the N users in turn, from
`concurrency` connections at once. Latency is measured on one clock: the arrival of event `id`
minus the moment the 201 naming `id` was read. It can be a little negative: the event may arrive
before the 201 is read. Every event must arrive exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from dataclasses import dataclass, field

import httpx
import uvloop

from chatsvc.bench.data import server_version
from chatsvc.bench.options import Options, log
from chatsvc.bench.servers import BenchServer, fanout_server
from chatsvc.testing import DatabaseFactory, User, client_for, make_users

WARMUP = 50  # the first messages of each run, not counted: connections and statements warm up


@dataclass
class Latency:
    p50_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, values: list[float]) -> Latency:
        if len(values) < 2:
            return cls(*(values or [float("nan")]) * 3)
        cuts = statistics.quantiles(values, n=100, method="inclusive")
        return cls(cuts[49], cuts[98], max(values))


@dataclass
class FanoutRun:
    concurrency: int  # posters at once
    messages: int
    seconds: float  # posting them all
    received: int
    missing: int
    duplicates: int
    from_201: Latency
    from_post: Latency
    announce_window: float = 0.0  # the posting process's CHATSVC_STREAM_ANNOUNCE_WINDOW

    @property
    def ok(self) -> bool:
        return not self.missing and not self.duplicates


@dataclass
class FanoutResult:
    streams: int
    messages: int
    postgresql: str
    runs: list[FanoutRun] = field(default_factory=list)


def run_fanout(server_dsn: str, opts: Options) -> FanoutResult:
    """Every run of opts.fanout_concurrency on a fresh database of the bench cluster."""
    return uvloop.run(_fanout(server_dsn, opts))


async def _fanout(server_dsn: str, opts: Options) -> FanoutResult:
    databases = DatabaseFactory(server_dsn, prefix="bench_fanout")
    dsn = await databases.create(migrated=True)
    streams = opts.fanout_streams + 10
    # A posts, B holds the streams; A again announcing in batches, for the runs that measure it.
    servers = [fanout_server(dsn, name, streams) for name in ("fanout-a", "fanout-b")]
    batched = fanout_server(dsn, "fanout-a-batched", streams, opts.announce_window)
    try:
        for server in servers:
            await asyncio.to_thread(server.start)
        a, b = servers
        result = FanoutResult(opts.fanout_streams, opts.fanout_messages, await server_version(dsn))
        log(f"fan-out: {opts.fanout_streams} streams on B, {opts.fanout_messages} messages per run")
        sender, *recipients = await make_users(a, opts.fanout_streams + 1)
        for concurrency in opts.fanout_concurrency:
            await _measure(result, a, b, sender, recipients, opts.fanout_messages, concurrency)
        await asyncio.to_thread(a.stop)
        await asyncio.to_thread(batched.start)
        for concurrency in opts.fanout_concurrency:
            await _measure(result, batched, b, sender, recipients, opts.fanout_messages, concurrency,
                           opts.announce_window)
        return result
    finally:
        for server in (*servers, batched):
            await asyncio.to_thread(server.stop)
        await databases.drop_all()


async def _measure(
    result: FanoutResult, a: BenchServer, b: BenchServer, sender: User, recipients: list[User],
    messages: int, concurrency: int, announce_window: float = 0.0,
) -> None:
    run = await _run(a, b, sender, recipients, messages, concurrency)
    run.announce_window = announce_window
    result.runs.append(run)
    log(
        f"fan-out, {concurrency} posters, announce window {announce_window * 1000:g} ms: 201 -> event "
        f"p50 {run.from_201.p50_ms:.2f} ms, p99 {run.from_201.p99_ms:.2f} ms; "
        f"missing {run.missing}, duplicates {run.duplicates}"
    )


@dataclass
class _Arrivals:
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


async def _run(
    a: BenchServer, b: BenchServer, sender: User, recipients: list[User], messages: int, concurrency: int
) -> FanoutRun:
    arrivals = _Arrivals(expected=messages)
    ready = [asyncio.Event() for _ in recipients]
    readers = [
        asyncio.create_task(_read_stream(b.port, user, arrivals, opened))
        for user, opened in zip(recipients, ready, strict=True)
    ]
    answered: dict[int, float] = {}
    sent: dict[int, float] = {}
    try:
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in ready)), 60)
        turn = iter(range(messages))

        async def post(client: httpx.AsyncClient) -> None:
            for n in turn:
                recipient = recipients[n % len(recipients)]
                started = time.perf_counter()
                response = await client.post(
                    "/messages",
                    json={"recipient": recipient.id, "content": {"type": "text", "text": f"bench {n}"}},
                )
                done = time.perf_counter()
                response.raise_for_status()
                message_id = response.json()["id"]
                answered[message_id], sent[message_id] = done, started

        started = time.perf_counter()
        async with client_for(
            a, sender, timeout=30, limits=httpx.Limits(max_connections=concurrency)
        ) as client:
            await asyncio.gather(*(post(client) for _ in range(concurrency)))
        posting = time.perf_counter() - started
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(arrivals.complete.wait(), 15)
    finally:
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    counted = [i for i in sorted(answered)[WARMUP:] if i in arrivals.at]
    return FanoutRun(
        concurrency=concurrency,
        messages=messages,
        seconds=posting,
        received=len(arrivals.at),
        missing=sum(1 for i in answered if i not in arrivals.at),
        duplicates=arrivals.duplicates,
        from_201=Latency.of(sorted((arrivals.at[i] - answered[i]) * 1000 for i in counted)),
        from_post=Latency.of(sorted((arrivals.at[i] - sent[i]) * 1000 for i in counted)),
    )


async def _read_stream(port: int, user: User, arrivals: _Arrivals, opened: asyncio.Event) -> None:
    """A minimal SSE client: one connection, chunked decoding, `id:` lines of `message` events."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        request = (
            f"GET /messages/stream HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {user.token}\r\n\r\n"
        )
        writer.write(request.encode())
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
                    arrivals.record(int(block[4 : block.index(b"\n")]))
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
