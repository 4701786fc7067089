"""The body limit, CHATSVC_MAX_BODY_BYTES: over it is 413 and closes the connection, at it is served."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import msgspec
import pytest

from chatsvc.config import Settings
from chatsvc.testing import User, assert_error
from tests.http_common import (
    JSON,
    every_route_that_reads_a_body,
)

# --- body limits ------------------------------------------------------------------------------

def padded_message(recipient: int, size: int) -> bytes:
    """A valid message body padded with JSON whitespace to exactly `size` bytes."""
    body = msgspec.json.encode({"recipient": recipient, "content": {"type": "text", "text": "x"}})
    assert len(body) <= size
    return body[:-1] + b" " * (size - len(body)) + b"}"


async def chunked(body: bytes, chunk_size: int = 4096) -> AsyncIterator[bytes]:
    for offset in range(0, len(body), chunk_size):
        yield body[offset:offset + chunk_size]


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
@every_route_that_reads_a_body
async def test_a_body_over_the_limit_is_413_and_closes_the_connection(
    client: httpx.AsyncClient, settings: Settings, alice: User, streamed: bool, method: str,
    path: str, authenticated: bool
) -> None:
    body = padded_message(alice.id, settings.max_body_bytes + 1)
    headers = {"Content-Type": JSON, **(alice.auth if authenticated else {})}

    response = await client.request(method, path, content=chunked(body) if streamed else body,
                                    headers=headers)

    assert ("content-length" in response.request.headers) is not streamed
    assert_error(response, 413, "payload_too_large")
    assert response.headers["connection"] == "close"


async def test_a_much_larger_streamed_body_is_refused_without_reading_it_all(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        while sent < 100 * settings.max_body_bytes:
            sent += 65536
            yield b" " * 65536

    response = await client.post("/users", content=endless())

    assert_error(response, 413, "payload_too_large")
    assert sent < 100 * settings.max_body_bytes


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
async def test_a_body_of_exactly_the_limit_is_accepted(
    client: httpx.AsyncClient, settings: Settings, alice: User, streamed: bool
) -> None:
    body = padded_message(alice.id, settings.max_body_bytes)
    assert len(body) == settings.max_body_bytes

    response = await client.post("/messages", content=chunked(body) if streamed else body,
                                 headers={**alice.auth, "Content-Type": JSON})

    assert response.status_code == 201, response.text


async def test_a_body_of_exactly_the_limit_is_not_413_on_sign_up(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    response = await client.post("/users", content=b"[" + b" " * (settings.max_body_bytes - 2) + b"]")

    assert_error(response, 400, "invalid_request")
