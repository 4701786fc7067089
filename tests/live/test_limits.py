"""Bounds on untrusted bytes, against a real `chatsvc serve` process, over raw sockets where needed
(tests/live/raw_http.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from chatsvc.testing import (
    NO_RATE_LIMITS,
    DatabaseFactory,
    ServerProcess,
    User,
    assert_error,
    make_users,
    serving,
)
from tests.live.raw_http import HUNG, RawConnection, request_head

KEEP_ALIVE_TIMEOUT = 1
READ_TIMEOUT = 2
MAX_BODY_BYTES = 1024
MAX_HEADER_BYTES = 4096
MAX_HEADERS = 20
LIMITS = {
    "CHATSVC_KEEP_ALIVE_TIMEOUT": str(KEEP_ALIVE_TIMEOUT),
    "CHATSVC_READ_TIMEOUT": str(READ_TIMEOUT),
    "CHATSVC_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
    "CHATSVC_MAX_HEADER_BYTES": str(MAX_HEADER_BYTES),
    "CHATSVC_MAX_HEADERS": str(MAX_HEADERS),
    **NO_RATE_LIMITS,
    # Teardown: no reason to wait out the default drain delay.
    "CHATSVC_DRAIN_DELAY": "0",
    "CHATSVC_SHUTDOWN_TIMEOUT": "2",
}
TEN_MB = 10 * 1024 * 1024
# One byte this often: far slower than any real client.
TRICKLE_INTERVAL = 0.5


async def assert_healthy(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as client:
        response = await client.get("/check")
    assert (response.status_code, response.text) == (200, "ok"), response.text + server.log()[-3000:]


@pytest.fixture(scope="module")
async def server(databases: DatabaseFactory, tmp_path_factory: pytest.TempPathFactory
                 ) -> AsyncIterator[ServerProcess]:
    async with serving(databases, tmp_path_factory.mktemp("limits") / "serve.log", **LIMITS) as server:
        yield server


@pytest.fixture(scope="module")
async def user(server: ServerProcess) -> User:
    (user,) = await make_users(server, 1)
    return user


def message_headers(user: User, *extra: tuple[str, str]) -> list[tuple[str, str]]:
    return [("Host", "127.0.0.1"), ("Authorization", f"Bearer {user.token}"),
            ("Content-Type", "application/json"), *extra]


async def test_headers_sent_one_byte_at_a_time_are_cut_off(server: ServerProcess) -> None:
    request = request_head("GET", "/check", [("Host", "127.0.0.1"), ("User-Agent", "slowloris")])
    async with RawConnection.open(server.port) as connection:
        started = time.monotonic()
        sent = 0
        cut_off = False
        # Bounded: one round per byte, so a server that never cuts us off costs len(request) rounds.
        for byte in request:
            if not await connection.send(bytes([byte])) or await connection.receive(TRICKLE_INTERVAL) == b"":
                cut_off = True
                break
            sent += 1
        elapsed = time.monotonic() - started
    print(f"slow headers: cut off ({connection.closed_by_peer or 'send failed'}) after {elapsed:.2f} s, "
          f"{sent} of {len(request)} bytes sent")
    assert cut_off and sent < len(request), f"the server let {sent} bytes trickle in over {elapsed:.1f} s"
    assert not connection.buffer.startswith(b"HTTP/1.1 2"), bytes(connection.buffer)
    await assert_healthy(server)


async def test_a_body_sent_one_byte_at_a_time_gets_408_and_the_connection_closes(
        server: ServerProcess, user: User) -> None:
    head = request_head("POST", "/messages", message_headers(user, ("Content-Length", "1000")))
    async with RawConnection.open(server.port) as connection:
        assert await connection.send(head)
        started = time.monotonic()
        # Bounded: 408 is due after READ_TIMEOUT; give up well after that instead of sending 1000 bytes.
        for _ in range(int(4 * READ_TIMEOUT / TRICKLE_INTERVAL)):
            if not await connection.send(b"x") or await connection.receive(TRICKLE_INTERVAL) is not None:
                break
        response = await connection.read_response(timeout=READ_TIMEOUT)
        elapsed = time.monotonic() - started
        closed = await connection.wait_closed(timeout=HUNG)
    print(f"slow body: {response and response.status} after {elapsed:.2f} s, closed: {closed}")
    assert response is not None, f"closed without an answer after {elapsed:.1f} s"
    assert_error(response.as_httpx(), 408, "request_timeout")
    assert response.headers.get("connection", "").lower() == "close", response
    assert closed is not None, "the connection stayed open after the 408"
    await assert_healthy(server)


async def test_a_chunked_upload_over_the_limit_gets_413_and_is_cut_off(
        server: ServerProcess, user: User) -> None:
    head = request_head("POST", "/messages",
                        message_headers(user, ("Transfer-Encoding", "chunked")))
    piece = 64 * 1024
    frame = f"{piece:x}\r\n".encode() + b"a" * piece + b"\r\n"
    sent = 0

    async def upload(connection: RawConnection) -> None:
        nonlocal sent
        if not await connection.send(head):
            return
        while sent < TEN_MB:
            if not await connection.send(frame):
                return  # the server closed while we were still sending: expected
            sent += piece
        await connection.send(b"0\r\n\r\n")

    # A small send buffer, so what we count as sent is close to what reached the server's kernel.
    async with RawConnection.open(server.port, send_buffer=piece) as connection:
        uploading = asyncio.create_task(upload(connection))
        try:
            response = await connection.read_response(timeout=HUNG)
            closed = await connection.wait_closed(timeout=HUNG)
            assert response is not None, "closed without a readable 413"
            assert_error(response.as_httpx(), 413, "payload_too_large")
            assert response.headers.get("connection", "").lower() == "close", response
            assert closed is not None, f"the connection stayed open after the 413 ({sent} bytes sent)"
            await asyncio.wait_for(uploading, timeout=5)
        finally:
            uploading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await uploading
    print(f"chunked 10 MB: {response.status}, {sent} bytes accepted, closed: {closed}")
    assert sent < TEN_MB, "the server read the whole 10 MB body before refusing it"
    await assert_healthy(server)


@pytest.mark.parametrize("token", ["valid", "invalid"])
async def test_an_early_answer_closes_even_when_much_body_is_already_buffered(
        server: ServerProcess, user: User, token: str) -> None:
    """Answered before the body is read (413, 401), with many chunks already sent: closed.

    Small chunks sent up front arrive as many body events before the handler reads any: the
    server must still close the connection after its answer, as docs/API.md's Conventions promise.
    """
    headers = message_headers(user, ("Transfer-Encoding", "chunked"))
    if token == "invalid":
        headers = [(n, "Bearer not-a-session-token" if n == "Authorization" else v) for n, v in headers]
    body = (b"64\r\n" + b"a" * 100 + b"\r\n") * 200  # 20 KB in 100-byte chunks, no last chunk
    async with RawConnection.open(server.port) as connection:
        assert await connection.send(request_head("POST", "/messages", headers) + body)
        response = await connection.read_response(timeout=HUNG)
        closed = await connection.wait_closed(timeout=HUNG)
    assert response is not None, "closed without an answer"
    if token == "valid":
        assert_error(response.as_httpx(), 413, "payload_too_large")
    else:
        assert_error(response.as_httpx(), 401, "unauthorized")
    assert response.headers.get("connection", "").lower() == "close", response
    assert closed is not None, f"answered {response.status} but never closed the connection"
    await assert_healthy(server)


async def test_a_declared_content_length_over_the_limit_gets_413_before_any_body(
        server: ServerProcess, user: User) -> None:
    head = request_head("POST", "/messages", message_headers(user, ("Content-Length", str(TEN_MB))))
    async with RawConnection.open(server.port) as connection:
        assert await connection.send(head)
        response = await connection.read_response(timeout=HUNG)
        closed = await connection.wait_closed(timeout=HUNG)
    assert response is not None, "closed without an answer"
    assert_error(response.as_httpx(), 413, "payload_too_large")
    assert response.headers.get("connection", "").lower() == "close", response
    assert closed == "eof", closed
    await assert_healthy(server)


def padded_head(total: int) -> bytes:
    """A GET /check whose request line and headers take exactly `total` bytes."""
    def with_pad(pad: int) -> bytes:
        return request_head("GET", "/check", [("Host", "127.0.0.1"), ("Connection", "close"),
                                              ("X-Pad", "p" * pad)])

    head = with_pad(total - len(with_pad(0)))
    assert len(head) == total
    return head


async def test_headers_just_under_the_byte_limit_are_served(server: ServerProcess) -> None:
    async with RawConnection.open(server.port) as connection:
        assert await connection.send(padded_head(MAX_HEADER_BYTES - 96))
        response = await connection.read_response(timeout=HUNG)
    assert response is not None
    assert (response.status, response.body) == (200, b"ok"), response
    await assert_healthy(server)


@pytest.mark.parametrize("writes", [1, 2], ids=["in-one-write", "in-two-writes"])
async def test_headers_over_the_byte_limit_are_refused(server: ServerProcess, writes: int) -> None:
    head = padded_head(MAX_HEADER_BYTES + 2000)
    async with RawConnection.open(server.port) as connection:
        if writes == 1:
            await connection.send(head)
        else:
            # The first part alone is over the limit and still incomplete.
            await connection.send(head[:-100])
            await asyncio.sleep(0.1)
            await connection.send(head[-100:])
        response = await connection.read_response(timeout=HUNG)
        closed = await connection.wait_closed(timeout=HUNG)
    # 431 in the envelope (the server's own answer, chatsvc.framing), or, when the head arrived in
    # one read and the app measured it, the middleware's 431; or just a close.
    assert response is None or response.status == 431, (
        f"{len(head)} bytes of headers (limit {MAX_HEADER_BYTES}) were answered {response}")
    if response is not None:
        assert_error(response.as_httpx(), 431, "headers_too_large")
    assert closed is not None
    await assert_healthy(server)


def counted_headers(count: int) -> list[tuple[str, str]]:
    """`count` request headers in all: Host and Connection are two of them."""
    return [("Host", "127.0.0.1"), ("Connection", "close"),
            *((f"X-Filler-{n}", "v") for n in range(count - 2))]


async def test_exactly_the_maximum_number_of_headers_is_served(server: ServerProcess) -> None:
    async with RawConnection.open(server.port) as connection:
        assert await connection.send(request_head("GET", "/check", counted_headers(MAX_HEADERS)))
        response = await connection.read_response(timeout=HUNG)
    assert response is not None
    assert (response.status, response.body) == (200, b"ok"), response
    await assert_healthy(server)


async def test_one_header_too_many_is_431_with_the_envelope(server: ServerProcess) -> None:
    async with RawConnection.open(server.port) as connection:
        assert await connection.send(request_head("GET", "/check", counted_headers(MAX_HEADERS + 1)))
        response = await connection.read_response(timeout=HUNG)
        closed = await connection.wait_closed(timeout=HUNG)
    assert response is not None
    assert_error(response.as_httpx(), 431, "headers_too_large")
    assert response.headers.get("connection", "").lower() == "close", response
    assert closed is not None
    await assert_healthy(server)
