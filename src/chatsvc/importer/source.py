"""Reading an abatilo/chat database: its schema's SQL, read in one consistent snapshot."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg

# The original's tables, as its migrations made them: chat_user, message (typed by message_type)
# and one content table per type. A content table has no unique key on message_id, so the first
# row of each message is taken; none at all happens (the original ignored its insert errors).
USERS = "SELECT id, username, password FROM chat_user WHERE id > $1 ORDER BY id"
USER_COUNT = "SELECT count(*) FROM chat_user WHERE id > $1"
MESSAGES = """
SELECT m.id, m.created_at, m.sender_id, m.recipient_id, types.name AS type,
       texts.text, images.url AS image_url, images.width, images.height,
       videos.url AS video_url, sources.name AS video_source
FROM message AS m
LEFT JOIN message_type AS types ON types.id = m.message_type_id
LEFT JOIN (SELECT DISTINCT ON (message_id) message_id, text
           FROM text_message ORDER BY message_id, id) AS texts ON texts.message_id = m.id
LEFT JOIN (SELECT DISTINCT ON (message_id) message_id, url, width, height
           FROM image_message ORDER BY message_id, id) AS images ON images.message_id = m.id
LEFT JOIN (SELECT DISTINCT ON (message_id) message_id, url, source
           FROM video_message ORDER BY message_id, id) AS videos ON videos.message_id = m.id
LEFT JOIN video_source AS sources ON sources.id = videos.source
WHERE m.id > $1
ORDER BY m.id
"""
MESSAGE_COUNT = "SELECT count(*) FROM message WHERE id > $1"
# What names this source to a later run: the cluster and the database. pg_control_system() may be
# refused to a role without monitoring rights; the database name then stands alone.
IDENTITY = "SELECT current_database()"
SYSTEM_IDENTIFIER = "SELECT system_identifier::text FROM pg_control_system()"


class Snapshot:
    """A read-only, repeatable-read transaction on the original: every read sees one instant."""

    def __init__(self, connection: asyncpg.Connection, identity: str) -> None:
        self._connection = connection
        self.identity = identity

    @classmethod
    async def open(cls, dsn: str) -> Snapshot:
        connection = await asyncpg.connect(dsn)
        try:
            identity = await connection.fetchval(IDENTITY)
            try:
                cluster = await connection.fetchval(SYSTEM_IDENTIFIER)
            except asyncpg.InsufficientPrivilegeError:
                cluster = None
            await connection.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        except BaseException:
            await connection.close()
            raise
        return cls(connection, f"{cluster}/{identity}" if cluster else str(identity))

    async def close(self) -> None:
        await self._connection.close()

    async def count_users(self, after: int) -> int:
        return int(await self._connection.fetchval(USER_COUNT, after))

    async def count_messages(self, after: int) -> int:
        return int(await self._connection.fetchval(MESSAGE_COUNT, after))

    def users(self, after: int, batch: int) -> AsyncIterator[list[asyncpg.Record]]:
        return self._batches(USERS, after, batch)

    def messages(self, after: int, batch: int) -> AsyncIterator[list[asyncpg.Record]]:
        return self._batches(MESSAGES, after, batch)

    async def _batches(self, query: str, after: int, batch: int) -> AsyncIterator[list[asyncpg.Record]]:
        cursor = await self._connection.cursor(query, after)
        while rows := await cursor.fetch(batch):
            yield rows
