"""A session token: only its SHA-256 is stored, and how it may be presented (with or without Bearer)."""

from __future__ import annotations

import secrets
from datetime import timedelta

import asyncpg
import httpx
import pytest

from chatsvc.config import Settings
from chatsvc.testing import User
from tests.session_requests import (
    assert_unauthorized,
    list_own_inbox,
    token_digest,
)

# --- how the token is stored -------------------------------------------------------------------


async def test_only_the_sha256_of_the_token_is_stored(
    client: httpx.AsyncClient, db: asyncpg.Pool, settings: Settings, alice: User
) -> None:
    rows = await db.fetch("SELECT * FROM sessions WHERE user_id = $1", alice.id)
    assert len(rows) == 1
    row = rows[0]
    assert bytes(row["token_hash"]) == token_digest(alice.token)
    for value in row.values():
        if isinstance(value, bytes | bytearray | memoryview):
            assert alice.token.encode() not in bytes(value)
        else:
            assert alice.token not in str(value)
    whole_row = await db.fetchval(
        "SELECT row_to_json(s)::text FROM sessions s WHERE token_hash = $1", token_digest(alice.token))
    assert alice.token not in whole_row
    assert row["expires_at"] - row["created_at"] == timedelta(seconds=settings.session_lifetime)


# --- presenting the token ----------------------------------------------------------------------


@pytest.mark.parametrize("template", ["Bearer {}", "bearer {}", "{}"], ids=["Bearer", "bearer", "bare"])
async def test_the_token_is_accepted_with_or_without_the_bearer_scheme(
    client: httpx.AsyncClient, alice: User, template: str
) -> None:
    response = await list_own_inbox(client, alice, template.format(alice.token))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("authorization", [
    "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNzd29yZA==", "Bearer two words", "x" * 300,
    b"Bearer \xc3\xa9t\xc3\xa9", "Bearer null", "undefined",
], ids=["empty", "scheme-only", "scheme-space", "basic", "two-words", "too-long", "non-ascii",
        "null", "undefined"])
async def test_a_garbage_authorization_is_401(
    client: httpx.AsyncClient, alice: User, authorization: str | bytes
) -> None:
    response = await list_own_inbox(client, alice, authorization)
    assert_unauthorized(response)
    assert response.headers["connection"] == "close"


async def test_a_missing_authorization_is_401(client: httpx.AsyncClient, alice: User) -> None:
    response = await client.get("/messages", params={"recipient": alice.id})
    assert_unauthorized(response)
    assert_unauthorized(await client.post("/logout"))


@pytest.mark.parametrize("template", ["Bearer {}", "{}"], ids=["bearer", "bare"])
async def test_an_unknown_token_is_401(client: httpx.AsyncClient, alice: User, template: str) -> None:
    assert_unauthorized(await list_own_inbox(client, alice, template.format(secrets.token_urlsafe(32))))


async def test_a_token_is_case_sensitive(client: httpx.AsyncClient, alice: User) -> None:
    assert alice.token.swapcase() != alice.token
    assert_unauthorized(await list_own_inbox(client, alice, f"Bearer {alice.token.swapcase()}"))
