"""Hostile bytes on every route (bad encodings, deep nesting, wrong types, odd queries) are 400, never 5xx."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest

from chatsvc.app import build_app
from chatsvc.config import Settings
from chatsvc.resources import Resources
from chatsvc.testing import User, assert_error
from tests.http_common import (
    JSON,
)

# --- hostile bytes ----------------------------------------------------------------------------

DEPTH = 100_000

GENERIC_HOSTILE = [
    pytest.param(b"[" * DEPTH + b"]" * DEPTH, id="deep-array"),
    pytest.param(b'{"a":' * DEPTH + b"1" + b"}" * DEPTH, id="deep-object"),
    pytest.param(b'{"recipient": 1, "content": ' + b"[" * DEPTH + b"]" * DEPTH + b"}",
                 id="deep-array-in-a-field"),
    pytest.param(b'{"username": "u", "password": "password1", "x": ' + b'{"a":' * DEPTH + b"1"
                 + b"}" * DEPTH + b"}", id="deep-object-in-an-ignored-field"),
    pytest.param(b"\xff\xfe\xfd", id="invalid-utf8"),
    pytest.param(b'{"username": "\xff\xfe", "password": "\xc3\x28password"}', id="invalid-utf8-in-strings"),
    pytest.param(b'{"recipient": 1, "content": {"type": "text", "text": "\xed\xa0\x80"}}',
                 id="encoded-surrogate"),
    pytest.param(b"\xef\xbb\xbf{}", id="byte-order-mark"),
    pytest.param(b"", id="empty"),
    pytest.param(b"   \n\t ", id="whitespace"),
    pytest.param(b"null", id="null"),
    pytest.param(b"[]", id="array"),
    pytest.param(b'[{"recipient": 1}]', id="array-of-objects"),
    pytest.param(b'"a string"', id="string"),
    pytest.param(b"12", id="number"),
    pytest.param(b"true", id="true"),
    pytest.param(str(10**400).encode(), id="huge-integer"),
    pytest.param(b"1e400", id="huge-float"),
    pytest.param(b"\x00", id="nul-byte"),
]

# Hostile values in the fields each route reads.
CREDENTIAL_VALUES = [
    pytest.param({"username": 10**400, "password": "password1"}, id="huge-integer-username"),
    pytest.param({"username": "u", "password": 10**400}, id="huge-integer-password"),
    pytest.param({"username": 1.5, "password": "password1"}, id="float-username"),
    pytest.param({"username": "a\u0000b", "password": "password1"}, id="nul-in-username"),
    pytest.param({"username": "\u0000", "password": "password1"}, id="only-nul-username"),
    pytest.param(b'{"username": "\\ud800", "password": "password1"}', id="lone-surrogate-username"),
    pytest.param(b'{"username": "x\\udfff", "password": "password1"}', id="lone-low-surrogate"),
    pytest.param(b'{"username": "ok-name", "password": "\\ud800\\ud800\\ud800"}',
                 id="lone-surrogate-password"),
    pytest.param({"username": None, "password": None}, id="nulls"),
]
MESSAGE_VALUES = [
    pytest.param({"recipient": 10**400, "content": {"type": "text", "text": "x"}},
                 id="huge-integer-recipient"),
    pytest.param({"recipient": 1.5, "content": {"type": "text", "text": "x"}}, id="float-recipient"),
    pytest.param({"recipient": 1.0, "content": {"type": "text", "text": "x"}},
                 id="integral-float-recipient"),
    pytest.param(b'{"recipient": 1e400, "content": {"type": "text", "text": "x"}}',
                 id="infinite-recipient"),
    pytest.param({"recipient": 1, "content": {"type": "text", "text": "a\u0000b"}}, id="nul-in-text"),
    pytest.param(b'{"recipient": 1, "content": {"type": "text", "text": "\\ud800"}}',
                 id="lone-surrogate-text"),
    pytest.param(b'{"recipient": 1, "content": {"type": "image", "url": "\\ud800"}}',
                 id="lone-surrogate-url"),
    pytest.param({"recipient": 1, "content": {"type": "image", "url": "u", "width": 10**400}},
                 id="huge-integer-width"),
    pytest.param({"recipient": 1, "content": {"type": "text\u0000", "text": "x"}}, id="nul-in-type"),
]
LISTING_VALUES = [
    pytest.param({"recipient": 10**400}, id="huge-integer-recipient"),
    pytest.param({"recipient": 1.5}, id="float-recipient"),
    pytest.param({"recipient": 1.0}, id="integral-float-recipient"),
    pytest.param(b'{"recipient": 1e400}', id="infinite-recipient"),
    pytest.param({"recipient": "a\u0000b"}, id="nul-in-recipient"),
    pytest.param(b'{"recipient": "\\ud800"}', id="lone-surrogate-recipient"),
    pytest.param({"recipient": 1, "start": 10**400}, id="huge-integer-start"),
    pytest.param({"recipient": 1, "limit": -(10**400)}, id="huge-negative-limit"),
]

ROUTES = [
    pytest.param("POST", "/users", id="POST-users"),
    pytest.param("POST", "/login", id="POST-login"),
    pytest.param("POST", "/messages", id="POST-messages"),
    pytest.param("GET", "/messages", id="GET-messages"),
]


@pytest.fixture
async def roomy_client(resources: Resources) -> AsyncIterator[httpx.AsyncClient]:
    """The app with a body limit large enough that 100 000-deep JSON reaches the decoder."""
    roomy = dataclasses.replace(resources, settings=resources.settings.replace(
        max_body_bytes=4 << 20))
    transport = httpx.ASGITransport(app=build_app(roomy))
    async with httpx.AsyncClient(transport=transport, base_url="http://chatsvc") as client:
        yield client


async def hostile_request(client: httpx.AsyncClient, user: User, method: str, path: str,
                          body: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else msgspec.json.encode(body)
    headers = {"Content-Type": JSON, **(user.auth if path == "/messages" else {})}
    return await client.request(method, path, content=content, headers=headers)


def assert_rejected_as_bad_input(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    assert_error(response, 400, {"invalid_json", "invalid_request"})


@pytest.mark.parametrize("body", GENERIC_HOSTILE)
@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_hostile_bodies_are_400_on_every_route(
    roomy_client: httpx.AsyncClient, alice: User, body: bytes, method: str, path: str
) -> None:
    response = await hostile_request(roomy_client, alice, method, path, body)

    assert_rejected_as_bad_input(response)


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_deep_nesting_within_the_default_limit_is_400(
    client: httpx.AsyncClient, settings: Settings, alice: User, method: str, path: str
) -> None:
    depth = settings.max_body_bytes // 2
    for body in (b"[" * depth + b"]" * depth, b'{"a":' * (depth // 3) + b"1" + b"}" * (depth // 3)):
        assert len(body) <= settings.max_body_bytes
        response = await hostile_request(client, alice, method, path, body)
        assert_rejected_as_bad_input(response)


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_deep_nesting_over_the_default_limit_is_never_5xx(
    client: httpx.AsyncClient, alice: User, method: str, path: str
) -> None:
    response = await hostile_request(client, alice, method, path, b"[" * DEPTH + b"]" * DEPTH)

    assert_error(response, 413, "payload_too_large")


@pytest.mark.parametrize("body", CREDENTIAL_VALUES)
@pytest.mark.parametrize("path", ["/users", "/login"])
async def test_hostile_credentials_are_400(
    client: httpx.AsyncClient, alice: User, body: Any, path: str
) -> None:
    assert_rejected_as_bad_input(await hostile_request(client, alice, "POST", path, body))


@pytest.mark.parametrize("body", MESSAGE_VALUES)
async def test_hostile_messages_are_400(client: httpx.AsyncClient, alice: User, body: Any) -> None:
    if isinstance(body, dict):
        # Only the placeholder 1 (an int, not 1.0) stands for a real recipient.
        if type(body["recipient"]) is int and body["recipient"] == 1:
            body = {**body, "recipient": alice.id}
    else:
        body = body.replace(b'"recipient": 1,', b'"recipient": %d,' % alice.id)

    assert_rejected_as_bad_input(await hostile_request(client, alice, "POST", "/messages", body))


@pytest.mark.parametrize("body", LISTING_VALUES)
async def test_hostile_listing_bodies_are_400(
    client: httpx.AsyncClient, alice: User, body: Any
) -> None:
    assert_rejected_as_bad_input(await hostile_request(client, alice, "GET", "/messages", body))


@pytest.mark.parametrize("query", [
    pytest.param({"recipient": str(10**400)}, id="huge-integer"),
    pytest.param({"recipient": "1.5"}, id="float"),
    pytest.param({"recipient": "a\x00b"}, id="nul"),
    pytest.param({"recipient": "1", "limit": "1e400"}, id="infinite-limit"),
    pytest.param({"recipient": "1", "start": "-0x10"}, id="hex-start"),
])
async def test_hostile_query_strings_are_400(
    client: httpx.AsyncClient, alice: User, query: dict[str, str]
) -> None:
    assert_rejected_as_bad_input(
        await client.get("/messages", params=query, headers=alice.auth))


@pytest.mark.parametrize("raw_query", [b"recipient=%ff%fe", b"recipient=%ed%a0%80", b"recipient=%00"])
async def test_undecodable_query_strings_are_400(
    client: httpx.AsyncClient, alice: User, raw_query: bytes
) -> None:
    url = httpx.URL("/messages", query=raw_query)
    assert_rejected_as_bad_input(await client.get(url, headers=alice.auth))
