"""`make bench-send`: the variants of the send it measures do what their names say, and an index
dropped for a run comes back as it was."""

from __future__ import annotations

import asyncio
import hashlib

import asyncpg
import pytest

from chatsvc import queries
from chatsvc.bench.send_cost import _indexes_dropped, variants, without_bookkeeping
from chatsvc.testing import DatabaseFactory

TOKEN = hashlib.sha256(b"bench-send").digest()
CONTENT = '{"type": "text", "text": "hi"}'


async def _two_users_and_a_session(connection: asyncpg.Connection) -> tuple[int, int]:
    """A sender with a session of token TOKEN, and a recipient."""
    add_user = "INSERT INTO users (username, username_key, password_hash) VALUES ($1, $1, 'x') RETURNING id"
    sender = await connection.fetchval(add_user, "send-a")
    recipient = await connection.fetchval(add_user, "send-b")
    await connection.execute(queries.sessions.CREATE_SESSION, TOKEN, sender, 3600, None)
    return sender, recipient


async def _send(connection: asyncpg.Connection, statement: str, recipient: int) -> asyncpg.Record:
    row = await connection.fetchrow(statement, TOKEN, 3600, 60, recipient, CONTENT, None, None)
    assert row is not None and row["id"] is not None
    return row


async def test_each_variant_stores_the_message_and_only_the_bookkeeping_one_moves_no_conversation(
        databases: DatabaseFactory) -> None:
    connection = await asyncpg.connect(await databases.create(migrated=True))
    try:
        sender, recipient = await _two_users_and_a_session(connection)
        for variant in variants():
            sent = await _send(connection, variant.statement, recipient)
            moved = await connection.fetchval(
                "SELECT last_message_id FROM conversations WHERE low_id = $1 AND high_id = $2",
                min(sender, recipient), max(sender, recipient))
            keeps_books = variant.statement == queries.messages.SEND_MESSAGE
            assert (moved == sent["id"]) is keeps_books, variant.label
        assert await connection.fetchval("SELECT count(*) FROM messages") == len(variants())
    finally:
        await connection.close()


def test_taking_the_bookkeeping_away_leaves_the_rest_of_the_statement() -> None:
    shipped = queries.messages.SEND_MESSAGE
    stripped = without_bookkeeping(shipped)
    assert "conversations" not in stripped and "INSERT INTO messages" in stripped
    assert stripped.rstrip().endswith("FROM caller LEFT JOIN sent ON true")
    with pytest.raises(ValueError, match="upsert"):
        without_bookkeeping(stripped)


async def test_a_dropped_index_comes_back_as_it_was(databases: DatabaseFactory) -> None:
    dsn = await databases.create(migrated=True)
    names = ("conversations_low_recent", "messages_recipient_sender_id")
    query = "SELECT indexname, indexdef FROM pg_indexes WHERE indexname = ANY($1) ORDER BY 1"

    async def indexes() -> list[asyncpg.Record]:
        connection = await asyncpg.connect(dsn)
        try:
            return await connection.fetch(query, list(names))
        finally:
            await connection.close()

    def while_dropped() -> list[asyncpg.Record]:  # the bench runs it outside any event loop
        with _indexes_dropped(dsn, names):
            return asyncio.run(indexes())

    before = await indexes()
    assert len(before) == 2
    assert await asyncio.to_thread(while_dropped) == []
    assert await indexes() == before
