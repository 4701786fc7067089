"""Sessions written straight into a database, for tests of statements below the HTTP layer."""

from __future__ import annotations

import secrets

import asyncpg

from chatsvc.config import SessionPolicy

POLICY = SessionPolicy(lifetime=3600.0, idle_timeout=3600.0, touch_interval=60.0)


async def session_for(pool: asyncpg.Pool, user_id: int) -> bytes:
    """The token hash of a new hour-long session of `user_id`."""
    token_hash = secrets.token_bytes(32)
    await pool.execute("INSERT INTO sessions (token_hash, user_id, expires_at) "
                       "VALUES ($1, $2, now() + interval '1 hour')", token_hash, user_id)
    return token_hash
