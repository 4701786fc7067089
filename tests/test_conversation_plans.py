"""Conversation listings read a bounded number of buffers whatever the data looks like.

The data is skewed on purpose: one account in most conversations and receiving most of the
table (its own long conversation spread through its inbox, paged 10,000 back), one long
conversation, a caller who never wrote to that account. Each listing is run
under EXPLAIN (ANALYZE, BUFFERS), with the custom plan and with the generic plan a prepared
statement switches to, and the buffers it touched are asserted: a plan that walks a user's
inbox or the table instead of a range of the right index fails here.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator

import asyncpg
import pytest

from chatsvc.migrate import migrate
from chatsvc.queries import conversations as sql
from chatsvc.schemas import MAX_ID
from chatsvc.testing import DatabaseFactory
from tests.db_sessions import POLICY, session_for

IDLE, TOUCH = POLICY.idle_timeout, POLICY.touch_interval
HOT = 1  # in a conversation with almost everyone, and the recipient of most messages
HOT_PEERS = 1200
HOT_TALKER, HOT_TALK = 2, 12_000  # HOT's longest conversation, its messages among HOT's inbox
BACK = 10_000  # the page "far back" from the newest, as in the benchmark
TALKERS = (2001, 2002)  # one long conversation
LONG = 30_000
STRANGER = 2500  # never wrote to HOT, and nobody wrote to them
USERS = 3000
PAGE = 50


@pytest.fixture(scope="module")
async def skewed(databases: DatabaseFactory) -> AsyncIterator[asyncpg.Pool]:
    url = await databases.create()
    await migrate(url)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    await pool.execute("INSERT INTO users (username, username_key, password_hash) "
                       "SELECT 'u' || g, 'u' || g, 'x' FROM generate_series(1, $1) g", USERS)
    # Rows go in as a bulk load would; the conversation rows are then built as sql/0003 builds
    # them for an existing table (tests/test_conversations_migration.py proves that build).
    # HOT's inbox, with its long conversation with HOT_TALKER spread through it.
    await pool.execute("""
        INSERT INTO messages (sender_id, recipient_id, content)
        SELECT sender_id, recipient_id, content::json FROM (
            SELECT 6 * g::bigint AS k, 2 + g % $1 AS sender_id, $2::bigint AS recipient_id,
                   '{"type":"text","text":"to the hot account"}' AS content
            FROM generate_series(1, 60000) g
            UNION ALL
            SELECT 6 * 60000 * g::bigint / $4 + 1, CASE WHEN g % 2 = 0 THEN $2 ELSE $3 END,
                   CASE WHEN g % 2 = 0 THEN $3 ELSE $2 END, '{"type":"text","text":"hot talk"}'
            FROM generate_series(1, $4) g
        ) AS rows ORDER BY k""", HOT_PEERS, HOT, HOT_TALKER, HOT_TALK)
    await pool.execute("""
        INSERT INTO messages (sender_id, recipient_id, content)
        SELECT CASE WHEN g % 3 = 0 THEN $2::bigint ELSE $1 END,
               CASE WHEN g % 3 = 0 THEN $1::bigint ELSE $2 END,
               '{"type":"text","text":"a long talk"}'
        FROM generate_series(1, $3) g""", *TALKERS, LONG)
    await pool.execute("""
        INSERT INTO messages (sender_id, recipient_id, content)
        SELECT 1500 + g % 997, 1500 + (g * 7) % 1499, '{"type":"text","text":"noise"}'
        FROM generate_series(1, 20000) g""")
    await pool.execute(sql.BUILD_FROM_MESSAGES)
    await pool.execute("VACUUM ANALYZE")
    yield pool
    await pool.close()


def literal(value: object) -> str:
    if isinstance(value, bytes):
        return f"'\\x{value.hex()}'::bytea"
    return repr(value)


async def buffers(
        pool: asyncpg.Pool, statement: str, args: tuple, *, generic: bool, shows: str = "$4") -> int:
    """Shared buffers the statement touched (hit or read), planned as a prepared statement would be;
    `shows`: a parameter only a generic plan names."""
    name = f"s_{secrets.token_hex(4)}"
    async with pool.acquire() as connection, connection.transaction():
        mode = "force_generic_plan" if generic else "force_custom_plan"
        await connection.execute(f"SET LOCAL plan_cache_mode = {mode}")
        await connection.execute(f"PREPARE {name} AS {statement}")
        raw = await connection.fetchval(
            f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE {name}({', '.join(map(literal, args))})")
        await connection.execute(f"DEALLOCATE {name}")
    plan = json.loads(raw)[0]["Plan"]
    text = json.dumps(plan)
    assert (shows in text) == generic, "the plan is not of the kind asked for"
    return plan["Shared Hit Blocks"] + plan["Shared Read Blocks"]


# A page of n rows may touch, per row, a heap page and an index leaf; plus each index's descent.
def page_budget(rows: int) -> int:
    return 3 * (rows + 1) + 40


@pytest.mark.parametrize("generic", [False, True], ids=["custom plan", "generic plan"])
@pytest.mark.parametrize("who", ["hot account", "long talker", "stranger"])
@pytest.mark.parametrize("where", ["newest", "far back"])
async def test_a_page_of_conversations_reads_a_bounded_number_of_buffers(
        skewed: asyncpg.Pool, who: str, where: str, generic: bool) -> None:
    user = {"hot account": HOT, "long talker": TALKERS[0], "stranger": STRANGER}[who]
    token_hash = await session_for(skewed, user)
    upto = MAX_ID if where == "newest" else await skewed.fetchval(
        "SELECT last_message_id FROM conversations WHERE $1 IN (low_id, high_id) "
        "ORDER BY last_message_id DESC LIMIT 1 OFFSET 1000", user) or MAX_ID
    touched = await buffers(skewed, sql.LIST_CONVERSATIONS, (token_hash, IDLE, TOUCH, upto, PAGE),
                            generic=generic)
    # Per conversation shown: its row, the peer's name and the last message, each a probe.
    assert touched <= 8 * (PAGE + 1) + 40, touched


@pytest.mark.parametrize("generic", [False, True], ids=["custom plan", "generic plan"])
@pytest.mark.parametrize(("caller", "peer"), [
    (TALKERS[0], TALKERS[1]),  # a long conversation
    (STRANGER, HOT),  # never written to an account that holds most of the table
    (HOT, HOT_TALKER),  # the hot account and its long conversation, inside its inbox
    (HOT, 3),  # the hot account and one of its many peers
    (HOT, STRANGER),
])
@pytest.mark.parametrize("where", ["newest", "10,000 back", "before far back", "after far back",
                                   "after the end"])
async def test_a_page_of_a_conversation_reads_a_bounded_number_of_buffers(
        skewed: asyncpg.Pool, caller: int, peer: int, where: str, generic: bool) -> None:
    token_hash = await session_for(skewed, caller)
    far_back = await skewed.fetchval(
        "SELECT id FROM messages WHERE (sender_id, recipient_id) IN (($1, $2), ($2, $1)) "
        "ORDER BY id LIMIT 1 OFFSET 100", caller, peer) or 100
    back = await skewed.fetchval(
        "SELECT id FROM messages WHERE (sender_id, recipient_id) IN (($1, $2), ($2, $1)) "
        "ORDER BY id DESC LIMIT 1 OFFSET $3", caller, peer, BACK) or MAX_ID
    statement, bound = {
        "newest": (sql.OLDER_MESSAGES, MAX_ID),
        "10,000 back": (sql.OLDER_MESSAGES, back),
        "before far back": (sql.OLDER_MESSAGES, far_back),
        "after far back": (sql.NEWER_MESSAGES, far_back),
        "after the end": (sql.NEWER_MESSAGES, MAX_ID - 1),
    }[where]
    touched = await buffers(skewed, statement, (token_hash, IDLE, TOUCH, peer, bound, PAGE),
                            generic=generic)
    assert touched <= page_budget(PAGE), touched


async def walk(pool: asyncpg.Pool, token_hash: bytes, peer: int, *, older: bool) -> list[int]:
    """Every id of the conversation with `peer`, page by page from the newest or from the oldest."""
    seen: list[int] = []
    bound = MAX_ID if older else 0
    while True:
        page = await sql.conversation_page(pool, token_hash, POLICY, peer=peer, bound=bound, limit=200,
                                           older=older)
        assert page is not None and page.peer_exists
        ids = [message["id"] for message in json.loads(page.messages)]
        assert ids == sorted(ids)
        seen = ids + seen if older else seen + ids
        if page.fetched <= 200:
            return seen
        bound = ids[0] - 1 if older else ids[-1]


async def test_paging_either_way_through_a_long_conversation_shows_each_message_once(
        skewed: asyncpg.Pool) -> None:
    expected = [row["id"] for row in await skewed.fetch(
        "SELECT id FROM messages WHERE (sender_id, recipient_id) IN (($1, $2), ($2, $1)) ORDER BY id",
        *TALKERS)]
    assert len(expected) == LONG
    token_hash = await session_for(skewed, TALKERS[0])
    assert await walk(skewed, token_hash, TALKERS[1], older=True) == expected
    assert await walk(skewed, token_hash, TALKERS[1], older=False) == expected


async def test_the_hot_accounts_conversations_page_by_page(skewed: asyncpg.Pool) -> None:
    token_hash = await session_for(skewed, HOT)
    peers, upto = [], MAX_ID
    while True:
        listed = await sql.list_conversations(skewed, token_hash, POLICY, upto=upto, limit=200)
        assert listed is not None
        page = json.loads(listed.conversations)
        peers.extend(conversation["peer"]["id"] for conversation in page)
        if listed.next_before is None:
            break
        assert listed.next_before == page[-1]["last_message"]["id"]
        upto = listed.next_before - 1
    assert sorted(peers) == list(range(2, 2 + HOT_PEERS))


async def test_the_data_is_as_skewed_as_the_plan_tests_need(skewed: asyncpg.Pool) -> None:
    """The "10,000 back" and "far back" cases above fall back to the newest page when a
    conversation is short; the ones that matter must not be short."""
    talk = await skewed.fetchrow(
        "SELECT count(*) AS n, min(id) AS first, max(id) AS last FROM messages "
        "WHERE (sender_id, recipient_id) IN (($1, $2), ($2, $1))", HOT, HOT_TALKER)
    assert talk["n"] > BACK
    inbox_within = await skewed.fetchval(
        "SELECT count(*) FROM messages "
        "WHERE recipient_id = $1 AND sender_id <> $2 AND id BETWEEN $3 AND $4",
        HOT, HOT_TALKER, talk["first"], talk["last"])
    assert inbox_within > 4 * talk["n"]  # the talk is spread through the hot account's inbox
    conversations = "SELECT count(*) FROM conversations WHERE $1 IN (low_id, high_id)"
    assert await skewed.fetchval(conversations, HOT) > 1000
