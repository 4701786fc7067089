"""Expired sessions are deleted in the background by a real server, in batches, one replica at a time."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

import asyncpg

from chatsvc.queries.sessions import ADVISORY_LOCK_KEY
from chatsvc.testing import NO_RATE_LIMITS, DatabaseFactory, ServerProcess, make_users

EXPIRED = 25
BATCH = 4


async def count_expired(connection: asyncpg.Connection) -> int:
    return await connection.fetchval("SELECT count(*) FROM sessions WHERE expires_at < now()")


async def wait_for(connection: asyncpg.Connection, expired: int, timeout: float = 20) -> int:
    """The count of expired sessions once it is `expired`, or when `timeout` has passed."""
    deadline = time.monotonic() + timeout
    left = await count_expired(connection)
    while left != expired and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        left = await count_expired(connection)
    return left


async def test_expired_sessions_are_deleted_in_batches_under_the_lock(
        databases: DatabaseFactory, tmp_path: Path) -> None:
    url = await databases.create(migrated=True)
    settings = {"CHATSVC_SESSION_CLEANUP_INTERVAL": "0.2", "CHATSVC_SESSION_CLEANUP_BATCH": str(BATCH),
                **NO_RATE_LIMITS}
    connection = await asyncpg.connect(url)
    try:
        # Held by "another replica": nothing is deleted while it is.
        await connection.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
        with ServerProcess(url, tmp_path / "serve.log", **settings) as server:
            (alice,) = await make_users(server, 1)
            await connection.executemany(
                "INSERT INTO sessions (token_hash, user_id, expires_at)"
                " VALUES ($1, $2, now() - interval '1 s')",
                [(secrets.token_bytes(32), alice.id) for _ in range(EXPIRED)])
            assert await wait_for(connection, 0, timeout=1.5) == EXPIRED
            await connection.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)
            assert await wait_for(connection, 0) == 0
            # The live session stays.
            live = await connection.fetchval("SELECT count(*) FROM sessions WHERE user_id = $1", alice.id)
            assert live == 1
            assert "deleted expired sessions" in server.log()
    finally:
        await connection.close()
