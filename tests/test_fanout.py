"""The fan-out in process: a listener reconnection, the watermark, and the replay's plan."""

from __future__ import annotations

import asyncio
import json
import time

import asyncpg
import pytest

from chatsvc import fanout as fanout_module
from chatsvc import queries
from chatsvc.fanout import Fanout, Horizon, in_progress
from chatsvc.testing import DatabaseFactory, User
from chatsvc.tokens import token_digest


async def test_notifications_missed_while_the_listener_reconnects_still_wake_the_streams(
        settings, db: asyncpg.Pool, alice: User, bob: User, monkeypatch: pytest.MonkeyPatch) -> None:
    listeners = ("SELECT array_agg(pid) FROM pg_stat_activity "
                 "WHERE application_name = 'chatsvc-listener' AND datname = current_database()")
    others = set(await db.fetchval(listeners) or ())
    attempts, gate, reconnecting = [], asyncio.Event(), asyncio.Event()
    connect = asyncpg.connect

    async def held_connect(*args: object, **kwargs: object) -> asyncpg.Connection:
        attempts.append(time.monotonic())
        if len(attempts) > 1:
            reconnecting.set()
            await gate.wait()  # the reconnection waits here while a message commits
        return await connect(*args, **kwargs)

    monkeypatch.setattr(fanout_module.asyncpg, "connect", held_connect)
    fanout = Fanout(settings)
    await fanout.start()
    try:
        assert fanout.ready.is_set()
        subscription = fanout.subscribe(alice.id, token_digest(alice.token), "127.0.0.1")
        subscription.wake.clear()
        (listener,) = set(await db.fetchval(listeners)) - others
        assert await db.fetchval("SELECT pg_terminate_backend($1, 5000)", listener)
        async with asyncio.timeout(5):
            await reconnecting.wait()
        missed = await db.fetchval(
            "INSERT INTO messages (sender_id, recipient_id, content) "
            "VALUES ($1, $2, '{\"type\": \"text\", \"text\": \"unheard\"}') RETURNING id", bob.id, alice.id)
        await asyncio.sleep(0.2)
        assert not subscription.wake.is_set() and fanout.watermark < missed
        gate.set()
        async with asyncio.timeout(5):
            await subscription.wake.wait()
        assert fanout.watermark >= missed
        subscription.close()
        assert fanout.open_streams == 0
    finally:
        gate.set()
        await fanout.close()


# ------------------------------------------------------------------ the watermark and the replay plan


def test_the_watermark_waits_for_every_transaction_that_could_hold_a_smaller_id() -> None:
    horizon = Horizon()
    # 11 is visible while transaction 700 (perhaps holding 10) is in progress.
    assert horizon.observe(11, {700}, now=0.0) == (False, False) and horizon.watermark == 0
    # 12 arrives; 700 and a newer 701 are still running.
    assert horizon.observe(12, {700, 701}, now=0.1) == (False, False)
    # 700 ends: 11 is settled, 12 still waits for 701.
    assert horizon.observe(12, {701}, now=0.2) == (True, False) and horizon.watermark == 11
    # A transaction that started after 12 was seen does not matter for it.
    assert horizon.observe(12, {702}, now=0.3) == (True, False) and horizon.watermark == 12
    assert not horizon.pending
    # A bulk insert wakes everyone once its rows are settled.
    assert horizon.observe(20, {703}, now=0.4, wake_all=True) == (False, False)
    assert horizon.discard({703}) == (True, True) and horizon.watermark == 20


def test_snapshot_text_lists_the_transactions_in_progress() -> None:
    assert in_progress("754:760:754,757") == {754, 757}
    assert in_progress("760:760:") == set()


async def test_the_replay_is_two_index_range_scans_put_in_id_order(databases: DatabaseFactory) -> None:
    url = await databases.create(migrated=True)
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(
            "INSERT INTO users (username, username_key, password_hash) "
            "SELECT 'u' || g, 'u' || g, 'x' FROM generate_series(1, 100) g")
        await connection.execute("""
            INSERT INTO messages (sender_id, recipient_id, content)
            SELECT 1 + (g * 7919) % 100, 1 + (g * 104729) % 100, '{"type": "text", "text": "m"}'
            FROM generate_series(1, 20000) g""")
        await connection.execute("ANALYZE")
        plan = json.loads(await connection.fetchval(
            "EXPLAIN (FORMAT JSON) " + queries.stream.STREAM_PAGE, 17, 100, 20000, 101))[0]["Plan"]
        truth = await connection.fetch(
            "SELECT id FROM messages WHERE (recipient_id = 17 OR sender_id = 17) AND id > 100 "
            "ORDER BY id LIMIT 101")
        rows = await queries.stream.messages_for_stream(connection, 17, after=100, upto=20000, limit=101)
    finally:
        await connection.close()
    nodes, stack = [], [plan]
    while stack:
        node = stack.pop()
        nodes.append(node)
        stack.extend(node.get("Plans", []))
    scans = sorted((n["Index Name"], n["Index Cond"]) for n in nodes if "Index Name" in n)
    assert [name for name, _ in scans] == ["messages_recipient_id", "messages_sender_id"], nodes
    # Each branch an index range bounded at both ends (see STREAM_PAGE on why row comparisons), and
    # at most `limit` rows of each sorted by id; test_listing_skew.py counts the buffers.
    assert all("ROW(" in cond and ">= ROW(" in cond and "<= ROW(" in cond for _, cond in scans), scans
    allowed = {"Limit", "Merge Append", "Append", "Sort", "Subquery Scan", "Index Scan"}
    assert {n["Node Type"] for n in nodes} <= allowed, nodes
    assert [row["id"] for row in rows] == [row["id"] for row in truth]
