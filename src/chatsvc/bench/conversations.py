"""Conversations in the benchmark's data: users in many conversations, long conversations, and
the pgbench scripts that run the conversation routes' SQL on them."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncpg

from chatsvc import queries


@dataclass(frozen=True)
class Shape:
    """How much conversation data a run adds to the prefilled messages."""

    hubs: int  # users 1..hubs are each in `per_hub` conversations (GET /conversations)
    per_hub: int
    pairs: int  # long conversations, between the users right after the hubs
    pair_messages: int
    back: int  # the "far back" page starts this many messages before a long conversation's newest
    hot: int = 0  # messages to the last user from everyone else: a popular account's inbox


BENCH = Shape(hubs=100, per_hub=1000, pairs=10, pair_messages=10_100, back=10_000, hot=300_000)
SMOKE = Shape(hubs=5, per_hub=100, pairs=2, pair_messages=400, back=300, hot=10_000)
# bench-scale compares latency on a small and a large table: the same conversations in both,
# the far-back page as far back as make bench's.
SCALE = Shape(hubs=5, per_hub=1000, pairs=1, pair_messages=10_100, back=10_000)
SMOKE_SCALE = Shape(hubs=2, per_hub=100, pairs=1, pair_messages=400, back=300)


@dataclass
class Conversations:
    hubs: int
    # (a, b, before): a's conversation with b, and the `before` that pages `back` messages back.
    pairs: list[tuple[int, int, int]] = field(default_factory=list)
    messages: int = 0  # added to the table


# Hub h writes to, or hears from, `per_hub` distinct users after the long conversations' users.
HUB_MESSAGES = """
INSERT INTO messages (sender_id, recipient_id, content)
SELECT CASE WHEN k % 2 = 0 THEN h ELSE peer END, CASE WHEN k % 2 = 0 THEN peer ELSE h END,
       '{"type":"text","text":"see you at the station"}'
FROM generate_series(1, $1::int) AS h, generate_series(0, $2::int - 1) AS k,
     LATERAL (SELECT $3::int + (h + k) % ($4::int - $3::int + 1) AS peer) AS p
ORDER BY random()
"""

# The pairs' messages interleaved (ordered by n first), two thirds one way and a third the other.
PAIR_MESSAGES = """
INSERT INTO messages (sender_id, recipient_id, content)
SELECT CASE WHEN n % 3 = 0 THEN b ELSE a END, CASE WHEN n % 3 = 0 THEN a ELSE b END,
       '{"type":"text","text":"on my way, see you in ten minutes"}'
FROM generate_series(0, $2::int - 1) AS i, generate_series(1, $3::int) AS n,
     LATERAL (SELECT $1::int + 2 * i + 1 AS a, $1::int + 2 * i + 2 AS b) AS p
ORDER BY n, i
"""

# A recipient holding a large share of the table (the last user), from senders spread over the
# others, added after the bulk: the data a listing must stay bounded on (tests/test_listing_skew.py).
HOT_MESSAGES = """
INSERT INTO messages (sender_id, recipient_id, content)
SELECT 1 + (g::bigint * 7919) % ($2::int - 1), $2::int, '{"type":"text","text":"big fan!"}'
FROM generate_series(1, $1::int) AS g
"""

BACK_ID = """
SELECT id FROM messages WHERE (sender_id, recipient_id) IN (($1, $2), ($2, $1))
ORDER BY id DESC OFFSET $3 LIMIT 1
"""


async def add_conversations(connection: asyncpg.Connection, shape: Shape, users: int) -> Conversations:
    """Add the shape's messages (after the bulk of the table), then build every conversation row
    as the migration builds them for existing messages."""
    first_peer = shape.hubs + 2 * shape.pairs + 1
    if users - first_peer + 1 < shape.per_hub:
        raise ValueError(f"{users} users are too few for {shape.per_hub} conversations per hub")
    await connection.execute(HUB_MESSAGES, shape.hubs, shape.per_hub, first_peer, users, timeout=None)
    await connection.execute(PAIR_MESSAGES, shape.hubs, shape.pairs, shape.pair_messages, timeout=None)
    if shape.hot:
        await connection.execute(HOT_MESSAGES, shape.hot, users, timeout=None)
    await build_conversations(connection)
    added = shape.hubs * shape.per_hub + shape.pairs * shape.pair_messages + shape.hot
    result = Conversations(shape.hubs, messages=added)
    for i in range(shape.pairs):
        a, b = shape.hubs + 2 * i + 1, shape.hubs + 2 * i + 2
        result.pairs.append((a, b, await connection.fetchval(BACK_ID, a, b, shape.back)))
    return result


async def build_conversations(connection: asyncpg.Connection) -> None:
    """Every conversation row of the messages stored, by sql/0006's backfill (one GROUP BY), into
    the empty table without its primary key and indexes, built once afterwards: millions of rows
    inserted in hash order into three B-trees, a page split at a time, are what made a 10-million
    message prefill take a quarter of an hour. The aggregate gets the memory to stay a hash in RAM."""
    await connection.execute("SET work_mem = '1GB'")
    async with indexes_dropped(connection, "conversations", primary_key=True):
        await connection.execute(queries.conversations.BUILD_FROM_MESSAGES, timeout=None)
    await connection.execute("RESET work_mem")


# A sample of conversation rows (random ones, and those of random messages) against what sql/0006's
# backfill computes for their pairs: the pairs whose row is missing, extra or different.
CHECK_SAMPLE = """
WITH bounds AS (SELECT min(id) AS lo, max(id) AS hi FROM messages),
picked AS (
    SELECT least(m.sender_id, m.recipient_id) AS low_id, greatest(m.sender_id, m.recipient_id) AS high_id
    FROM (SELECT lo + floor(random() * (hi - lo + 1))::bigint AS id  -- a new one on each row
          FROM bounds, generate_series(1, $1::int)) AS r
    JOIN messages AS m ON m.id = r.id
    UNION
    (SELECT low_id, high_id FROM conversations ORDER BY random() LIMIT $1::int)
), expected AS (
    SELECT picked.low_id, picked.high_id, backfill.*
    FROM picked, LATERAL (
        SELECT max(id) AS last_message_id,
               count(*) FILTER (WHERE sender_id > recipient_id) AS low_unread,
               count(*) FILTER (WHERE sender_id < recipient_id) AS high_unread
        FROM messages
        WHERE (sender_id, recipient_id) IN ((picked.low_id, picked.high_id), (picked.high_id, picked.low_id))
    ) AS backfill
)
SELECT count(*) AS checked,
       count(*) FILTER (
           WHERE c.low_id IS NULL OR e.last_message_id IS NULL
              OR (c.last_message_id, c.low_unread, c.high_unread, c.low_last_read, c.high_last_read)
                 IS DISTINCT FROM (e.last_message_id, e.low_unread, e.high_unread, NULL, NULL)
       ) AS wrong
FROM expected AS e LEFT JOIN conversations AS c USING (low_id, high_id)
"""


async def check_conversations(connection: asyncpg.Connection, sample: int) -> int:
    """Compare about 2 x `sample` conversation rows with sql/0006's backfill of their pairs;
    raise if any differs (a prefill that would measure a state the service cannot reach).
    Returns how many were checked."""
    row = await connection.fetchrow(CHECK_SAMPLE, sample, timeout=None)
    assert row is not None  # an aggregate without GROUP BY: always one row
    if row["wrong"]:
        raise ValueError(f"{row['wrong']} of {row['checked']} sampled conversations differ from the backfill")
    return int(row["checked"])


@contextlib.asynccontextmanager
async def indexes_dropped(
    connection: asyncpg.Connection, table: str, *, primary_key: bool = False
) -> AsyncIterator[None]:
    """`table` without its secondary indexes (and its primary key if asked) for a bulk load, then
    each built again from its own definition, exactly as the migrations made it."""
    indexes = await connection.fetch(
        "SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS definition,"
        "       c.conname AS constraint_name, pg_get_constraintdef(c.oid) AS constraint_definition"
        " FROM pg_index AS i LEFT JOIN pg_constraint AS c ON c.conindid = i.indexrelid AND c.contype = 'p'"
        " WHERE i.indrelid = $1::regclass AND (NOT i.indisprimary OR $2)",
        table, primary_key,
    )
    for index in indexes:
        if index["constraint_name"]:
            await connection.execute(f"ALTER TABLE {table} DROP CONSTRAINT {index['constraint_name']}")
        else:
            await connection.execute(f"DROP INDEX {index['name']}")
    yield
    for index in indexes:
        if index["constraint_name"]:
            added = f"{index['constraint_name']} {index['constraint_definition']}"
            await connection.execute(f"ALTER TABLE {table} ADD CONSTRAINT {added}", timeout=None)
        else:
            await connection.execute(index["definition"], timeout=None)


def lua_lines(conversations: Conversations | None) -> list[str]:
    """The Lua table fields lua/common.lua's conversation requests read."""
    if conversations is None:
        return ["  hubs = 0,", "  pairs = {},"]
    pairs = ", ".join(f"{{{a}, {b}, {before}}}" for a, b, before in conversations.pairs)
    return [f"  hubs = {conversations.hubs},", f"  pairs = {{{pairs}}},"]

