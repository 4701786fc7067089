"""What the live stream tests share: their server settings, an SSE client and small requests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx

from chatsvc.testing import (
    NO_RATE_LIMITS,
    QUIET_LOGS,
    ServerProcess,
    User,
)

HEARTBEAT = 0.3
# Streams must outlive it: it bounds a request body's arrival, not a response's length.
READ_TIMEOUT = 1
BUFFER = 4
BIG_TEXT_CHARS = 200_000
COMMON = {
    **NO_RATE_LIMITS,
    **QUIET_LOGS,
    "CHATSVC_DRAIN_DELAY": "0",
    "CHATSVC_READ_TIMEOUT": str(READ_TIMEOUT),
}
PAIR_SETTINGS = {
    **COMMON,
    "CHATSVC_STREAM_HEARTBEAT": str(HEARTBEAT),
    "CHATSVC_STREAM_BUFFER": str(BUFFER),
    "CHATSVC_MAX_TEXT_CHARS": str(BIG_TEXT_CHARS),
    "CHATSVC_MAX_BODY_BYTES": str(2 * BIG_TEXT_CHARS),
}
# Long enough for any event that is coming to have come.
QUIET = 0.6


# ------------------------------------------------------------------ an SSE client


@dataclass
class Block:
    """One SSE block: its fields (`id`, `event`, `data`, `retry`) and its comment lines."""

    fields: dict[str, str] = field(default_factory=dict)
    comments: list[str] = field(default_factory=list)

    @property
    def message_id(self) -> int | None:
        return int(self.fields["id"]) if self.fields.get("event") == "message" else None

    def json(self) -> object:
        return json.loads(self.fields["data"])


def parse_blocks(data: bytes) -> tuple[list[Block], bytes]:
    """The complete blocks in `data`, and what is left after the last one."""
    *complete, rest = data.split(b"\n\n")
    blocks = []
    for raw in complete:
        block = Block()
        for line in raw.decode().split("\n"):
            if line.startswith(":"):
                block.comments.append(line[1:].strip())
            else:
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                block.fields[name] = block.fields[name] + "\n" + value if name in block.fields else value
        blocks.append(block)
    return blocks, rest


class EventReader:
    """Blocks of one open stream, in arrival order.

    A task reads the response into a queue: a timeout must never cancel the read itself, which
    would close httpx's byte iterator and with it the stream.
    """

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._blocks: asyncio.Queue[Block | None] = asyncio.Queue()
        self._pump = asyncio.create_task(self._read())
        self.ended = False

    async def _read(self) -> None:
        rest = b""
        try:
            async for chunk in self.response.aiter_raw():
                blocks, rest = parse_blocks(rest + chunk)
                for block in blocks:
                    self._blocks.put_nowait(block)
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.StreamClosed):
            pass
        finally:
            self._blocks.put_nowait(None)

    async def close(self) -> None:
        self._pump.cancel()
        await asyncio.gather(self._pump, return_exceptions=True)

    async def next(self, timeout: float) -> Block | None:
        """The next block; None at the end of the stream; TimeoutError if none comes in time."""
        if self.ended:
            return None
        async with asyncio.timeout(timeout):
            block = await self._blocks.get()
        self.ended = block is None
        return block

    async def messages(self, count: int, timeout: float = 10) -> list[Block]:
        """The next `count` message events, skipping comments."""
        found: list[Block] = []
        deadline = time.monotonic() + timeout
        while len(found) < count:
            block = await self.next(max(0.01, deadline - time.monotonic()))
            assert block is not None, f"the stream ended after {[b.message_id for b in found]}"
            if block.message_id is not None:
                found.append(block)
        return found

    async def quiet(self, seconds: float = QUIET) -> list[Block]:
        """Everything but comments that arrives within `seconds`: none, when all is well."""
        seen: list[Block] = []
        deadline = time.monotonic() + seconds
        with contextlib.suppress(TimeoutError):
            while (left := deadline - time.monotonic()) > 0:
                block = await self.next(left)
                if block is None:
                    break
                if block.fields:
                    seen.append(block)
        return seen


@contextlib.asynccontextmanager
async def open_stream(server: ServerProcess, user: User, *, last_event_id: int | None = None,
                      since: int | None = None) -> AsyncIterator[EventReader]:
    """A stream subscribed by the time it is yielded (its preamble has arrived)."""
    headers = dict(user.auth)
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    params = {} if since is None else {"since": since}
    async with httpx.AsyncClient(base_url=server.url, timeout=httpx.Timeout(10, read=None)) as client, \
            client.stream("GET", "/messages/stream", headers=headers, params=params) as response:
        assert response.status_code == 200, (await response.aread()).decode()
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-accel-buffering"] == "no"
        reader = EventReader(response)
        try:
            preamble = await reader.next(10)
            assert preamble is not None and preamble.fields == {"retry": "1000"}, preamble
            yield reader
        finally:
            await reader.close()


async def send(server: ServerProcess, sender: User, recipient: User, text: str) -> int:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        response = await client.post("/messages", headers=sender.auth, json={
            "recipient": recipient.id, "content": {"type": "text", "text": text}})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def ids(blocks: list[Block]) -> list[int]:
    return [block.message_id for block in blocks if block.message_id is not None]


async def metric(server: ServerProcess, name: str) -> float:
    """A sample of the server's Prometheus text (0 when absent)."""
    async with httpx.AsyncClient(timeout=5) as client:
        text = (await client.get(server.admin_url + "/metrics")).text
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0
