"""The OpenAPI document: valid OpenAPI 3.1, generated from the route table, and true to the server.

Truth is checked both ways: every route is documented, and what real requests get back (status,
media type, body, headers) is what the document says for that operation. The patterns that stand
in for `__post_init__` rules are checked against the structs themselves.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
import unicodedata
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import jsonschema
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openapi_spec_validator import OpenAPIV31SpecValidator
from starlette.applications import Starlette
from starlette.endpoints import HTTPEndpoint
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import chatsvc
from chatsvc import schemas
from chatsvc.app import ROUTES, build_app
from chatsvc.config import Settings
from chatsvc.openapi import (
    OPERATION_ATTRIBUTE,
    Operation,
    Reply,
    UndocumentedRoute,
    build_document,
    documented,
    documented_operations,
)
from chatsvc.readiness import Readiness
from chatsvc.resources import Resources
from chatsvc.testing import User, media_type, sign_up_and_log_in
from chatsvc.web.assets import asset_table

AUTHENTICATED = {"POST /logout", "GET /messages", "POST /messages", "GET /messages/stream",
                 "GET /users", "GET /users/me", "PUT /users/me/password", "GET /sessions",
                 "DELETE /sessions/{id}", "POST /logout/all", "GET /conversations",
                 "GET /conversations/{peer}/messages", "PUT /conversations/{peer}/read"}
# Documented statuses that no in-process request can produce, and why.
NOT_SPOT_CHECKED = {
    ("GET /messages/stream", 200): "an endless event stream: ASGITransport waits for its end",
    ("GET /messages/stream", 429): "too many open streams, which ASGITransport cannot hold open",
    ("POST /login", 429): "failed logins of one account: tests/test_login_protection.py, live",
    ("POST /login", 503): "a full password-hash queue: tests/test_login_protection.py, live",
    ("PUT /users/me/password", 409): "a race with another change between its two statements",
}


@pytest.fixture
async def app(resources: Resources) -> Starlette:
    return build_app(resources)


def client_of(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://chatsvc")


@pytest.fixture
async def api(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with client_of(app) as client:
        yield client


@pytest.fixture
def document(app: Starlette, settings: Settings) -> dict[str, Any]:
    return build_document(app.routes, settings)


def labels(document: dict[str, Any]) -> set[str]:
    return {f"{method.upper()} {path}" for path, item in document["paths"].items() for method in item}


def assert_conforms(document: dict[str, Any], label: str, response: httpx.Response) -> None:
    """`response` is one the document promises for `label`: status, media type, body and headers."""
    method, path = label.split(" ", 1)
    responses = document["paths"][path][method.lower()]["responses"]
    assert str(response.status_code) in responses, f"{label}: undocumented {response.status_code}"
    promised = responses[str(response.status_code)]
    if "content" not in promised:
        assert response.content == b""
    else:
        assert media_type(response) in promised["content"], response.headers
        schema = promised["content"][media_type(response)]["schema"]
        body = response.json() if media_type(response) == "application/json" else response.text
        validator = jsonschema.Draft202012Validator(
            {**schema, "components": document["components"]},
            format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
        validator.validate(body)
    for name, header in promised.get("headers", {}).items():
        header = document["components"]["headers"][header["$ref"].rsplit("/", 1)[1]]
        if header.get("required"):
            assert name.lower() in response.headers, f"{label} {response.status_code}: no {name}"


# --- the document ---------------------------------------------------------------------------------

def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    OpenAPIV31SpecValidator(document).validate()
    assert document["openapi"] == "3.1.0"
    assert document["info"]["version"] == chatsvc.__version__


def test_every_route_and_method_of_the_app_is_documented(app: Starlette, document: dict[str, Any]) -> None:
    routed = set()
    for route in app.routes:
        assert isinstance(route, Route)
        if isinstance(route.endpoint, type) and issubclass(route.endpoint, HTTPEndpoint):
            methods = {m for m in ("GET", "POST", "PUT", "PATCH", "DELETE")
                       if hasattr(route.endpoint, m.lower())}
        else:
            methods = set(route.methods or ()) - {"HEAD"}
        routed |= {f"{method} {route.path_format}" for method in methods}
    assert routed == labels(document)


def test_a_route_without_an_operation_is_refused() -> None:
    async def undocumented(request: Request) -> Response:
        return Response()

    class HalfDocumented(HTTPEndpoint):
        @documented(Operation("Read", {200: Reply("ok")}))
        async def get(self, request: Request) -> Response:
            return Response()

        async def put(self, request: Request) -> Response:
            return Response()

    with pytest.raises(UndocumentedRoute, match="GET /new"):
        list(documented_operations([*ROUTES, Route("/new", undocumented)]))
    with pytest.raises(UndocumentedRoute, match="PUT /half"):
        list(documented_operations([*ROUTES, Route("/half", HalfDocumented)]))
    assert not hasattr(undocumented, OPERATION_ATTRIBUTE)


def test_authenticated_operations_name_the_bearer_scheme_and_document_401(document: dict[str, Any]) -> None:
    assert document["components"]["securitySchemes"]["bearer"]["type"] == "http"
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for path, item in document["paths"].items():
        for method, operation in item.items():
            label = f"{method.upper()} {path}"
            assert (operation.get("security") == [{"bearer": []}]) == (label in AUTHENTICATED), label
            if label in AUTHENTICATED:
                assert "401" in operation["responses"]


def test_the_structs_are_described_as_the_server_reads_them(document: dict[str, Any]) -> None:
    components = document["components"]["schemas"]
    content = components["Content"]
    assert content["discriminator"]["propertyName"] == "type"
    assert set(content["discriminator"]["mapping"]) == set(schemas.CONTENT_TYPES)
    assert len(content["oneOf"]) == len(schemas.CONTENT_TYPES)
    for name in ("Text", "Image", "Video"):
        # Unknown fields inside `content` are rejected...
        assert components[name]["additionalProperties"] is False
    # ...unknown top-level fields are ignored.
    assert "additionalProperties" not in components["NewMessage"]
    assert components["Image"]["properties"]["width"] == {
        "type": "integer", "minimum": 1, "maximum": 32767, "default": 64}
    assert components["Video"]["properties"]["source"]["enum"] == ["vimeo", "youtube"]
    assert components["Image"]["required"] == ["type", "url"]
    listing = {p["name"]: p for p in document["paths"]["/messages"]["get"]["parameters"]}
    assert {name: p["required"] for name, p in listing.items()} == {
        "recipient": True, "start": False, "limit": False}
    assert listing["limit"]["schema"]["maximum"] == schemas.PAGE_MAX
    sending = document["paths"]["/messages"]["post"]["parameters"]
    assert [(p["name"], p["in"], p["required"]) for p in sending] == [("Idempotency-Key", "header", False)]


def test_the_text_limit_follows_the_setting(app: Starlette, settings: Settings) -> None:
    document = build_document(app.routes, settings.replace(max_text_chars=7))
    assert document["components"]["schemas"]["Text"]["properties"]["text"]["maxLength"] == 7


async def test_it_is_served_as_json_and_built_once_per_app(
    app: Starlette, api: httpx.AsyncClient, document: dict[str, Any]
) -> None:
    first = await api.get("/openapi.json")
    assert first.status_code == 200
    assert media_type(first) == "application/json"
    assert first.json() == document
    assert_conforms(document, "GET /openapi.json", first)
    built = app.state.openapi_document
    second = await api.get("/openapi.json")
    assert second.content == first.content
    assert app.state.openapi_document is built


# --- what real requests get is what the document says ------------------------------------------

Request_ = Callable[[httpx.AsyncClient, User, User], Awaitable[httpx.Response]]


def _message(recipient: int, text: str = "hi") -> dict[str, Any]:
    return {"recipient": recipient, "content": {"type": "text", "text": text}}


async def _reused_key(api: httpx.AsyncClient, alice: User, bob: User) -> httpx.Response:
    headers = {**alice.auth, "Idempotency-Key": secrets.token_hex(8)}
    assert (await api.post("/messages", json=_message(bob.id), headers=headers)).status_code == 201
    return await api.post("/messages", json=_message(bob.id, "other"), headers=headers)


async def _logged_out(api: httpx.AsyncClient, alice: User, bob: User) -> httpx.Response:
    fresh = await sign_up_and_log_in(api)
    return await api.post("/logout", headers=fresh.auth)


async def _last_from(api: httpx.AsyncClient, alice: User, bob: User) -> int:
    """The id of the message bob sent alice before the spot check."""
    listed = await api.get("/conversations", headers=alice.auth)
    return listed.json()["conversations"][0]["last_message"]["id"]


async def _marked_read(api: httpx.AsyncClient, alice: User, bob: User) -> httpx.Response:
    return await api.put(f"/conversations/{bob.id}/read", headers=alice.auth,
                         json={"last_read": await _last_from(api, alice, bob)})


async def _other_session_revoked(api: httpx.AsyncClient, alice: User, bob: User) -> httpx.Response:
    await api.post("/login", json={"username": alice.username, "password": alice.password})
    sessions = (await api.get("/sessions", headers=alice.auth)).json()["sessions"]
    other = next(session["id"] for session in sessions if not session["current"])
    return await api.delete(f"/sessions/{other}", headers=alice.auth)


def _password_change(current: str) -> dict[str, str]:
    return {"current_password": current, "new_password": "a new password"}



async def _revalidated(api: httpx.AsyncClient, path: str) -> httpx.Response:
    etag = (await api.get(path)).headers["etag"]
    return await api.get(path, headers={"If-None-Match": etag})


STATIC_ROUTE = "GET /static/{version}/{name}"
TOO_BIG = b'{"username": "' + b"x" * 70_000 + b'"}'
NO_TOKEN = {"Authorization": "Bearer " + "n" * 43}

SPOT_CHECKS: list[tuple[str, int, Request_]] = [
    ("GET /", 200, lambda api, a, b: api.get("/")),
    ("GET /", 304, lambda api, a, b: _revalidated(api, "/")),
    ("GET /docs", 200, lambda api, a, b: api.get("/docs")),
    ("GET /docs", 304, lambda api, a, b: _revalidated(api, "/docs")),
    (STATIC_ROUTE, 200, lambda api, a, b: api.get(asset_table().prefix + "app.css")),
    (STATIC_ROUTE, 304, lambda api, a, b: _revalidated(api, asset_table().prefix + "main.js")),
    (STATIC_ROUTE, 404, lambda api, a, b: api.get(asset_table().prefix + "missing.js")),
    ("GET /check", 200, lambda api, a, b: api.get("/check")),
    ("GET /openapi.json", 200, lambda api, a, b: api.get("/openapi.json")),
    ("POST /users", 201, lambda api, a, b: api.post(
        "/users", json={"username": f"u-{secrets.token_hex(6)}", "password": "long enough"})),
    ("POST /users", 400, lambda api, a, b: api.post("/users", json={"username": " x", "password": "p" * 8})),
    ("POST /users", 400, lambda api, a, b: api.post("/users", content=b"{not json")),
    ("POST /users", 409, lambda api, a, b: api.post(
        "/users", json={"username": a.username.upper(), "password": "p" * 8})),
    ("POST /users", 413, lambda api, a, b: api.post("/users", content=TOO_BIG)),
    ("POST /login", 200, lambda api, a, b: api.post(
        "/login", json={"username": a.username, "password": a.password})),
    ("POST /login", 400, lambda api, a, b: api.post("/login", json={"username": "x"})),
    ("POST /login", 401, lambda api, a, b: api.post(
        "/login", json={"username": a.username, "password": "wrong password"})),
    ("POST /login", 413, lambda api, a, b: api.post("/login", content=TOO_BIG)),
    ("POST /logout", 204, _logged_out),
    ("POST /logout", 401, lambda api, a, b: api.post("/logout", headers=NO_TOKEN)),
    ("POST /messages", 201, lambda api, a, b: api.post("/messages", json=_message(b.id), headers=a.auth)),
    ("POST /messages", 400, lambda api, a, b: api.post(
        "/messages", json={"recipient": b.id, "content": {"type": "text", "text": "x", "extra": 1}},
        headers=a.auth)),
    ("POST /messages", 400, lambda api, a, b: api.post(
        "/messages", json=_message(b.id), headers={**a.auth, "Idempotency-Key": "has space"})),
    ("POST /messages", 401, lambda api, a, b: api.post("/messages", json=_message(b.id), headers=NO_TOKEN)),
    ("POST /messages", 403, lambda api, a, b: api.post(
        "/messages", json={**_message(b.id), "sender": b.id}, headers=a.auth)),
    ("POST /messages", 404, lambda api, a, b: api.post(
        "/messages", json=_message(schemas.MAX_ID), headers=a.auth)),
    ("POST /messages", 409, _reused_key),
    ("POST /messages", 413, lambda api, a, b: api.post("/messages", content=TOO_BIG, headers=a.auth)),
    ("GET /messages", 200, lambda api, a, b: api.get(
        "/messages", params={"recipient": a.id}, headers=a.auth)),
    ("GET /messages", 400, lambda api, a, b: api.get(
        "/messages", params={"recipient": a.id, "limit": 1001}, headers=a.auth)),
    ("GET /messages", 401, lambda api, a, b: api.get("/messages", params={"recipient": 1}, headers=NO_TOKEN)),
    ("GET /users/me", 200, lambda api, a, b: api.get("/users/me", headers=a.auth)),
    ("GET /users/me", 401, lambda api, a, b: api.get("/users/me", headers=NO_TOKEN)),
    ("GET /users", 200, lambda api, a, b: api.get("/users", params={"id": [b.id, a.id]}, headers=a.auth)),
    ("GET /users", 400, lambda api, a, b: api.get("/users", headers=a.auth)),
    ("GET /users", 401, lambda api, a, b: api.get("/users", params={"id": 1}, headers=NO_TOKEN)),
    ("PUT /users/me/password", 204, lambda api, a, b: api.put(
        "/users/me/password", json=_password_change(a.password), headers=a.auth)),
    ("PUT /users/me/password", 400, lambda api, a, b: api.put(
        "/users/me/password", json={"current_password": a.password, "new_password": "short"},
        headers=a.auth)),
    ("PUT /users/me/password", 401, lambda api, a, b: api.put(
        "/users/me/password", json=_password_change(a.password), headers=NO_TOKEN)),
    ("PUT /users/me/password", 403, lambda api, a, b: api.put(
        "/users/me/password", json=_password_change("not the password"), headers=a.auth)),
    ("PUT /users/me/password", 413, lambda api, a, b: api.put(
        "/users/me/password", content=TOO_BIG, headers=a.auth)),
    ("GET /sessions", 200, lambda api, a, b: api.get("/sessions", headers=a.auth)),
    ("GET /sessions", 401, lambda api, a, b: api.get("/sessions", headers=NO_TOKEN)),
    ("DELETE /sessions/{id}", 204, _other_session_revoked),
    ("DELETE /sessions/{id}", 401, lambda api, a, b: api.delete("/sessions/x", headers=NO_TOKEN)),
    ("DELETE /sessions/{id}", 404, lambda api, a, b: api.delete(
        "/sessions/00000000-0000-4000-8000-000000000000", headers=a.auth)),
    ("POST /logout/all", 204, lambda api, a, b: api.post("/logout/all", headers=a.auth)),
    ("POST /logout/all", 401, lambda api, a, b: api.post("/logout/all", headers=NO_TOKEN)),
    ("GET /conversations", 200, lambda api, a, b: api.get("/conversations", headers=a.auth)),
    ("GET /conversations", 400, lambda api, a, b: api.get(
        "/conversations", params={"limit": 0}, headers=a.auth)),
    ("GET /conversations", 401, lambda api, a, b: api.get("/conversations", headers=NO_TOKEN)),
    ("GET /conversations/{peer}/messages", 200, lambda api, a, b: api.get(
        f"/conversations/{b.id}/messages", params={"limit": 1}, headers=a.auth)),
    ("GET /conversations/{peer}/messages", 400, lambda api, a, b: api.get(
        f"/conversations/{b.id}/messages", params={"before": 2, "after": 1}, headers=a.auth)),
    ("GET /conversations/{peer}/messages", 401, lambda api, a, b: api.get(
        f"/conversations/{b.id}/messages", headers=NO_TOKEN)),
    ("GET /conversations/{peer}/messages", 404, lambda api, a, b: api.get(
        f"/conversations/{schemas.MAX_ID}/messages", headers=a.auth)),
    ("PUT /conversations/{peer}/read", 200, _marked_read),
    ("PUT /conversations/{peer}/read", 400, lambda api, a, b: api.put(
        f"/conversations/{b.id}/read", json={"last_read": 0}, headers=a.auth)),
    ("PUT /conversations/{peer}/read", 401, lambda api, a, b: api.put(
        f"/conversations/{b.id}/read", json={"last_read": 1}, headers=NO_TOKEN)),
    ("PUT /conversations/{peer}/read", 404, lambda api, a, b: api.put(
        f"/conversations/{a.id}/read", json={"last_read": 1}, headers=b.auth)),
    ("PUT /conversations/{peer}/read", 413, lambda api, a, b: api.put(
        f"/conversations/{b.id}/read", content=TOO_BIG, headers=a.auth)),
    ("GET /messages/stream", 400, lambda api, a, b: api.get(
        "/messages/stream", params={"since": "x"}, headers=a.auth)),
    ("GET /messages/stream", 401, lambda api, a, b: api.get("/messages/stream", headers=NO_TOKEN)),
]


@pytest.mark.parametrize(("label", "status", "send"), SPOT_CHECKS,
                         ids=[f"{label}-{status}-{i}" for i, (label, status, _) in enumerate(SPOT_CHECKS)])
async def test_a_real_response_is_what_the_document_promises(
    api: httpx.AsyncClient, document: dict[str, Any], label: str, status: int, send: Request_
) -> None:
    alice, bob = await sign_up_and_log_in(api), await sign_up_and_log_in(api)
    await api.post("/messages", json=_message(alice.id), headers=bob.auth)
    response = await send(api, alice, bob)
    assert response.status_code == status, response.text
    assert_conforms(document, label, response)


async def test_a_limited_client_gets_the_documented_429(
    resources: Resources, document: dict[str, Any]
) -> None:
    strict = resources.settings.replace(rate=0.001, burst=1)
    async with client_of(build_app(dataclasses.replace(resources, settings=strict))) as api:
        assert (await api.get("/check")).status_code == 200
        response = await api.get("/check")
    assert response.status_code == 429
    assert_conforms(document, "GET /check", response)


async def test_an_unready_check_is_the_documented_503(
    resources: Resources, document: dict[str, Any]
) -> None:
    # A new Readiness has not seen the database answer yet.
    async with client_of(build_app(dataclasses.replace(resources, readiness=Readiness()))) as api:
        response = await api.get("/check")
    assert response.status_code == 503
    assert_conforms(document, "GET /check", response)


async def test_too_many_headers_is_the_documented_431(
    api: httpx.AsyncClient, document: dict[str, Any]
) -> None:
    response = await api.get("/", headers={f"x-filler-{i}": "1" for i in range(120)})
    assert response.status_code == 431
    assert_conforms(document, "GET /", response)


def test_every_status_a_handler_documents_is_produced_by_a_spot_check() -> None:
    """The statuses each handler lists as its own, each seen above from a real request."""
    seen = {(label, status) for label, status, _ in SPOT_CHECKS}
    seen |= {("GET /check", 503), *NOT_SPOT_CHECKED}
    for route, method, operation in documented_operations(ROUTES):
        label = f"{method} {route.path_format}"
        for status in operation.responses:
            assert (label, status) in seen, f"{label} {status}: no spot check produces it"
        if operation.authenticated:
            assert (label, 401) in seen, label
        if operation.reads_body and method == "POST":
            assert (label, 413) in seen, label


# --- the patterns say what __post_init__ checks ------------------------------------------------

def _accepted(kind: type, **fields: Any) -> bool:
    try:
        msgspec.convert(fields, kind)
    except msgspec.ValidationError:
        return False
    return True


def _ecma(pattern: str) -> re.Pattern[str]:
    """`pattern` as JSON Schema reads it: ECMA-262's closing `$` is the end of the text, while Python's
    also matches before a final newline."""
    assert pattern.startswith("^") and pattern.endswith("$")
    return re.compile(pattern[:-1] + r"\Z")


def _matches(pattern: str, text: str) -> bool:
    return _ecma(pattern).search(text) is not None


def test_the_character_classes_agree_with_the_checks_on_every_code_point() -> None:
    def matching(pattern: re.Pattern[str]) -> set[int]:
        return {code_point for code_point in range(0x110000) if pattern.match(chr(code_point))}

    assert matching(re.compile(f"[{schemas._JSON_CONTROL}]")) == matching(schemas._CONTROL)
    assert matching(re.compile(f"[{schemas._JSON_SPACE_OR_CONTROL}]")) == matching(
        schemas._WHITESPACE_OR_CONTROL)


def test_the_patterns_agree_with_the_checks_character_by_character() -> None:
    """A lone character, and one between two others, decide where the classes stand in a pattern."""
    username, url = _ecma(schemas.USERNAME_PATTERN), _ecma(schemas.URL_PATTERN)
    # Every space and control character is below U+3001; past it, a few stand for the rest.
    for code_point in [*range(0x3001), 0xFEFF, 0xFFFD, 0x1F600, 0x10FFFF]:
        char = chr(code_point)
        if 0xD800 <= code_point <= 0xDFFF or unicodedata.normalize("NFC", char) != char:
            continue  # no JSON text carries a lone surrogate; NFC has its own test below
        alone_ok = not schemas._WHITESPACE_OR_CONTROL.match(char)
        assert (username.search(char) is not None) == alone_ok, hex(code_point)
        assert (username.search(f"a{char}a") is not None) == (not schemas._CONTROL.match(char))
        # A backslash is refused anywhere; "//" names no host, and so no protocol-relative reference.
        url_ok = alone_ok and char != "\\"
        assert (url.search(f"/{char}") is not None) == url_ok, hex(code_point)
        assert (url.search(f"/{char}") is not None) == _accepted(
            schemas.Image, type="image", url=f"/{char}")


@settings(max_examples=400, derandomize=True, deadline=None)
@given(st.text(st.sampled_from("aZé0 \t\u3000\u00a0\x00\x1f\x85-_.\u0301\u212b"), max_size=70))
def test_the_username_pattern_admits_every_name_sign_up_accepts(username: str) -> None:
    """The pattern is a necessary condition only: PRECIS refuses more than a pattern can say."""
    accepted = _accepted(schemas.Credentials, username=username, password="p" * 8)
    if accepted:
        assert _matches(schemas.USERNAME_PATTERN, username)


@settings(max_examples=600, derandomize=True, deadline=None)
@given(st.text(st.sampled_from("hHtTpPsSaZ09xX+.-:/?#@%[\\ é\x00\x7f\u3000\u3002"), max_size=14))
def test_the_url_pattern_agrees_with_the_url_rules(url: str) -> None:
    documented_ok = _matches(schemas.URL_PATTERN, url) and len(url) >= 1
    assert documented_ok == _accepted(schemas.Image, type="image", url=url)
    assert documented_ok == _accepted(schemas.Video, type="video", url=url, source="vimeo")


@pytest.mark.parametrize("text", ["", "a", "a\x00b", "\x00", "ok text"])
def test_the_no_nul_pattern_agrees_with_the_nul_rule(text: str) -> None:
    documented_ok = _matches(schemas.NO_NUL_PATTERN, text)
    assert _accepted(schemas.Text, type="text", text=text) == (documented_ok and text != "")
    assert _accepted(schemas.LoginCredentials, username=text, password="x") == (documented_ok and text != "")
    assert _accepted(schemas.Credentials, username="name", password=text * 8) == (
        documented_ok and text != "")
