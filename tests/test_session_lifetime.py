"""How a session ends: expiry, the idle timeout and its clock, and POST /logout."""

from __future__ import annotations

import asyncpg
import httpx

from chatsvc.config import Settings
from chatsvc.testing import User
from tests.session_requests import (
    assert_unauthorized,
    list_own_inbox,
    log_in,
    session_row,
    token_digest,
)

# --- expiry, idle timeout, the idle clock ------------------------------------------------------


async def test_an_expired_session_is_401(client: httpx.AsyncClient, db: asyncpg.Pool, alice: User) -> None:
    assert (await list_own_inbox(client, alice)).status_code == 200
    await db.execute("UPDATE sessions SET expires_at = now() - interval '1 second' WHERE token_hash = $1",
                     token_digest(alice.token))
    assert_unauthorized(await list_own_inbox(client, alice))


async def test_an_idle_session_is_401_and_stays_dead(
    client: httpx.AsyncClient, db: asyncpg.Pool, settings: Settings, alice: User
) -> None:
    digest = token_digest(alice.token)
    idle = settings.session_idle_timeout
    await db.execute(
        "UPDATE sessions SET last_seen_at = now() - make_interval(secs => $2) WHERE token_hash = $1",
        digest, idle - 60)
    assert (await list_own_inbox(client, alice)).status_code == 200

    await db.execute(
        "UPDATE sessions SET last_seen_at = now() - make_interval(secs => $2) WHERE token_hash = $1",
        digest, idle + 5)
    stale = await db.fetchval("SELECT last_seen_at FROM sessions WHERE token_hash = $1", digest)
    assert_unauthorized(await list_own_inbox(client, alice))
    # A rejected request must not refresh the idle clock and so revive the session.
    assert await db.fetchval("SELECT last_seen_at FROM sessions WHERE token_hash = $1", digest) == stale
    assert_unauthorized(await list_own_inbox(client, alice))


async def test_the_idle_clock_is_not_written_within_the_touch_interval(
    client: httpx.AsyncClient, db: asyncpg.Pool, settings: Settings, alice: User
) -> None:
    assert settings.session_touch_interval > 1
    digest = token_digest(alice.token)
    recent = await db.fetchval(
        "UPDATE sessions SET last_seen_at = now() - interval '1 second' WHERE token_hash = $1 "
        "RETURNING last_seen_at", digest)
    for _ in range(3):
        assert (await list_own_inbox(client, alice)).status_code == 200
    assert await db.fetchval("SELECT last_seen_at FROM sessions WHERE token_hash = $1", digest) == recent


async def test_the_idle_clock_is_refreshed_once_older_than_the_touch_interval(
    client: httpx.AsyncClient, db: asyncpg.Pool, settings: Settings, alice: User
) -> None:
    age = settings.session_touch_interval + 5
    assert age < settings.session_idle_timeout
    digest = token_digest(alice.token)
    old = await db.fetchval(
        "UPDATE sessions SET last_seen_at = now() - make_interval(secs => $2) WHERE token_hash = $1 "
        "RETURNING last_seen_at", digest, age)
    before = await db.fetchval("SELECT clock_timestamp()")
    assert (await list_own_inbox(client, alice)).status_code == 200
    after = await db.fetchval("SELECT clock_timestamp()")
    refreshed = await db.fetchval("SELECT last_seen_at FROM sessions WHERE token_hash = $1", digest)
    assert refreshed > old
    assert before <= refreshed <= after


async def test_failed_logins_and_other_sessions_do_not_touch_a_session(
    client: httpx.AsyncClient, db: asyncpg.Pool, alice: User
) -> None:
    digest = token_digest(alice.token)
    old = await db.fetchval(
        "UPDATE sessions SET last_seen_at = now() - interval '10 minutes' WHERE token_hash = $1 "
        "RETURNING last_seen_at", digest)
    assert (await log_in(client, alice.username, alice.password)).status_code == 200
    assert await db.fetchval("SELECT last_seen_at FROM sessions WHERE token_hash = $1", digest) == old


# --- logout ------------------------------------------------------------------------------------


async def test_logout_revokes_the_token(client: httpx.AsyncClient, db: asyncpg.Pool, alice: User) -> None:
    assert (await list_own_inbox(client, alice)).status_code == 200
    response = await client.post("/logout", headers=alice.auth)
    assert response.status_code == 204, response.text
    assert response.content == b""
    assert await session_row(db, alice.token) is None
    assert_unauthorized(await list_own_inbox(client, alice))
    assert_unauthorized(await client.post("/logout", headers=alice.auth))


async def test_logout_with_a_bare_token(client: httpx.AsyncClient, alice: User) -> None:
    assert (await client.post("/logout", headers={"Authorization": alice.token})).status_code == 204
    assert_unauthorized(await list_own_inbox(client, alice, alice.token))


async def test_logout_ends_only_the_presented_session(
    client: httpx.AsyncClient, alice: User, bob: User
) -> None:
    second = await log_in(client, alice.username, alice.password)
    assert second.status_code == 200
    other_device = User(alice.id, alice.username, alice.password, second.json()["token"])

    assert (await client.post("/logout", headers=alice.auth)).status_code == 204
    assert_unauthorized(await list_own_inbox(client, alice))
    assert (await list_own_inbox(client, other_device)).status_code == 200
    assert (await list_own_inbox(client, bob)).status_code == 200


async def test_logging_in_again_after_logout_works(client: httpx.AsyncClient, alice: User) -> None:
    assert (await client.post("/logout", headers=alice.auth)).status_code == 204
    response = await log_in(client, alice.username, alice.password)
    assert response.status_code == 200
    again = User(alice.id, alice.username, alice.password, response.json()["token"])
    assert (await list_own_inbox(client, again)).status_code == 200
