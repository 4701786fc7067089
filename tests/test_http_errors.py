"""The error envelope every route shares: unknown routes, wrong methods, bad JSON, internal errors, and a
401 closing the connection."""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx
import msgspec
import pytest

from chatsvc.app import build_app
from chatsvc.resources import Resources
from chatsvc.testing import User, assert_error
from tests.http_common import (
    JSON,
    every_route_that_reads_a_body,
)

# --- the error envelope -----------------------------------------------------------------------

@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/nope"),
    ("POST", "/nope"),
    ("GET", "/messages/stream/extra"),
    ("GET", "/users/1"),
    ("DELETE", "/definitely/not/here/"),
    ("GET", "/%00"),
])
async def test_an_unknown_route_is_404_not_found(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    assert_error(await client.request(method, path), 404, "not_found")


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("DELETE", "/messages", {"GET", "POST"}),
    ("PUT", "/messages", {"GET", "POST"}),
    ("PATCH", "/messages/", {"GET", "POST"}),
    ("PUT", "/users", {"GET", "POST"}),
    ("DELETE", "/users", {"GET", "POST"}),
    ("POST", "/users/me", {"GET"}),
    ("GET", "/users/me/password", {"PUT"}),
    ("DELETE", "/conversations", {"GET"}),
    ("POST", "/conversations/1/read", {"PUT"}),
    ("POST", "/sessions/x", {"DELETE"}),
    ("GET", "/logout/all", {"POST"}),
    ("GET", "/login", {"POST"}),
    ("GET", "/logout", {"POST"}),
    ("POST", "/check", {"GET"}),
    ("DELETE", "/", {"GET"}),
])
async def test_a_wrong_method_is_405_with_an_allow_header(
    client: httpx.AsyncClient, method: str, path: str, allowed: set[str]
) -> None:
    response = await client.request(method, path)

    assert_error(response, 405, "method_not_allowed")
    allow = {part.strip() for part in response.headers["allow"].split(",")}
    assert allowed <= allow, allow
    assert method not in allow


@pytest.mark.parametrize("body", [
    pytest.param(b"{not json", id="garbage"),
    pytest.param(b'{"username": "a", "password": ', id="truncated"),
    pytest.param(b"{'username': 'single quotes'}", id="single-quotes"),
    pytest.param(b'{"a": 1,}', id="trailing-comma"),
    pytest.param(b'{"a": NaN}', id="nan"),
])
@every_route_that_reads_a_body
async def test_a_body_that_is_not_json_is_400_invalid_json(
    client: httpx.AsyncClient, alice: User, body: bytes, method: str, path: str,
    authenticated: bool
) -> None:
    headers = {"Content-Type": JSON, **(alice.auth if authenticated else {})}

    response = await client.request(method, path, content=body, headers=headers)

    assert_error(response, 400, "invalid_json")


async def test_trailing_data_after_a_valid_document_is_400_invalid_json(
    client: httpx.AsyncClient, db: Any, alice: User
) -> None:
    body = msgspec.json.encode({"recipient": alice.id, "content": {"type": "text", "text": "x"}})

    response = await client.post("/messages", content=body + b' {"again": 1}', headers=alice.auth)

    assert_error(response, 400, "invalid_json")
    assert await db.fetchval("SELECT count(*) FROM messages WHERE sender_id = $1", alice.id) == 0


async def test_an_internal_error_is_500_internal_in_the_envelope_with_a_request_id(
    resources: Resources, alice: User
) -> None:
    """An unexpected failure (here the pool itself breaks) leaks nothing and keeps the request id."""

    class BrokenPool:
        def __getattr__(self, name: str) -> Any:
            raise RuntimeError("secret internal detail")

    broken = dataclasses.replace(resources, pool=BrokenPool())
    transport = httpx.ASGITransport(app=build_app(broken), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://chatsvc") as client:
        response = await client.get("/messages", params={"recipient": alice.id},
                                    headers={**alice.auth, "X-Request-ID": "trace-500"})

    assert_error(response, 500, "internal")
    assert response.json()["error"]["message"] == "internal server error"
    assert "secret internal detail" not in response.text
    assert response.headers.get("x-request-id") == "trace-500"


# --- 401 closes the connection ----------------------------------------------------------------

@pytest.mark.parametrize(("method", "path", "headers", "body"), [
    pytest.param("POST", "/messages", {}, b'{"recipient": 1, "content": {"type": "text", "text": "x"}}',
                 id="post-messages-no-token"),
    pytest.param("GET", "/messages", {"Authorization": "Bearer nope"}, None,
                 id="get-messages-bad-token"),
    pytest.param("POST", "/logout", {}, None, id="logout-no-token"),
    pytest.param("POST", "/login", {}, b'{"username": "nobody-here", "password": "wrong-password"}',
                 id="login-wrong-credentials"),
])
async def test_a_401_closes_the_connection(
    client: httpx.AsyncClient, method: str, path: str, headers: dict, body: bytes | None
) -> None:
    response = await client.request(method, path, headers=headers, content=body)

    assert_error(response, 401, "unauthorized")
    assert response.headers["connection"] == "close"
