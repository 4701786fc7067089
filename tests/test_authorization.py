"""Who may do what: every authenticated route against every kind of credential, cell by cell.

The routes come from the app's own route table: a route the tables below do not classify as public
or authenticated fails the suite, so a new route cannot ship without a decision. Each invalid
credential must get exactly 401 on every authenticated route and change nothing; another user's
valid token gets exactly what that user may do, never what the victim may, checked in the database.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest
from starlette.endpoints import HTTPEndpoint
from starlette.routing import Route

from chatsvc.app import ROUTES
from chatsvc.config import Settings
from chatsvc.testing import User, assert_error
from chatsvc.tokens import digest

# Every (method, path) of the public app, classified. HEAD is GET without a body (Starlette).
PUBLIC = {
    ("GET", "/"), ("HEAD", "/"),
    ("GET", "/check"), ("HEAD", "/check"),
    ("GET", "/openapi.json"), ("HEAD", "/openapi.json"),
    ("GET", "/docs"), ("HEAD", "/docs"),
    ("GET", "/static/{version}/{name}"), ("HEAD", "/static/{version}/{name}"),
    ("POST", "/users"),
    ("POST", "/login"),
}
AUTHENTICATED = {
    ("POST", "/logout"),
    ("POST", "/logout/all"),
    ("GET", "/users"), ("HEAD", "/users"),
    ("GET", "/users/me"), ("HEAD", "/users/me"),
    ("PUT", "/users/me/password"),
    ("GET", "/sessions"), ("HEAD", "/sessions"),
    ("DELETE", "/sessions/{id}"),
    ("GET", "/conversations"), ("HEAD", "/conversations"),
    ("GET", "/conversations/{peer:int}/messages"), ("HEAD", "/conversations/{peer:int}/messages"),
    ("PUT", "/conversations/{peer:int}/read"),
    ("POST", "/messages"),
    ("GET", "/messages"), ("HEAD", "/messages"),
    ("GET", "/messages/stream"), ("HEAD", "/messages/stream"),
}
_ENDPOINT_METHODS = ("get", "head", "post", "put", "patch", "delete")

# What each invalid credential gets on every authenticated route.
INVALID_CREDENTIALS = {
    "none": 401,
    "bearer-alone": 401,
    "non-ascii": 401,
    "300-chars": 401,
    "unknown-token": 401,
    "expired": 401,
    "idle-expired": 401,
    "revoked": 401,
}


def app_routes() -> set[tuple[str, str]]:
    """(method, path) for every route of the public app, read from its route table."""
    found = set()
    for route in ROUTES:
        assert isinstance(route, Route), f"classify {route!r} (not an HTTP route) in this file"
        if route.methods is not None:
            methods = set(route.methods)
        else:
            assert isinstance(route.endpoint, type) and issubclass(route.endpoint, HTTPEndpoint)
            methods = {name.upper() for name in _ENDPOINT_METHODS if hasattr(route.endpoint, name)}
            if "GET" in methods:
                methods.add("HEAD")  # HTTPEndpoint answers HEAD with its GET handler
        found |= {(method, route.path) for method in methods}
    return found


# The matrix tests the authenticated routes the app has (a route may be classified ahead of it).
AUTHENTICATED_ROUTES = sorted(AUTHENTICATED & app_routes())


def test_every_route_of_the_app_is_classified_public_or_authenticated() -> None:
    routes = app_routes()
    unclassified = routes - PUBLIC - AUTHENTICATED
    assert not unclassified, f"classify these routes in tests/test_authorization.py: {sorted(unclassified)}"
    assert not PUBLIC & AUTHENTICATED
    assert AUTHENTICATED_ROUTES, "the matrix below would test nothing"


# --- helpers ----------------------------------------------------------------------------------

def text(value: str = "hi") -> dict[str, str]:
    return {"type": "text", "text": value}


async def call(client: httpx.AsyncClient, method: str, path: str, authorization: str | bytes | None,
               recipient: int, **body: Any) -> httpx.Response:
    """`method path` as a client would send it, carrying `authorization` (None: no header)."""
    headers = {} if authorization is None else {"Authorization": authorization}
    if path == "/messages" and method == "POST":
        return await client.post(path, headers=headers, json={"recipient": recipient, "content": text(),
                                                               **body})
    if path == "/messages":
        return await client.request(method, path, headers=headers, params={"recipient": recipient})
    path = path.replace("{peer:int}", str(recipient)).replace("{id}", "00000000-0000-4000-8000-000000000000")
    return await client.request(method, path, headers=headers)


def assert_unauthorized(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    if response.request.method != "HEAD":  # a HEAD answer has no body
        assert_error(response, 401, "unauthorized")


def bearer(user: User) -> str:
    return f"Bearer {user.token}"


async def make_credential(kind: str, client: httpx.AsyncClient, db: asyncpg.Pool, settings: Settings,
                          holder: User) -> str | bytes | None:
    """The Authorization value of credential `kind`, built on `holder`'s session where it needs one."""
    token_hash = digest(holder.token)
    match kind:
        case "none":
            return None
        case "bearer-alone":
            return "Bearer"
        case "non-ascii":
            return f"Bearer {holder.token}\u00e9".encode()
        case "300-chars":
            return "Bearer " + "a" * 300
        case "unknown-token":
            return "Bearer " + secrets.token_urlsafe(32)
        case "expired":
            await db.execute("UPDATE sessions SET expires_at = now() - interval '1 second' "
                             "WHERE token_hash = $1", token_hash)
        case "idle-expired":
            await db.execute("UPDATE sessions SET last_seen_at = now() - make_interval(secs => $2) "
                             "WHERE token_hash = $1", token_hash, settings.session_idle_timeout + 60)
        case "revoked":
            assert (await client.post("/logout", headers=holder.auth)).status_code == 204
        case _:
            raise AssertionError(f"unknown credential {kind}")
    return bearer(holder)


async def state_of(db: asyncpg.Pool, holder: User, target: User) -> tuple[Any, ...]:
    """What a rejected request must leave alone: messages to target, holder's sessions and idle clock."""
    messages = await db.fetch("SELECT id, sender_id FROM messages WHERE recipient_id = $1 ORDER BY id",
                              target.id)
    sessions = await db.fetch("SELECT token_hash, expires_at, last_seen_at FROM sessions "
                              "WHERE user_id = $1 ORDER BY token_hash", holder.id)
    return [tuple(row) for row in messages], [tuple(row) for row in sessions]


# --- invalid credentials x authenticated routes -----------------------------------------------

@pytest.mark.parametrize(("kind", "status"), INVALID_CREDENTIALS.items(), ids=list(INVALID_CREDENTIALS))
@pytest.mark.parametrize(("method", "path"), AUTHENTICATED_ROUTES, ids=lambda value: value)
async def test_an_invalid_credential_gets_exactly_its_status_and_changes_nothing(
    client: httpx.AsyncClient, db: asyncpg.Pool, settings: Settings, new_user: Callable[[], Awaitable[User]],
    method: str, path: str, kind: str, status: int
) -> None:
    holder, target = await new_user(), await new_user()
    authorization = await make_credential(kind, client, db, settings, holder)
    before = await state_of(db, holder, target)

    response = await call(client, method, path, authorization, target.id)

    assert response.status_code == status, response.text
    assert_unauthorized(response)
    assert await state_of(db, holder, target) == before


@pytest.mark.parametrize("kind", ["revoked", "expired", "unknown-token"])
@pytest.mark.parametrize(("method", "path", "expected"), [
    ("GET", "/check", 200), ("POST", "/users", 201), ("POST", "/login", 200),
])
async def test_public_routes_ignore_a_bad_credential(
    client: httpx.AsyncClient, db: asyncpg.Pool, settings: Settings, new_user: Callable[[], Awaitable[User]],
    kind: str, method: str, path: str, expected: int
) -> None:
    holder = await new_user()
    authorization = await make_credential(kind, client, db, settings, holder)
    assert authorization is not None
    body = None
    if path == "/users":
        body = {"username": f"public-{secrets.token_hex(6)}", "password": secrets.token_urlsafe(12)}
    elif path == "/login":
        body = {"username": holder.username, "password": holder.password}

    response = await client.request(method, path, json=body, headers={"Authorization": authorization})

    assert response.status_code == expected, response.text


# --- another user's valid token ---------------------------------------------------------------

async def seed_inbox(client: httpx.AsyncClient, victim: User, other: User,
                     third: User) -> dict[str, list[int]]:
    """Messages to victim from victim, third and other, sent through the API; their ids by sender."""
    sent: dict[str, list[int]] = {"victim": [], "third": [], "other": []}
    for name, sender in (("victim", victim), ("third", third), ("other", other)) * 2:
        response = await client.post("/messages", headers=sender.auth,
                                     json={"recipient": victim.id, "content": text(f"from {name}")})
        assert response.status_code == 201, response.text
        sent[name].append(response.json()["id"])
    return sent


# (request, expected status) with another user's valid token, aimed at the victim.
OTHER_USERS_TOKEN = [
    pytest.param("POST", "/messages", {"sender": "victim"}, 403, id="POST-messages-as-the-victim"),
    pytest.param("POST", "/messages", {"sender": "victim", "recipient": "third"}, 403,
                 id="POST-messages-as-the-victim-to-a-third"),
    pytest.param("POST", "/messages", {}, 201, id="POST-messages-without-sender"),
    pytest.param("POST", "/messages", {"sender": "other"}, 201, id="POST-messages-as-oneself"),
    pytest.param("GET", "/messages", {}, 200, id="GET-messages-of-the-victim"),
    pytest.param("GET", "/messages", {"in_body": True}, 200, id="GET-messages-of-the-victim-body"),
    pytest.param("POST", "/logout", {}, 204, id="POST-logout"),
]


@pytest.mark.parametrize(("method", "path", "variant", "status"), OTHER_USERS_TOKEN)
async def test_another_users_token_gets_only_what_that_user_may_do(
    client: httpx.AsyncClient, db: asyncpg.Pool, new_user: Callable[[], Awaitable[User]],
    method: str, path: str, variant: dict[str, Any], status: int
) -> None:
    victim, other, third = await new_user(), await new_user(), await new_user()
    people = {"victim": victim, "other": other, "third": third}
    sent = await seed_inbox(client, victim, other, third)
    before = await db.fetchval("SELECT count(*) FROM messages WHERE sender_id = ANY($1)",
                               [victim.id, other.id, third.id])

    if path == "/messages" and method == "POST":
        body: dict[str, Any] = {"recipient": people[variant.get("recipient", "victim")].id,
                                "content": text("sent by other")}
        if "sender" in variant:
            body["sender"] = people[variant["sender"]].id
        response = await client.post(path, headers=other.auth, json=body)
    elif path == "/messages":
        where = {"json": {"recipient": victim.id}} if variant.get("in_body") else {
            "params": {"recipient": victim.id}}
        response = await client.request(method, path, headers=other.auth, **where)
    else:
        response = await client.post(path, headers=other.auth)

    assert response.status_code == status, response.text
    after = await db.fetchval("SELECT count(*) FROM messages WHERE sender_id = ANY($1)",
                              [victim.id, other.id, third.id])
    if status == 403:
        assert_error(response, 403, "forbidden")
        assert after == before, "a forbidden send stored something"
    elif status == 201:
        row = await db.fetchrow("SELECT sender_id, recipient_id, content::text FROM messages WHERE id = $1",
                                response.json()["id"])
        assert (row["sender_id"], row["recipient_id"]) == (other.id, victim.id), "stored as the wrong user"
        assert "sent by other" in row["content"]
        assert after == before + 1
    elif status == 200:
        listed = response.json()["messages"]
        assert [m["id"] for m in listed] == sent["other"], "another user's inbox leaked"
        assert {m["sender"] for m in listed} == {other.id}
        assert after == before
    else:
        # Logout ends the other user's own session and no one else's.
        assert_unauthorized(await client.get("/messages", headers=other.auth, params={"recipient": other.id}))
        victims = await client.get("/messages", headers=victim.auth, params={"recipient": victim.id})
        assert victims.status_code == 200, victims.text
        assert await db.fetchval("SELECT count(*) FROM sessions WHERE token_hash = $1",
                                 digest(victim.token)) == 1
        assert await db.fetchval("SELECT count(*) FROM sessions WHERE token_hash = $1",
                                 digest(other.token)) == 0
        assert after == before


# --- the rule, checked against the database ---------------------------------------------------

async def test_nobody_reads_another_inbox_or_sends_as_another_user(
    client: httpx.AsyncClient, db: asyncpg.Pool, new_user: Callable[[], Awaitable[User]]
) -> None:
    users = [await new_user() for _ in range(3)]
    ids = [user.id for user in users]
    # Everyone sends to everyone, themselves included, and tries to send as everyone else.
    for sender in users:
        for recipient in users:
            for claimed in users:
                response = await client.post("/messages", headers=sender.auth, json={
                    "sender": claimed.id, "recipient": recipient.id,
                    "content": text(f"{sender.id}->{recipient.id}")})
                assert response.status_code == (201 if claimed is sender else 403), response.text
                if claimed is sender:
                    stored = await db.fetchval("SELECT sender_id FROM messages WHERE id = $1",
                                               response.json()["id"])
                    assert stored == sender.id
    rows = await db.fetch("SELECT id, sender_id, recipient_id FROM messages WHERE sender_id = ANY($1)", ids)
    assert len(rows) == len(users) ** 2, "a send as another user was stored"

    for reader in users:
        for recipient in users:
            readable = sorted(row["id"] for row in rows if row["recipient_id"] == recipient.id
                              and (reader is recipient or row["sender_id"] == reader.id))
            listed: list[int] = []
            start: int | None = 0
            while start is not None:  # one message per page: paging must not leak either
                page = await client.get("/messages", headers=reader.auth,
                                        params={"recipient": recipient.id, "start": start, "limit": 1})
                assert page.status_code == 200, page.text
                listed += [message["id"] for message in page.json()["messages"]]
                start = page.json()["next_start"]
            assert listed == readable, (reader.id, recipient.id)
