"""One database round trip for each of `POST /messages` and `GET /messages`, authentication included."""

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
