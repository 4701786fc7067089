"""Strict framing against a real `chatsvc serve`, over raw sockets: no request smuggling, no h2c
unless asked for, the server's own refusals in the envelope, and a client that leaves is a 499."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import httpx
import pytest

from chatsvc.testing import NO_RATE_LIMITS, DatabaseFactory, ServerProcess, assert_error, serving
from tests.live.conftest import Launch
from tests.live.raw_http import HUNG, RawConnection, request_head

SETTINGS = {**NO_RATE_LIMITS, "CHATSVC_DRAIN_DELAY": "0"}
SMUGGLED = b"GET /check HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
H2C_UPGRADE = [("Host", "127.0.0.1"), ("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c"),
               ("HTTP2-Settings", "AAMAAABkAAQAAP__")]
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@pytest.fixture(scope="module")
async def server(databases: DatabaseFactory, tmp_path_factory: pytest.TempPathFactory
                 ) -> AsyncIterator[ServerProcess]:
    async with serving(databases, tmp_path_factory.mktemp("framing") / "serve.log", **SETTINGS) as server:
        yield server


async def exchange(server: ServerProcess, data: bytes) -> tuple[list, str | None]:
    """Every response the server sends for `data`, and how it closed the connection (None: open)."""
    responses = []
    async with RawConnection.open(server.port) as connection:
        await connection.send(data)
        while (response := await connection.read_response(timeout=HUNG)) is not None:
            responses.append(response)
            if connection.closed_by_peer or not await connection.receive(0.5):
                break
        closed = await connection.wait_closed(timeout=HUNG)
    return responses, closed


@pytest.mark.parametrize("transfer_encoding", ["chunked", "CHUNKED", "gzip, chunked"])
async def test_content_length_with_transfer_encoding_is_400_and_nothing_follows(
        server: ServerProcess, transfer_encoding: str) -> None:
    body = b"0\r\n\r\n" + SMUGGLED
    head = request_head("POST", "/users", [("Host", "127.0.0.1"), ("Content-Length", str(len(body))),
                                           ("Transfer-Encoding", transfer_encoding)])
    responses, closed = await exchange(server, head + body)
    assert len(responses) == 1, responses  # the smuggled GET /check was never served
    assert_error(responses[0].as_httpx(), 400 if transfer_encoding != "gzip, chunked" else 501,
                    "invalid_request" if transfer_encoding != "gzip, chunked" else "not_implemented")
    assert responses[0].headers["connection"] == "close"
    assert closed is not None


@pytest.mark.parametrize("length", ["abc", "-1", "1.0", "5, 6", "0x10"])
async def test_a_malformed_content_length_is_400_in_the_envelope_and_closes(
        server: ServerProcess, length: str) -> None:
    head = request_head("POST", "/users", [("Host", "127.0.0.1"), ("Content-Length", length)])
    responses, closed = await exchange(server, head + b"{}" + SMUGGLED)
    assert len(responses) == 1, responses
    assert_error(responses[0].as_httpx(), 400, "invalid_request")
    assert responses[0].headers["x-content-type-options"] == "nosniff"
    assert closed is not None


async def test_a_malformed_request_line_is_400_in_the_envelope(server: ServerProcess) -> None:
    responses, closed = await exchange(server, b"GET /check HTTP/1.1 extra\r\nHost: x\r\n\r\n")
    assert len(responses) == 1 and closed is not None
    assert_error(responses[0].as_httpx(), 400, "invalid_request")


async def test_h2c_is_off_by_default(server: ServerProcess) -> None:
    responses, _ = await exchange(server, request_head("GET", "/check", H2C_UPGRADE))
    assert [(r.status, r.body) for r in responses] == [(200, b"ok")]  # answered in HTTP/1.1, no 101
    responses, closed = await exchange(server, H2_PREFACE)
    assert len(responses) == 1 and closed is not None
    assert_error(responses[0].as_httpx(), 400, "invalid_request")


async def test_h2c_is_served_when_turned_on(launch: Launch) -> None:
    h2c_server = await launch(**SETTINGS, CHATSVC_H2C="true")
    async with RawConnection.open(h2c_server.port) as connection:
        await connection.send(request_head("GET", "/check", H2C_UPGRADE))
        while b"\r\n\r\n" not in connection.buffer:
            assert await connection.receive(5), bytes(connection.buffer)
    assert bytes(connection.buffer).startswith(b"HTTP/1.1 101 "), bytes(connection.buffer)


async def test_a_client_that_leaves_while_sending_its_body_is_a_499_not_a_500(
        server: ServerProcess) -> None:
    head = request_head("POST", "/users", [("Host", "127.0.0.1"), ("Content-Length", "100")])
    async with RawConnection.open(server.port) as connection:
        await connection.send(head + b'{"username": ')
        await asyncio.sleep(0.2)
    async with httpx.AsyncClient(timeout=5) as client:
        for _ in range(50):  # the server notices the close within moments
            metrics = (await client.get(server.admin_url + "/metrics")).text
            if 'status="499"' in metrics:
                break
            await asyncio.sleep(0.1)
    assert re.search(r'chatsvc_http_requests_total\{[^}]*route="/users"[^}]*status="499"\} 1\.0', metrics), (
        metrics)
    assert not re.search(r'route="/users"[^}]*status="500"', metrics) and "Traceback" not in server.log()
