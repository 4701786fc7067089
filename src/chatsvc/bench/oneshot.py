"""One statement on a connection of its own, from the benchmark's synchronous code."""

from __future__ import annotations

import asyncio

import asyncpg


def fetch(dsn: str, sql: str, *args: object) -> list[asyncpg.Record]:
    """Run `sql` on a fresh connection to `dsn` (outside any event loop) and return its rows."""
    return asyncio.run(_fetch(dsn, sql, *args))


async def _fetch(dsn: str, sql: str, *args: object) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(dsn)
    try:
        return list(await connection.fetch(sql, *args))
    finally:
        await connection.close()
