"""`make bench-import`: how long `chatsvc import-original` takes for an original's database of a
million messages (the IMPORT section of BENCHMARKS.md)."""

from __future__ import annotations

import asyncio
import io
import os
import time
from dataclasses import dataclass

import asyncpg

from chatsvc.bench.options import log
from chatsvc.importer import DEFAULT_BATCH, ImportOptions, import_original
from chatsvc.testing import DatabaseFactory
from chatsvc.testing.original import OriginalDatabase


@dataclass(frozen=True)
class ImportResult:
    users: int
    messages: int
    imported: int
    skipped: int
    fill_seconds: float
    import_seconds: float
    batch: int
    postgresql: str
    load: float

    @property
    def rate(self) -> float:
        return self.messages / self.import_seconds


def run_import_bench(server_dsn: str, users: int, messages: int) -> ImportResult:
    return asyncio.run(_run(server_dsn, users, messages))


async def _run(server_dsn: str, users: int, messages: int) -> ImportResult:
    databases = DatabaseFactory(server_dsn, prefix="chatsvc_bench_import")
    try:
        source = await databases.create()
        log(f"import: filling an original's database with {users:,} users and {messages:,} messages")
        started = time.monotonic()
        original = await OriginalDatabase.create(source)
        try:
            await original.fill(users, messages)
            await original.connection.execute("VACUUM ANALYZE")
            postgresql = str(await original.connection.fetchval("SHOW server_version"))
        finally:
            await original.close()
        filled = time.monotonic() - started
        target = await databases.create()
        log("import: chatsvc import-original")
        started = time.monotonic()
        summary = await import_original(ImportOptions(source, target), io.StringIO())
        took = time.monotonic() - started
        connection = await asyncpg.connect(target)
        try:
            imported = int(await connection.fetchval("SELECT count(*) FROM messages"))
        finally:
            await connection.close()
        return ImportResult(users, messages, imported, sum(summary.skipped_now.values()), filled, took,
                            DEFAULT_BATCH, postgresql, os.getloadavg()[1])
    finally:
        await databases.drop_all()
