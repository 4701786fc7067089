"""The SQL of chatsvc, as named constants beside the thin functions that run them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

# A session is valid while neither its absolute nor its idle expiry has passed.
# The idle clock is written only when it is older than the touch interval, so
# a busy client does not turn every read into a write.
AUTHENTICATE = """
WITH session AS (
    SELECT user_id FROM sessions
    WHERE token_hash = $1
      AND expires_at > now()
      AND last_seen_at > now() - make_interval(secs => $2)
), touch AS (
    UPDATE sessions SET last_seen_at = now()
    WHERE token_hash = $1
      AND last_seen_at < now() - make_interval(secs => $3)
      AND EXISTS (SELECT FROM session)
)
SELECT user_id FROM session
"""

CREATE_USER = """
INSERT INTO users (username, username_key, password_hash) VALUES ($1, $2, $3)
ON CONFLICT (username_key) DO NOTHING
RETURNING id
"""

USER_FOR_LOGIN = "SELECT id, password_hash FROM users WHERE username_key = $1"

# Guarded by the old hash so two concurrent logins cannot undo each other's upgrade.
REPLACE_PASSWORD_HASH = "UPDATE users SET password_hash = $3 WHERE id = $1 AND password_hash = $2"  # noqa: S105

CREATE_SESSION = """
INSERT INTO sessions (token_hash, user_id, expires_at)
VALUES ($1, $2, now() + make_interval(secs => $3))
"""

REVOKE_SESSION = "DELETE FROM sessions WHERE token_hash = $1"

CREATE_MESSAGE = """
INSERT INTO messages (sender_id, recipient_id, content, idempotency_key)
VALUES ($1, $2, $3, $4)
ON CONFLICT (sender_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id, created_at
"""

MESSAGE_BY_IDEMPOTENCY_KEY = """
SELECT id, created_at, recipient_id, content FROM messages
WHERE sender_id = $1 AND idempotency_key = $2
"""

INBOX_PAGE = """
SELECT id, created_at, sender_id, recipient_id, content FROM messages
WHERE recipient_id = $1 AND id >= $2
ORDER BY id
LIMIT $3
"""

SENT_TO_RECIPIENT_PAGE = """
SELECT id, created_at, sender_id, recipient_id, content FROM messages
WHERE recipient_id = $1 AND sender_id = $2 AND id >= $3
ORDER BY id
LIMIT $4
"""


@dataclass(frozen=True, slots=True)
class CreatedMessage:
    id: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class IdempotentOriginal:
    id: int
    created_at: datetime
    recipient_id: int
    content: str


async def user_for_token(
    db: asyncpg.Pool, token_hash: bytes, idle_timeout: float, touch_interval: float
) -> int | None:
    """The id of the user holding a valid session, refreshing its idle clock now and then."""
    return await db.fetchval(AUTHENTICATE, token_hash, idle_timeout, touch_interval)


async def create_user(db: asyncpg.Pool, username: str, key: str, password_hash: str) -> int | None:
    """The new user's id, or None when the name is taken."""
    return await db.fetchval(CREATE_USER, username, key, password_hash)


async def user_for_login(db: asyncpg.Pool, key: str) -> asyncpg.Record | None:
    return await db.fetchrow(USER_FOR_LOGIN, key)


async def replace_password_hash(db: asyncpg.Pool, user_id: int, old: str, new: str) -> None:
    await db.execute(REPLACE_PASSWORD_HASH, user_id, old, new)


async def create_session(db: asyncpg.Pool, token_hash: bytes, user_id: int, lifetime: float) -> None:
    await db.execute(CREATE_SESSION, token_hash, user_id, lifetime)


async def revoke_session(db: asyncpg.Pool, token_hash: bytes) -> None:
    await db.execute(REVOKE_SESSION, token_hash)


async def create_message(
    db: asyncpg.Pool, sender: int, recipient: int, content: str, idempotency_key: str | None
) -> CreatedMessage | None:
    """The stored message, or None when this sender already used `idempotency_key`."""
    row = await db.fetchrow(CREATE_MESSAGE, sender, recipient, content, idempotency_key)
    return None if row is None else CreatedMessage(row["id"], row["created_at"])


async def message_by_idempotency_key(
    db: asyncpg.Pool, sender: int, idempotency_key: str
) -> IdempotentOriginal | None:
    row = await db.fetchrow(MESSAGE_BY_IDEMPOTENCY_KEY, sender, idempotency_key)
    return None if row is None else IdempotentOriginal(*row)


async def messages_for_recipient(
    db: asyncpg.Pool, recipient: int, start: int, limit: int, only_from: int | None
) -> list[asyncpg.Record]:
    """Up to `limit` messages to `recipient` from id `start`, all of them or those of one sender."""
    if only_from is None:
        return await db.fetch(INBOX_PAGE, recipient, start, limit)
    return await db.fetch(SENT_TO_RECIPIENT_PAGE, recipient, only_from, start, limit)
