"""The connection pool: what a connection costs the server when it goes back to the pool, and how
long a request waits for one."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from chatsvc.config import Settings
from chatsvc.db import create_pool


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


async def test_the_wait_for_a_connection_is_bounded_when_every_one_is_busy(settings: Settings) -> None:
    pool = await create_pool(settings.replace(db_pool_min=1, db_pool_max=1, db_timeout=0.3))
    try:
        async with pool.acquire():
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                async with pool.acquire():
                    pass
            assert 0.25 <= time.monotonic() - started < 5
    finally:
        await pool.close()


async def test_a_waiting_request_gets_the_connection_released_meanwhile(settings: Settings) -> None:
    pool = await create_pool(settings.replace(db_pool_min=1, db_pool_max=1, db_timeout=5))
    try:
        holder = pool.acquire()
        held = await holder.__aenter__()
        waiting = asyncio.create_task(pool.fetchval("SELECT 'served after the release'"))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        assert pool.get_idle_size() == 0
        await holder.__aexit__(None, None, None)
        assert await waiting == "served after the release"
        assert held is not None
    finally:
        await pool.close()
