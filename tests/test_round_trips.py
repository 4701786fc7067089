"""One database round trip for each route on its success path, authentication included."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from chatsvc.app import build_app
from chatsvc.resources import Resources
from chatsvc.testing import User


class CountingPool:
    """The real pool, counting every statement sent through it (and any connection taken from it)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self.statements: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._pool, name)
        if name in ("execute", "executemany", "fetch", "fetchrow", "fetchval", "copy_records_to_table"):
            async def counted(query: str, *args: Any, **kwargs: Any) -> Any:
                self.statements.append(query)
                return await attribute(query, *args, **kwargs)
            return counted
        if name == "acquire":
            raise AssertionError("a handler took a connection: its statements would go uncounted")
        return attribute


@pytest.fixture
async def counting(resources: Resources) -> AsyncIterator[tuple[httpx.AsyncClient, CountingPool]]:
    pool = CountingPool(resources.pool)
    app = build_app(dataclasses.replace(resources, pool=pool))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://chatsvc") as client:
        yield client, pool


async def test_sending_is_one_statement(counting, alice: User, bob: User) -> None:
    client, pool = counting
    response = await client.post("/messages", headers=alice.auth,
                                 json={"recipient": bob.id, "content": {"type": "text", "text": "one"}})
    assert response.status_code == 201
    assert len(pool.statements) == 1


async def test_sending_with_an_idempotency_key_is_one_statement(counting, alice: User, bob: User) -> None:
    client, pool = counting
    response = await client.post("/messages", headers={**alice.auth, "Idempotency-Key": "rt-1"},
                                 json={"recipient": bob.id, "content": {"type": "text", "text": "one"}})
    assert response.status_code == 201
    assert len(pool.statements) == 1


@pytest.mark.parametrize("reader", ["recipient", "someone else"])
async def test_listing_is_one_statement(counting, alice: User, bob: User, reader: str) -> None:
    client, pool = counting
    caller = bob if reader == "recipient" else alice
    response = await client.get("/messages", params={"recipient": bob.id, "limit": 10}, headers=caller.auth)
    assert response.status_code == 200
    assert len(pool.statements) == 1


async def test_a_bad_token_costs_one_statement_and_is_401(counting) -> None:
    client, pool = counting
    response = await client.get("/messages", params={"recipient": 1},
                                headers={"Authorization": "Bearer no-such-token"})
    assert response.status_code == 401
    assert len(pool.statements) == 1


async def _last_message_between(client: httpx.AsyncClient, reader: User, writer: User) -> int:
    sent = await client.post("/messages", headers=writer.auth,
                             json={"recipient": reader.id, "content": {"type": "text", "text": "one"}})
    assert sent.status_code == 201
    return sent.json()["id"]


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/users/me", 200),
    ("GET", "/users?username={bob_name}", 200),
    ("GET", "/users?id={bob}&id={alice}", 200),
    ("GET", "/conversations", 200),
    ("GET", "/conversations?before={message}&limit=5", 200),
    ("GET", "/conversations/{bob}/messages", 200),
    ("GET", "/conversations/{bob}/messages?before={message}", 200),
    ("GET", "/conversations/{bob}/messages?after=0", 200),
    ("PUT", "/conversations/{bob}/read", 200),
    ("GET", "/sessions", 200),
    ("DELETE", "/sessions/{other_session}", 204),
    ("POST", "/logout/all", 204),
])
async def test_each_people_conversation_and_session_route_is_one_statement(
        counting, alice: User, bob: User, method: str, path: str, status: int) -> None:
    client, pool = counting
    message = await _last_message_between(client, alice, bob)
    await client.post("/login", json={"username": alice.username, "password": alice.password})
    sessions = (await client.get("/sessions", headers=alice.auth)).json()["sessions"]
    other_session = next(session["id"] for session in sessions if not session["current"])
    url = path.format(bob=bob.id, alice=alice.id, bob_name=bob.username, message=message,
                      other_session=other_session)
    pool.statements.clear()
    response = await client.request(method, url, headers=alice.auth,
                                    json={"last_read": message} if method == "PUT" else None)
    assert response.status_code == status, response.text
    assert len(pool.statements) == 1, pool.statements


async def test_a_password_change_is_two_statements(counting, alice: User) -> None:
    """The stored hash must be read before the current password can be checked against it."""
    client, pool = counting
    response = await client.put("/users/me/password", headers=alice.auth,
                                json={"current_password": alice.password, "new_password": "another one"})
    assert response.status_code == 204, response.text
    assert len(pool.statements) == 2
