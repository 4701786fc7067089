"""The connection pool: what a connection costs the server when it goes back to the pool."""

from __future__ import annotations

import asyncpg


async def test_a_released_connection_sends_the_server_nothing(db: asyncpg.Pool, database_url: str) -> None:
    # asyncpg's default release runs a reset query, a second round trip on every request.
    async with db.acquire() as connection:
        backend = connection.get_server_pid()
        await connection.fetchval("SELECT 'the last statement before release'")
    observer = await asyncpg.connect(database_url)
    try:
        last = await observer.fetchval("SELECT query FROM pg_stat_activity WHERE pid = $1", backend)
    finally:
        await observer.close()
    assert last == "SELECT 'the last statement before release'"


async def test_a_transaction_left_open_is_still_rolled_back_on_release(
    db: asyncpg.Pool, database_url: str
) -> None:
    async with db.acquire() as connection:
        backend = connection.get_server_pid()
        await connection.transaction().start()
        await connection.execute("SELECT 1")
    observer = await asyncpg.connect(database_url)
    try:
        state = await observer.fetchval("SELECT state FROM pg_stat_activity WHERE pid = $1", backend)
    finally:
        await observer.close()
    assert state == "idle"
