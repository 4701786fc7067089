"""The OpenAPI document is true to the server: what real requests get back (status, media type, body,
headers) is what the document says for that operation, and every documented status is produced.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from chatsvc import schemas
from chatsvc.app import ROUTES, build_app
from chatsvc.openapi import (
    documented_operations,
)
from chatsvc.readiness import Readiness
from chatsvc.resources import Resources
from chatsvc.testing import User, sign_up_and_log_in
from chatsvc.web.assets import asset_table
from tests.openapi_checks import (
    assert_conforms,
    client_of,
)

# Documented statuses that no in-process request can produce, and why.
NOT_SPOT_CHECKED = {
    ("GET /messages/stream", 200): "an endless event stream: ASGITransport waits for its end",
    ("GET /messages/stream", 429): "too many open streams, which ASGITransport cannot hold open",
    ("POST /login", 429): "failed logins of one account: tests/test_login_protection.py, live",
    ("POST /login", 503): "a full password-hash queue: tests/test_login_protection.py, live",
    ("PUT /users/me/password", 409): "a race with another change between its two statements",
}


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
