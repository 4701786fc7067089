"""The listing is an index range scan, whatever the table's size, and its pages are right."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import asyncpg
import pytest

from chatsvc import queries
from chatsvc.migrate import migrate
from tests.support import DatabaseFactory

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


async def test_the_inbox_listing_is_one_index_range_scan_in_id_order(big: asyncpg.Pool) -> None:
    nodes = await explain(big, queries.INBOX_PAGE, 17, 5000, 101)
    scans = [node for node in nodes if "Scan" in node["Node Type"]]
    assert [node["Node Type"] for node in scans] == ["Index Scan"], nodes
    assert scans[0]["Index Name"] == "messages_recipient_id"
    assert "recipient_id = " in scans[0]["Index Cond"] and "id >= " in scans[0]["Index Cond"]
    # The index yields id order: the limit stops the scan, with no sort of the whole inbox.
    assert not any(node["Node Type"] == "Sort" for node in nodes)


async def test_the_per_sender_listing_is_a_range_scan_of_its_own_index(big: asyncpg.Pool) -> None:
    nodes = await explain(big, queries.SENT_TO_RECIPIENT_PAGE, 17, 42, 5000, 101)
    index_scans = [node for node in nodes if node["Node Type"].endswith("Index Scan")]
    assert len(index_scans) == 1, nodes
    assert index_scans[0]["Index Name"] == "messages_recipient_sender_id"
    condition = index_scans[0]["Index Cond"]
    # Every predicate is in the index condition: no row of anyone else's conversation is read.
    assert "recipient_id = " in condition and "sender_id = " in condition and "id >= " in condition
    assert not any(node["Node Type"] == "Seq Scan" for node in nodes)


async def test_walking_the_pages_returns_each_message_once_in_order(big: asyncpg.Pool) -> None:
    recipient = 17
    expected = [row["id"] for row in await big.fetch(
        "SELECT id FROM messages WHERE recipient_id = $1 ORDER BY id", recipient)]
    assert len(expected) > 300
    seen, start, limit = [], 0, 100
    while True:
        rows = await queries.messages_for_recipient(big, recipient, start, limit + 1, None)
        seen.extend(row["id"] for row in rows[:limit])
        if len(rows) <= limit:
            break
        start = rows[limit]["id"]
    assert seen == expected


async def test_someone_else_sees_only_what_they_sent(big: asyncpg.Pool) -> None:
    recipient, sender = 17, 42
    rows = await queries.messages_for_recipient(big, recipient, 0, 5000, sender)
    truth = await big.fetch(
        "SELECT id FROM messages WHERE recipient_id = $1 AND sender_id = $2 ORDER BY id",
        recipient, sender)
    assert len(truth) > 1000
    assert [row["id"] for row in rows] == [row["id"] for row in truth]
    assert all(row["sender_id"] == sender for row in rows)
