"""HTTP behaviour every route shares: the error envelope, request ids, body limits, CORS, hostile input."""

from __future__ import annotations

import dataclasses
import re
import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest

from chatsvc.app import build_app
from chatsvc.config import Settings
from chatsvc.resources import Resources
from chatsvc.testing import User, assert_error, media_type

GENERATED_ID = re.compile(r"^[0-9a-f]{32}$")
JSON = "application/json"


def header_list(response: httpx.Response, name: str) -> set[str]:
    return {part.strip().lower() for part in response.headers.get(name, "").split(",") if part.strip()}


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


# Every route that reads a request body, and whether it needs a token.
every_route_that_reads_a_body = pytest.mark.parametrize(("method", "path", "authenticated"), [
    ("POST", "/users", False),
    ("POST", "/login", False),
    ("POST", "/messages", True),
    ("GET", "/messages", True),
    ("PUT", "/conversations/1/read", True),
    ("PUT", "/users/me/password", True),
])


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


# --- X-Request-ID -----------------------------------------------------------------------------

REQUESTS = [
    pytest.param("GET", "/check", None, 200, id="check-200"),
    pytest.param("GET", "/", None, 200, id="root-200"),
    pytest.param("GET", "/nope", None, 404, id="404"),
    pytest.param("DELETE", "/messages", None, 405, id="405"),
    pytest.param("GET", "/messages", None, 401, id="401"),
    pytest.param("POST", "/users", b"{", 400, id="400"),
    pytest.param("POST", "/users", b" " * 70_000, 413, id="413"),
]


@pytest.mark.parametrize(("method", "path", "body", "status"), REQUESTS)
async def test_a_sane_request_id_is_echoed_on_every_response(
    client: httpx.AsyncClient, method: str, path: str, body: bytes | None, status: int
) -> None:
    request_id = f"req-{secrets.token_hex(4)}:/=+_.~!"

    response = await client.request(method, path, content=body, headers={"X-Request-ID": request_id})

    assert response.status_code == status
    assert response.headers.get_list("x-request-id") == [request_id]


@pytest.mark.parametrize(("method", "path", "body", "status"), REQUESTS)
async def test_a_request_id_is_generated_when_absent(
    client: httpx.AsyncClient, method: str, path: str, body: bytes | None, status: int
) -> None:
    first = await client.request(method, path, content=body)
    second = await client.request(method, path, content=body)

    assert first.status_code == status
    assert GENERATED_ID.match(first.headers["x-request-id"]), first.headers["x-request-id"]
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


async def test_a_request_id_of_128_characters_is_echoed(client: httpx.AsyncClient) -> None:
    request_id = "r" * 128

    response = await client.get("/check", headers={"X-Request-ID": request_id})

    assert response.headers["x-request-id"] == request_id


@pytest.mark.parametrize("request_id", [
    pytest.param(b"r" * 129, id="129-chars"),
    pytest.param(b"x" * 10_000, id="10000-chars"),
    pytest.param(b"", id="empty"),
    pytest.param(b"has space", id="space"),
    pytest.param(b"tab\tinside", id="tab"),
    pytest.param(b"del\x7f", id="del"),
    pytest.param(b"nul\x00", id="nul"),
    pytest.param("caf\u00e9".encode(), id="non-ascii-utf8"),
    pytest.param(b"\xff\xfe", id="invalid-utf8"),
    pytest.param(b"abc\n", id="trailing-newline"),
    pytest.param(b"abc\r\nSet-Cookie: x=1", id="crlf-injection"),
])
@pytest.mark.parametrize("path", ["/check", "/nope"])
async def test_an_insane_request_id_is_replaced(
    client: httpx.AsyncClient, request_id: bytes, path: str
) -> None:
    response = await client.get(path, headers={"X-Request-ID": request_id})

    assert response.headers.get_list("x-request-id") != [request_id.decode("latin-1")]
    assert GENERATED_ID.match(response.headers["x-request-id"]), response.headers["x-request-id"]
    assert "set-cookie" not in response.headers


# --- trailing slashes -------------------------------------------------------------------------

async def test_post_users_with_a_trailing_slash_signs_up(client: httpx.AsyncClient) -> None:
    username = f"slash-{secrets.token_hex(4)}"

    created = await client.post("/users/", json={"username": username, "password": "password-1"})
    login = await client.post("/login/", json={"username": username, "password": "password-1"})

    assert created.status_code == 201, created.text
    assert login.status_code == 200, login.text
    assert login.json()["id"] == created.json()["id"]


async def test_messages_with_a_trailing_slash_send_and_list(
    client: httpx.AsyncClient, alice: User, bob: User
) -> None:
    sent = await client.post("/messages/", headers=alice.auth,
                             json={"recipient": bob.id, "content": {"type": "text", "text": "/"}})
    listed = await client.get("/messages/", params={"recipient": bob.id}, headers=bob.auth)

    assert sent.status_code == 201, sent.text
    assert listed.status_code == 200, listed.text
    assert [m["id"] for m in listed.json()["messages"]] == [sent.json()["id"]]


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/check/"), ("POST", "/users/"), ("POST", "/messages/"), ("GET", "/messages/"),
    ("POST", "/logout/"),
])
async def test_a_trailing_slash_is_never_a_redirect(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await client.request(method, path)

    assert not 300 <= response.status_code < 400, response.headers
    assert "location" not in response.headers
    assert response.status_code not in (404, 405)


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


# --- CORS -------------------------------------------------------------------------------------

async def test_a_preflight_for_posting_a_message_is_allowed(client: httpx.AsyncClient) -> None:
    origin = "https://app.example.com"

    response = await client.options("/messages", headers={
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,idempotency-key",
    })

    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] in ("*", origin)
    assert "post" in header_list(response, "access-control-allow-methods")
    assert {"authorization", "idempotency-key"} <= header_list(
        response, "access-control-allow-headers")
    assert GENERATED_ID.match(response.headers["x-request-id"])


@pytest.mark.parametrize("header", ["x-request-id", "last-event-id", "content-type"])
async def test_a_preflight_allows_the_documented_request_headers(
    client: httpx.AsyncClient, header: str
) -> None:
    response = await client.options("/messages", headers={
        "Origin": "https://app.example.com", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": header,
    })

    assert response.status_code == 200, response.text
    assert header in header_list(response, "access-control-allow-headers")


@pytest.mark.parametrize(("path", "status"), [("/check", 200), ("/nope", 404), ("/messages", 401)])
async def test_a_cross_origin_response_exposes_the_request_id(
    client: httpx.AsyncClient, path: str, status: int
) -> None:
    origin = "https://app.example.com"

    response = await client.get(path, headers={"Origin": origin})

    assert response.status_code == status
    assert response.headers["access-control-allow-origin"] in ("*", origin)
    exposed = header_list(response, "access-control-expose-headers")
    assert {"x-request-id", "retry-after"} <= exposed, exposed


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


# --- the root page and the readiness probe ----------------------------------------------------

async def test_the_root_page_is_html_linking_the_api_description(client: httpx.AsyncClient) -> None:
    response = await client.get("/")

    assert response.status_code == 200
    assert media_type(response) == "text/html"
    assert "/openapi.json" in response.text
    assert "chatsvc" in response.text


async def test_check_answers_exactly_ok_in_plain_text(client: httpx.AsyncClient) -> None:
    response = await client.get("/check")

    assert response.status_code == 200
    assert media_type(response) == "text/plain"
    assert response.content == b"ok"
