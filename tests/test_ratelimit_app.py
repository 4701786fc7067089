"""Rate limiting through the real app: headers on every answer, 429 before any effect."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from chatsvc.app import build_app
from chatsvc.resources import Resources
from chatsvc.testing import assert_error


@pytest.fixture
async def limited(resources: Resources) -> AsyncIterator[httpx.AsyncClient]:
    """The real app with a small general bucket and a tiny login/sign-up bucket."""
    settings = resources.settings.replace(rate=1, burst=5, auth_rate=1, auth_burst=2)
    app = build_app(dataclasses.replace(resources, settings=settings))
    transport = httpx.ASGITransport(app=app, client=(f"10.9.{secrets.randbelow(250)}.7", 4000))
    async with httpx.AsyncClient(transport=transport, base_url="http://chatsvc") as client:
        yield client


async def test_every_answer_carries_the_ratelimit_headers(limited: httpx.AsyncClient) -> None:
    response = await limited.get("/check")
    assert response.headers["ratelimit-limit"] == "5"
    assert response.headers["ratelimit-remaining"] == "4"
    assert int(response.headers["ratelimit-reset"]) >= 1


async def test_an_empty_bucket_is_429_with_retry_after(limited: httpx.AsyncClient) -> None:
    statuses = [(await limited.get("/check")).status_code for _ in range(6)]
    assert statuses == [200] * 5 + [429]
    refused = await limited.get("/check")
    assert_error(refused, 429, "rate_limited")
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["connection"] == "close"
    assert refused.headers["x-request-id"]


async def test_a_refused_sign_up_has_no_effect(limited: httpx.AsyncClient, db: asyncpg.Pool) -> None:
    names = [f"limited-{secrets.token_hex(4)}" for _ in range(3)]
    statuses = [(await limited.post("/users", json={"username": name, "password": "long enough"})
                 ).status_code for name in names]
    assert statuses == [201, 201, 429]
    stored = await db.fetchval("SELECT count(*) FROM users WHERE username = ANY($1)", names)
    assert stored == 2


async def test_an_ipv6_client_is_limited_as_its_slash_64(resources: Resources) -> None:
    """A subscriber picks addresses from its /64 at will: they all share one bucket."""
    settings = resources.settings.replace(rate=0, auth_rate=1, auth_burst=2)
    app = build_app(dataclasses.replace(resources, settings=settings))
    prefix = f"2001:db8:{secrets.randbelow(0xffff):x}"

    async def sign_up_from(address: str) -> int:
        transport = httpx.ASGITransport(app=app, client=(address, 4000))
        async with httpx.AsyncClient(transport=transport, base_url="http://chatsvc") as client:
            response = await client.post("/users", json={"username": f"v6-{secrets.token_hex(4)}",
                                                         "password": "long enough"})
            return response.status_code

    assert [await sign_up_from(f"{prefix}:1::{n}") for n in (1, 2)] == [201, 201]
    assert await sign_up_from(f"{prefix}:1:ffff:ffff:ffff:ffff") == 429
    assert await sign_up_from(f"{prefix}:2::1") == 201
