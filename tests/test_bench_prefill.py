"""The benchmark's prefill (chatsvc.bench.data) builds the conversation rows sql/0006 would build
for its messages: the bulk build is the migration's own statement, the whole small table equals
that statement's result, and the sampled check a large prefill runs catches a wrong row."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from chatsvc.bench.conversations import Shape, check_conversations
from chatsvc.bench.data import prefill
from chatsvc.queries.conversations import BUILD_FROM_MESSAGES
from chatsvc.testing import DatabaseFactory

MIGRATION = Path(__file__).resolve().parents[1] / "sql" / "0006_conversations.sql"
SHAPE = Shape(hubs=2, per_hub=100, pairs=1, pair_messages=400, back=300, hot=500)
ROWS = ("SELECT low_id, high_id, last_message_id, low_last_read, low_unread, high_last_read, high_unread "
        "FROM {} ORDER BY low_id, high_id")


def words(sql: str) -> str:
    return " ".join(re.sub(r"--[^\n]*", "", sql).split()).rstrip(";")


def test_the_bulk_build_is_the_migrations_backfill() -> None:
    statements = [words(s) for s in MIGRATION.read_text().split(";")]
    assert words(BUILD_FROM_MESSAGES) in statements


@pytest.fixture(scope="module")
async def prefilled(databases: DatabaseFactory) -> AsyncIterator[asyncpg.Connection]:
    data = await prefill(databases, "test_prefill", 300, 5000, 0, 10, SHAPE)
    connection = await asyncpg.connect(data.dsn)
    yield connection
    await connection.close()


async def test_every_conversation_row_is_what_the_migration_builds(prefilled: asyncpg.Connection) -> None:
    built = await prefilled.fetch(ROWS.format("conversations"))
    async with prefilled.transaction():
        await prefilled.execute("CREATE TEMPORARY TABLE migrated (LIKE conversations INCLUDING DEFAULTS)")
        await prefilled.execute(BUILD_FROM_MESSAGES.replace("INTO conversations", "INTO migrated"))
        migrated = await prefilled.fetch(ROWS.format("migrated"))
        await prefilled.execute("DROP TABLE migrated")
    assert len(built) > SHAPE.hubs * SHAPE.per_hub
    assert [tuple(row) for row in built] == [tuple(row) for row in migrated]
    indexes = {row["indexname"] for row in await prefilled.fetch(
        "SELECT indexname FROM pg_indexes WHERE tablename = 'conversations'")}
    assert indexes == {"conversations_pkey", "conversations_low_recent", "conversations_high_recent"}


@pytest.mark.parametrize("wrong", [
    "UPDATE conversations SET low_unread = low_unread + 1 WHERE ctid = (SELECT min(ctid) FROM conversations)",
    "UPDATE conversations SET last_message_id = last_message_id - 1",
    "DELETE FROM conversations WHERE ctid IN (SELECT ctid FROM conversations LIMIT 100)",
    "INSERT INTO users (id, username, username_key, password_hash) VALUES (1000, 'new', 'new', 'x');"
    "INSERT INTO conversations (low_id, high_id, last_message_id) VALUES (1, 1000, 1)",
])
async def test_the_sampled_check_finds_a_wrong_row(prefilled: asyncpg.Connection, wrong: str) -> None:
    total = await prefilled.fetchval("SELECT count(*) FROM conversations")
    assert await check_conversations(prefilled, total) > 0  # the whole small table: every row right
    transaction = prefilled.transaction()
    await transaction.start()
    try:
        await prefilled.execute(wrong)
        with pytest.raises(ValueError, match="differ from the backfill"):
            await check_conversations(prefilled, total + 1000)
    finally:
        await transaction.rollback()  # the next case starts from the prefilled state
