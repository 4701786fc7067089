"""The connection pool: what a connection costs the server when it goes back to the pool."""

from __future__ import annotations

import asyncpg


async def test_a_released_connection_sends_the_server_nothing(db: asyncpg.Pool, database_url: str) -> None:
    # asyncpg's default release runs a reset query, a second round trip on every request.
    async with db.acquire() as connection:
        backend = connection.get_server_pid()
        await connection.fetchval("SELECT 'the last statement before release'")
    activity = await activity_of(database_url, backend)
    assert activity["query"] == "SELECT 'the last statement before release'"


async def test_a_transaction_left_open_is_still_rolled_back_on_release(
    db: asyncpg.Pool, database_url: str
) -> None:
    async with db.acquire() as connection:
        backend = connection.get_server_pid()
        await connection.transaction().start()
        await connection.execute("SELECT 1")
    activity = await activity_of(database_url, backend)
    assert activity["state"] == "idle"


async def activity_of(database_url: str, backend: int) -> asyncpg.Record:
    """The server's own view of a backend (pg_stat_activity), read through a connection of its own."""
    observer = await asyncpg.connect(database_url)
    try:
        row = await observer.fetchrow("SELECT state, query FROM pg_stat_activity WHERE pid = $1", backend)
    finally:
        await observer.close()
    assert row is not None, f"no backend {backend}"
    return row
