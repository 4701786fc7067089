"""Listings read about `limit` + 1 index entries whatever the data: a recipient holding most of the
table, a caller who never wrote to them, a start far back or past the end, custom or generic plan.
The assertions count the buffers EXPLAIN (ANALYZE, BUFFERS) reports, not just the node types."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import asyncpg
import pytest

from chatsvc.queries.messages import LIST_MESSAGES
from chatsvc.queries.stream import STREAM_PAGE
from chatsvc.testing import DatabaseFactory
from tests.db_sessions import POLICY, session_for

USERS = 300
MESSAGES = 200_000
HOT = 1  # receives most of the table
WRITER = 2  # wrote to HOT all along
STRANGER = 3  # never wrote to HOT, received only a handful
LIMIT = 20
# A page of LIMIT + 1 rows reads the index's root and a leaf or two, then the heap pages those rows
# are on; a scan of the hot recipient's rows would touch hundreds. Generous for either plan.
MAX_BUFFERS = 3 * (LIMIT + 1) + 12


@pytest.fixture(scope="module")
async def skewed(databases: DatabaseFactory) -> AsyncIterator[asyncpg.Pool]:
    """90% of the messages go to HOT, from 20 heavy senders (so the planner expects many rows per
    sender); WRITER sent HOT every 50th of them; STRANGER received 5 and sent none to HOT."""
    pool = await asyncpg.create_pool(await databases.create(migrated=True), min_size=1, max_size=2)
    await pool.execute(
        "INSERT INTO users (username, username_key, password_hash) "
        "SELECT 'u' || g, 'u' || g, 'x' FROM generate_series(1, $1) g", USERS)
    await pool.execute("""
        INSERT INTO messages (sender_id, recipient_id, content)
        SELECT 4 + g % 20, CASE WHEN g % 10 = 0 THEN 4 + (g * 7) % ($2 - 4) ELSE $3 END,
               '{"type":"text","text":"hi"}'
        FROM generate_series(1, $1) g""", MESSAGES, USERS, HOT)
    await pool.execute("""
        UPDATE messages SET sender_id = $1 WHERE recipient_id = $2 AND id % 50 = 0""", WRITER, HOT)
    await pool.execute("""
        UPDATE messages SET recipient_id = $1 WHERE id IN (7, 15000, 30000, 45000, 59999)""", STRANGER)
    await pool.execute("VACUUM ANALYZE messages")
    yield pool
    await pool.close()


async def buffers(pool: asyncpg.Pool, sql: str, args: tuple[object, ...], *, generic: bool) -> int:
    """Shared buffers hit or read over the whole plan of one execution of `sql` as a prepared
    statement: the generic plan, or the custom one for these values (EXPLAIN of a statement with
    bound parameters would always plan for the values)."""
    values = ", ".join(literal(value) for value in args)
    mode = "force_generic_plan" if generic else "force_custom_plan"
    async with pool.acquire() as connection:
        await connection.execute(f"SET plan_cache_mode = {mode}")
        await connection.execute(f"PREPARE measured AS {sql}")
        try:
            explain = "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE measured"
            raw = await connection.fetchval(f"{explain}({values})")
        finally:
            await connection.execute("DEALLOCATE measured; RESET plan_cache_mode")
    plan = json.loads(raw)[0]["Plan"]
    return int(plan["Shared Hit Blocks"] + plan["Shared Read Blocks"])


def literal(value: object) -> str:
    return f"'\\x{value.hex()}'::bytea" if isinstance(value, bytes) else repr(value)


def listing_args(token_hash: bytes, recipient: int, start: int) -> tuple[object, ...]:
    return (token_hash, POLICY.idle_timeout, POLICY.touch_interval, recipient, start, LIMIT)


@pytest.mark.parametrize("generic", [False, True], ids=["custom", "generic"])
@pytest.mark.parametrize("start", [0, 30_000, 10**9], ids=["from-start", "far-back", "past-end"])
@pytest.mark.parametrize(("caller", "recipient"), [
    (HOT, HOT), (STRANGER, HOT), (WRITER, HOT), (STRANGER, STRANGER), (HOT, STRANGER),
], ids=["hot-own-inbox", "stranger-to-hot", "writer-to-hot", "stranger-own-inbox", "hot-to-stranger"])
async def test_a_listing_page_touches_few_buffers(
    skewed: asyncpg.Pool, caller: int, recipient: int, start: int, generic: bool
) -> None:
    token_hash = await session_for(skewed, caller)
    touched = await buffers(skewed, LIST_MESSAGES, listing_args(token_hash, recipient, start),
                               generic=generic)
    assert touched <= MAX_BUFFERS


@pytest.mark.parametrize("generic", [False, True], ids=["custom", "generic"])
@pytest.mark.parametrize("after", [0, 30_000, 10**9], ids=["from-start", "far-back", "past-end"])
@pytest.mark.parametrize("user", [HOT, WRITER, STRANGER], ids=["hot", "writer", "stranger"])
async def test_a_stream_replay_page_touches_few_buffers(
    skewed: asyncpg.Pool, user: int, after: int, generic: bool
) -> None:
    touched = await buffers(skewed, STREAM_PAGE, (user, after, 2**62, LIMIT), generic=generic)
    assert touched <= MAX_BUFFERS
