"""A database in abatilo/chat's schema, written the way the original wrote it, for the import's
tests and benchmark (chatsvc.importer reads such a database).

The schema follows the original's migrations; `OriginalDatabase` writes as the original's handlers
did: the `message` row first, then its content row, ignoring a failed content insert (a vimeo video
found no `video_source` row; an image wider than a smallint failed), so a message can have no
content at all.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg
import bcrypt

SCHEMA = """
CREATE TABLE chat_user (id bigserial PRIMARY KEY, username text UNIQUE NOT NULL, password text NOT NULL);
CREATE TABLE message_type (id smallserial PRIMARY KEY, name text UNIQUE);
INSERT INTO message_type (name) VALUES ('text'), ('image'), ('video');
CREATE TABLE message (
    id bigserial PRIMARY KEY,
    sender_id bigint REFERENCES chat_user (id),
    recipient_id bigint REFERENCES chat_user (id),
    message_type_id smallint REFERENCES message_type (id),
    created_at timestamptz DEFAULT now()
);
CREATE TABLE text_message (id bigserial PRIMARY KEY, message_id bigint REFERENCES message (id), text text);
CREATE TABLE image_message (
    id bigserial PRIMARY KEY, message_id bigint REFERENCES message (id), url text,
    width smallint DEFAULT 64, height smallint DEFAULT 64
);
CREATE TABLE video_source (id smallserial PRIMARY KEY, name text);
INSERT INTO video_source (name) VALUES ('youtube');
CREATE TABLE video_message (
    id bigserial PRIMARY KEY, message_id bigint REFERENCES message (id), url text,
    source smallint DEFAULT 1 REFERENCES video_source (id)
);
CREATE TABLE sessions (token text PRIMARY KEY, data bytea NOT NULL, expiry timestamptz NOT NULL);
"""

_TYPE_IDS = {"text": 1, "image": 2, "video": 3}
# Go's x/crypto/bcrypt as the original called it: cost 4, `$2a$`, the first 72 bytes.
BCRYPT_COST = 4
BCRYPT_MAX_BYTES = 72

# The bulk fill of the benchmark: users, then messages between them, a third of each type, every
# 50th one a video of a source the original could not store (no content row).
_BULK_USERS = """
INSERT INTO chat_user (username, password)
SELECT 'user' || n, $2 FROM generate_series(1, $1) AS n
"""
_BULK_MESSAGES = """
INSERT INTO message (sender_id, recipient_id, message_type_id, created_at)
SELECT 1 + (n * 7919) % $2, 1 + (n * 104729) % $2, 1 + n % 3,
       timestamptz '2024-01-01' + n * interval '1.000001 second'
FROM generate_series(1, $1::bigint) AS n
"""
_BULK_CONTENT = """
INSERT INTO text_message (message_id, text)
SELECT id, 'message ' || id FROM message WHERE message_type_id = 1;
INSERT INTO image_message (message_id, url, width, height)
SELECT id, 'https://example.com/' || id || '.png', 320, 240 FROM message WHERE message_type_id = 2;
INSERT INTO video_message (message_id, url)
SELECT id, 'https://youtu.be/' || id FROM message WHERE message_type_id = 3 AND id % 50 <> 0;
"""


def bcrypt_hash(password: str) -> str:
    """The hash the original stored for `password`."""
    salt = bcrypt.gensalt(rounds=BCRYPT_COST, prefix=b"2a")
    return bcrypt.hashpw(password.encode()[:BCRYPT_MAX_BYTES], salt).decode()


class OriginalDatabase:
    """Writes into a database holding the original's schema, as the original did."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self.connection = connection

    @classmethod
    async def create(cls, dsn: str) -> OriginalDatabase:
        connection = await asyncpg.connect(dsn)
        await connection.execute(SCHEMA)
        return cls(connection)

    async def close(self) -> None:
        await self.connection.close()

    async def user(self, username: str, password: str) -> int:
        return int(await self.connection.fetchval(
            "INSERT INTO chat_user (username, password) VALUES ($1, $2) RETURNING id",
            username, bcrypt_hash(password)))

    async def send(self, sender: int, recipient: int, kind: str, created_at: datetime,
                   **content: object) -> int:
        """A message as the original's POST /messages stored it; its content insert may find no row to
        write or fail, and the message stays (the original ignored the error and answered 201)."""
        message_id = int(await self.connection.fetchval(
            "INSERT INTO message (sender_id, recipient_id, message_type_id, created_at)"
            " VALUES ($1, $2, $3, $4) RETURNING id", sender, recipient, _TYPE_IDS[kind], created_at))
        try:
            if kind == "text":
                await self.connection.execute(
                    "INSERT INTO text_message (message_id, text) VALUES ($1, $2)",
                    message_id, content["text"])
            elif kind == "image":
                await self.connection.execute(
                    "INSERT INTO image_message (message_id, url, width, height)"
                    " VALUES ($1, $2, coalesce($3::int, 64), coalesce($4::int, 64))",
                    message_id, content["url"], content.get("width"), content.get("height"))
            else:
                await self.connection.execute(
                    "INSERT INTO video_message (message_id, url, source)"
                    " SELECT $1, $2, id FROM video_source WHERE name = $3",
                    message_id, content["url"], content["source"])
        except asyncpg.NumericValueOutOfRangeError:
            pass
        return message_id

    async def skip_ids(self, count: int) -> None:
        """Ids the sequence handed out to transactions that rolled back: gaps, as real databases have."""
        await self.connection.execute("SELECT nextval('message_id_seq') FROM generate_series(1, $1)", count)

    async def fill(self, users: int, messages: int) -> None:
        """`users` accounts (password "password") and `messages` messages between them, in bulk."""
        await self.connection.execute(_BULK_USERS, users, bcrypt_hash("password"))
        await self.connection.execute(_BULK_MESSAGES, messages, users)
        await self.connection.execute(_BULK_CONTENT)
