"""GET /sessions stays bounded for an account that logged in a great many times."""

from __future__ import annotations

import dataclasses

import asyncpg
import httpx

from chatsvc.app import build_app
from chatsvc.config import Settings
from chatsvc.queries import sessions as sql
from chatsvc.resources import Resources
from chatsvc.testing import User
from chatsvc.tokens import digest
from tests.db_sessions import POLICY
from tests.test_conversation_plans import buffers
from tests.test_round_trips import CountingPool

LOGINS = 20_000
LISTED = 7


async def log_in_many_times(db: asyncpg.Pool, user: User, count: int) -> None:
    """`count` live sessions of `user`, all newer than the one its token names, each a second apart."""
    await db.execute("UPDATE sessions SET created_at = now() - interval '1 day' WHERE token_hash = $1",
                     digest(user.token))
    await db.execute("""
        INSERT INTO sessions (token_hash, user_id, expires_at, created_at, user_agent)
        SELECT sha256(($1::text || '-' || g)::bytea), $2, now() + interval '1 hour',
               now() - make_interval(secs => g), 'Login/' || g
        FROM generate_series(1, $3::int) AS g""", user.token, user.id, count)


async def test_many_sessions_list_the_newest_and_the_current_one_in_one_statement(
        resources: Resources, db: asyncpg.Pool, alice: User) -> None:
    await log_in_many_times(db, alice, LOGINS)
    pool = CountingPool(resources.pool)
    settings = dataclasses.replace(resources.settings, sessions_listed=LISTED)
    app = build_app(dataclasses.replace(resources, pool=pool, settings=settings))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://chatsvc") as client:
        response = await client.get("/sessions", headers=alice.auth)
    assert response.status_code == 200, response.text
    listed = response.json()["sessions"]
    assert len(pool.statements) == 1
    assert [s["user_agent"] for s in listed[:-1]] == [f"Login/{g}" for g in range(1, LISTED)]
    assert [s["current"] for s in listed] == [False] * (LISTED - 1) + [True]


async def test_the_default_bound_is_documented_and_applied(
        client: httpx.AsyncClient, settings: Settings, db: asyncpg.Pool, bob: User) -> None:
    await log_in_many_times(db, bob, settings.sessions_listed + 50)
    response = await client.get("/sessions", headers=bob.auth)
    assert response.status_code == 200, response.text
    assert len(response.json()["sessions"]) == settings.sessions_listed == 100


async def test_listing_reads_a_bounded_number_of_buffers(db: asyncpg.Pool, carol: User) -> None:
    await log_in_many_times(db, carol, LOGINS)
    # As autovacuum would after so many rows: with statistics from before the burst, the planner
    # may read the account's every session once (the answer stays bounded; the reading does not).
    await db.execute("ANALYZE sessions")
    for generic in (False, True):
        touched = await buffers(db, sql.SESSIONS,
                                (digest(carol.token), POLICY.idle_timeout, POLICY.touch_interval, LISTED),
                                generic=generic, shows="token_hash = $1")
        # The presented session's probe, then a row and an index entry per session listed.
        assert touched <= 3 * LISTED + 40, touched
