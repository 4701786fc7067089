"""Streams cannot be monopolised: a per-address cap, proven with streams held open and never read,
which are cut once their buffer stays full and then free their place."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import httpx

from chatsvc.testing import User, assert_error, make_users
from tests.live.conftest import Launch
from tests.live.streams import BIG_TEXT_CHARS, PAIR_SETTINGS, metric, send

PER_ADDRESS = 3
HOARDER = "203.0.113.7"  # one machine holding streams of many accounts
SETTINGS = {**PAIR_SETTINGS, "CHATSVC_TRUSTED_PROXIES": "127.0.0.1",
            "CHATSVC_STREAM_MAX_PER_ADDRESS": str(PER_ADDRESS)}


@contextlib.asynccontextmanager
async def unread_stream(port: int, user: User, address: str) -> AsyncIterator[socket.socket]:
    """A stream whose client reads its headers and then nothing more, with a tiny receive window."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, (f"GET /messages/stream HTTP/1.1\r\nHost: chatsvc\r\n"
                                       f"X-Forwarded-For: {address}\r\n"
                                       f"Authorization: Bearer {user.token}\r\n\r\n").encode())
        head = await asyncio.wait_for(loop.sock_recv(sock, 4096), 10)
        assert head.startswith(b"HTTP/1.1 200"), head
        yield sock
    finally:
        sock.close()


async def one_more(base_url: str, user: User, address: str) -> int:
    """The status of one more stream from `address` (closed again at once when it opens)."""
    headers = {**user.auth, "X-Forwarded-For": address}
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client, \
            client.stream("GET", "/messages/stream", headers=headers) as response:
        if response.status_code != 200:
            await response.aread()
            assert "per client address" in assert_error(response, 429, "rate_limited")
        return response.status_code


async def test_unread_streams_are_capped_per_address_then_cut_and_their_place_freed(launch: Launch) -> None:
    server = await launch(**SETTINGS)
    users = await make_users(server, PER_ADDRESS + 2)
    hoarded, spare, elsewhere = users[:PER_ADDRESS], users[PER_ADDRESS], users[PER_ADDRESS + 1]
    async with contextlib.AsyncExitStack() as streams:
        for user in hoarded:
            await streams.enter_async_context(unread_stream(server.port, user, HOARDER))
        assert await one_more(server.url, spare, HOARDER) == 429
        # Another client still gets real-time delivery, even from the same /64 as nobody.
        assert await one_more(server.url, elsewhere, "203.0.113.8") == 200
        assert await one_more(server.url, elsewhere, "2001:db8:0:1::1") == 200
        # The stream that never reads is cut once its buffer stays full, and its place is free.
        cut_before = await metric(server, 'chatsvc_streams_ended_total{reason="slow"}')
        text = "x" * BIG_TEXT_CHARS
        for _ in range(200):
            if await metric(server, 'chatsvc_streams_ended_total{reason="slow"}') > cut_before:
                break
            await send(server, hoarded[0], hoarded[0], text)
        else:
            raise AssertionError("a stream held without reading was never cut")
        assert await one_more(server.url, spare, HOARDER) == 200


async def test_an_ipv6_client_is_its_slash_64(launch: Launch) -> None:
    server = await launch(**SETTINGS)
    users = await make_users(server, PER_ADDRESS + 2)
    async with contextlib.AsyncExitStack() as streams:
        for n, user in enumerate(users[:PER_ADDRESS]):
            await streams.enter_async_context(unread_stream(server.port, user, f"2001:db8:5:6::{n + 1}"))
        # Any other address of the same /64 is the same client; the next /64 is another.
        assert await one_more(server.url, users[PER_ADDRESS], "2001:db8:5:6:ffff:1:2:3") == 429
        assert await one_more(server.url, users[PER_ADDRESS + 1], "2001:db8:5:7::1") == 200
