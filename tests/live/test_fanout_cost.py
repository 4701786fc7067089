"""The fan-out's database work does not grow with the number of processes (chatsvc.fanout's doc):
a real `chatsvc serve` of 1 and of 8 workers on a cluster of this module's own with
pg_stat_statements loaded, which counts every statement whatever process sent it."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from chatsvc.bench.statements import PRELOAD
from chatsvc.devdb import PrivateCluster
from chatsvc.testing import DatabaseFactory, ServerProcess, make_users
from tests.live.streams import COMMON, QUIET, ids, open_stream, send

SENDS = 10
# The statements a look at the database sends (queries.stream): none may be caused by a message
# that no stream held by that process concerns.
FANOUT_PHRASES = ("pg_current_snapshot", "pg_locks", "UNION ALL", "WHERE id = ANY")
ANNOUNCE_PHRASE = "pg_notify"
COUNTS = """
SELECT query, calls FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND query NOT LIKE '%pg_stat_statements%'
"""
LISTENERS = ("SELECT count(*) FROM pg_stat_activity "
             "WHERE application_name = 'chatsvc-listener' AND datname = current_database()")


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivateCluster]:
    # Not under tmp_path, for the reasons tests/live/test_outage.py gives.
    root = Path(tempfile.mkdtemp(prefix="chatsvc-fanout-"))
    private = PrivateCluster(root, durable=False, settings=PRELOAD)
    try:
        private.start()
        yield private
    finally:
        private.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def statements(cluster: PrivateCluster) -> AsyncIterator[tuple[str, asyncpg.Connection]]:
    assert cluster.dsn is not None
    factory = DatabaseFactory(cluster.dsn, prefix="chatsvc_fanout")
    url = await factory.create(migrated=True)
    connection = await asyncpg.connect(url)
    try:
        await connection.execute("CREATE EXTENSION pg_stat_statements")
        yield url, connection
    finally:
        await connection.close()
        await factory.drop_all()


async def fanout_calls(connection: asyncpg.Connection) -> dict[str, int]:
    rows = await connection.fetch(COUNTS)
    return {row["query"]: row["calls"] for row in rows if any(p in row["query"] for p in FANOUT_PHRASES)}


async def announcements(connection: asyncpg.Connection) -> int:
    """Statements announcing new messages (chatsvc.announce), whatever process sent them."""
    return sum(row["calls"] for row in await connection.fetch(COUNTS) if ANNOUNCE_PHRASE in row["query"])


async def every_listener(connection: asyncpg.Connection, workers: int) -> None:
    """Return once each worker's listener is connected (it announces itself by nothing else)."""
    for _ in range(600):
        if await connection.fetchval(LISTENERS) >= workers:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {workers} listeners connected")


@pytest.mark.parametrize("workers", [1, 8])
async def test_a_send_costs_no_query_in_processes_holding_no_stream_it_concerns(
        statements: tuple[str, asyncpg.Connection], tmp_path: Path, workers: int) -> None:
    url, connection = statements
    settings = {**COMMON, "CHATSVC_WORKERS": str(workers),
                # No periodic look during the test: every look counted is one a send caused.
                "CHATSVC_HEALTH_INTERVAL": "300"}
    with ServerProcess(url, tmp_path / "server.log", **settings) as server:
        await every_listener(connection, workers)
        alice, bob, *others = await make_users(server, 6)
        async with open_stream(server, others[0]) as first, open_stream(server, others[1]), \
                open_stream(server, others[2]), open_stream(server, others[3]):
            # Streams of other users are held (by some of the workers), none of alice's or bob's.
            await connection.execute("SELECT pg_stat_statements_reset()")
            for n in range(SENDS):
                await send(server, bob, alice, f"unwatched {n}")
            await asyncio.sleep(QUIET)  # long enough for any look they would cause to have come
            assert await fanout_calls(connection) == {}
            # Only the sending process announces, at most once per send (fewer when batched).
            assert 1 <= await announcements(connection) <= SENDS
            # The counting sees looks: messages to a stream held here are looked for and delivered.
            sent = [await send(server, bob, others[0], f"watched {n}") for n in range(SENDS)]
            assert ids(await first.messages(SENDS)) == sent
            assert await fanout_calls(connection) != {}
