"""The listing is an index range scan, whatever the table's size, and its pages are right."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator

import asyncpg
import pytest

from chatsvc.migrate import migrate
from chatsvc.queries.messages import LIST_MESSAGES, list_messages
from chatsvc.testing import DatabaseFactory
from tests.db_sessions import POLICY, session_for

USERS = 200
MESSAGES = 120_000


@pytest.fixture(scope="module")
async def big(databases: DatabaseFactory) -> AsyncIterator[asyncpg.Pool]:
    """A database of its own holding 120 000 messages of mixed types among 200 users."""
    url = await databases.create()
    await migrate(url)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    await pool.execute(
        "INSERT INTO users (username, username_key, password_hash) "
        "SELECT 'u' || g, 'u' || g, 'x' FROM generate_series(1, $1) g", USERS)
    await pool.execute("""
        INSERT INTO messages (sender_id, recipient_id, content)
        SELECT 1 + (g::bigint * 7919) % $2, 1 + (g::bigint * 104729) % $2,
               CASE g % 3
                 WHEN 0 THEN json_build_object('type', 'text', 'text', 'hello ' || g)
                 WHEN 1 THEN json_build_object('type', 'image', 'url', 'https://x/' || g,
                                               'width', 64, 'height', 64)
                 ELSE json_build_object('type', 'video', 'url', 'https://v/' || g, 'source', 'vimeo')
               END
        FROM generate_series(1, $1) g""", MESSAGES, USERS)
    # One long conversation spread over the table, so the per-sender listing has a range to scan.
    await pool.execute("""
        UPDATE messages SET sender_id = 42, recipient_id = 17 WHERE id % 100 = 0""")
    await pool.execute("ANALYZE")
    yield pool
    await pool.close()


def plan_nodes(plan: dict) -> list[dict]:
    nodes = [plan]
    for child in plan.get("Plans", []):
        nodes.extend(plan_nodes(child))
    return nodes


async def explain(pool: asyncpg.Pool, sql: str, *args: object) -> list[dict]:
    raw = await pool.fetchval("EXPLAIN (FORMAT JSON) " + sql, *args)
    return plan_nodes(json.loads(raw)[0]["Plan"])


def index_scans(nodes: list[dict]) -> dict[str, dict]:
    return {node["Index Name"]: node for node in nodes
            if node["Node Type"] in ("Index Scan", "Bitmap Index Scan")
            and node["Index Name"].startswith("messages_")}


async def test_each_listing_branch_is_one_index_range_scan_in_id_order(big: asyncpg.Pool) -> None:
    token_hash = await session_for(big, 17)
    nodes = await explain(big, LIST_MESSAGES, token_hash, POLICY.idle_timeout, POLICY.touch_interval,
                          17, 5000, 101)
    scans = index_scans(nodes)
    # The reader's inbox: an ordered range scan that the limit stops, with no sort of the inbox.
    inbox = scans["messages_recipient_id"]
    assert inbox["Node Type"] == "Index Scan"
    assert "ROW(recipient_id, id) >= " in inbox["Index Cond"]
    assert "ROW(recipient_id, id) <= " in inbox["Index Cond"]
    # Someone else's view: recipient, sender and id range all in the condition of its own index,
    # so no row of another conversation is read.
    sent = scans["messages_recipient_sender_id"]["Index Cond"]
    assert "recipient_id = " in sent and "ROW(sender_id, id) >= " in sent and "ROW(sender_id, id) <= " in sent
    assert set(scans) == {"messages_recipient_id", "messages_recipient_sender_id"}
    assert not any(node["Node Type"] == "Seq Scan" and node.get("Relation Name") == "messages"
                   for node in nodes)


async def list_all(pool: asyncpg.Pool, token_hash: bytes, recipient: int, limit: int) -> list[dict]:
    """Every message the holder of `token_hash` may read in `recipient`'s inbox, page by page."""
    seen, start = [], 0
    while True:
        page = await list_messages(pool, token_hash, POLICY, recipient=recipient, start=start, limit=limit)
        assert page is not None
        messages = json.loads(page.messages)
        assert len(messages) <= limit
        seen.extend(messages)
        if page.next_start is None:
            return seen
        assert page.next_start > messages[-1]["id"]
        start = page.next_start


async def test_walking_the_pages_returns_each_message_once_in_order(big: asyncpg.Pool) -> None:
    expected = [row["id"] for row in await big.fetch(
        "SELECT id FROM messages WHERE recipient_id = 17 ORDER BY id")]
    assert len(expected) > 300
    seen = await list_all(big, await session_for(big, 17), 17, 100)
    assert [message["id"] for message in seen] == expected


async def test_someone_else_sees_only_what_they_sent(big: asyncpg.Pool) -> None:
    truth = await big.fetch(
        "SELECT id FROM messages WHERE recipient_id = 17 AND sender_id = 42 ORDER BY id")
    assert len(truth) > 1000
    seen = await list_all(big, await session_for(big, 42), 17, 1000)
    assert [message["id"] for message in seen] == [row["id"] for row in truth]
    assert all(message["sender"] == 42 and message["recipient"] == 17 for message in seen)


async def test_a_token_that_is_not_valid_reads_nothing(big: asyncpg.Pool) -> None:
    page = await list_messages(big, secrets.token_bytes(32), POLICY, recipient=17, start=0, limit=10)
    assert page is None
