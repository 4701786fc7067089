"""Writing into chatsvc's database: COPY per batch, the import's progress beside it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from chatsvc.importer.assemble import Account

HOLDS_DATA = "SELECT EXISTS (SELECT FROM users) OR EXISTS (SELECT FROM messages)"
IMPORTS = "SELECT source, last_user_id, last_message_id FROM original_imports ORDER BY started_at"
BEGIN = "INSERT INTO original_imports (source) VALUES ($1) ON CONFLICT (source) DO NOTHING"
USERS_DONE = "UPDATE original_imports SET last_user_id = $2 WHERE source = $1"
MESSAGES_DONE = "UPDATE original_imports SET last_message_id = $2 WHERE source = $1"
FINISHED = "UPDATE original_imports SET finished_at = now() WHERE source = $1"

USER_COLUMNS = ("id", "username", "username_key", "username_skeleton", "legacy_key", "password_hash")
MESSAGE_COLUMNS = ("id", "created_at", "sender_id", "recipient_id", "content")

# The conversations of a batch of messages (ids $1), as the send statement keeps them
# (sql/0006_conversations.sql): the newest id, and the messages from the other side above each
# side's read marker counted unread.
CONVERSATIONS = """
WITH batch AS (
    SELECT least(sender_id, recipient_id) AS low_id, greatest(sender_id, recipient_id) AS high_id,
           id, sender_id, recipient_id
    FROM messages WHERE id = ANY($1::bigint[])
), totals AS (
    SELECT batch.low_id, batch.high_id, max(batch.id) AS last_message_id,
           count(*) FILTER (WHERE batch.sender_id > batch.recipient_id
                              AND batch.id > coalesce(c.low_last_read, 0)) AS low_unread,
           count(*) FILTER (WHERE batch.sender_id < batch.recipient_id
                              AND batch.id > coalesce(c.high_last_read, 0)) AS high_unread
    FROM batch LEFT JOIN conversations AS c ON c.low_id = batch.low_id AND c.high_id = batch.high_id
    GROUP BY batch.low_id, batch.high_id
)
INSERT INTO conversations AS c (low_id, high_id, last_message_id, low_unread, high_unread)
SELECT low_id, high_id, last_message_id, low_unread, high_unread FROM totals
ON CONFLICT (low_id, high_id) DO UPDATE SET
    last_message_id = greatest(c.last_message_id, excluded.last_message_id),
    low_unread = c.low_unread + excluded.low_unread,
    high_unread = c.high_unread + excluded.high_unread
"""

# New ids continue past the imported ones, whatever the sequences had reached.
SEQUENCES = """
SELECT setval(sequence, newest)
FROM (VALUES (pg_get_serial_sequence('users', 'id')::regclass, (SELECT max(id) FROM users)),
             (pg_get_serial_sequence('messages', 'id')::regclass, (SELECT max(id) FROM messages)))
     AS ids (sequence, newest)
WHERE newest > coalesce(pg_sequence_last_value(sequence), 0)
"""

# Accounts whose names look alike (case, width, confusable characters: the same TR39 skeleton).
LOOK_ALIKES = """
SELECT array_agg(username ORDER BY id) AS names FROM users
WHERE legacy_key AND username_skeleton IS NOT NULL
GROUP BY username_skeleton HAVING count(*) > 1
ORDER BY min(id) LIMIT $1
"""
SKIPPED = """
SELECT reason, count(*) AS count, (array_agg(message_id ORDER BY message_id))[1:$1] AS examples
FROM original_import_skipped GROUP BY reason ORDER BY count(*) DESC, reason
"""


class TargetHoldsData(Exception):
    """The database already holds users or messages that no import of this source put there."""


async def begin(connection: asyncpg.Connection, source: str, into_nonempty: bool) -> tuple[int, int]:
    """Record the import of `source` (or find the one a stopped run left); where to resume."""
    imports = await connection.fetch(IMPORTS)
    mine = [row for row in imports if row["source"] == source]
    if not mine:
        others = [row["source"] for row in imports]
        if not into_nonempty and (others or await connection.fetchval(HOLDS_DATA)):
            raise TargetHoldsData(
                "the database already holds users or messages"
                + (f" (imported from {', '.join(others)})" if others else "")
                + "; import into an empty one, or pass --into-nonempty if their ids cannot collide")
        await connection.execute(BEGIN, source)
        return 0, 0
    return int(mine[0]["last_user_id"]), int(mine[0]["last_message_id"])


async def copy_users(connection: asyncpg.Connection, source: str, accounts: Sequence[Account],
                     last_id: int) -> None:
    """One batch of accounts, and how far the import got, in one transaction."""
    async with connection.transaction():
        await connection.copy_records_to_table("users", columns=USER_COLUMNS, records=[
            (a.id, a.username, a.key, a.skeleton, True, a.password_hash) for a in accounts])
        await connection.execute(USERS_DONE, source, last_id)


async def copy_messages(connection: asyncpg.Connection, source: str,
                        messages: Sequence[tuple[int, datetime, int, int, str]],
                        skipped: Sequence[tuple[int, str]], last_id: int) -> None:
    """One batch of messages with their conversations, the skipped ones and the progress, at once."""
    async with connection.transaction():
        await connection.copy_records_to_table("messages", columns=MESSAGE_COLUMNS, records=messages)
        await connection.copy_records_to_table("original_import_skipped", records=skipped)
        await connection.execute(CONVERSATIONS, [message[0] for message in messages])
        await connection.execute(MESSAGES_DONE, source, last_id)


async def finish(connection: asyncpg.Connection, source: str) -> None:
    async with connection.transaction():
        await connection.execute(SEQUENCES)
        await connection.execute(FINISHED, source)


async def look_alikes(connection: asyncpg.Connection, limit: int) -> list[list[str]]:
    return [list(row["names"]) for row in await connection.fetch(LOOK_ALIKES, limit)]


async def skipped(connection: asyncpg.Connection, examples: int) -> list[tuple[str, int, list[int]]]:
    return [(row["reason"], row["count"], list(row["examples"]))
            for row in await connection.fetch(SKIPPED, examples)]
