"""Database faults under a real `chatsvc serve` process: outages, slow statements, slow clients.

Each test runs against a PostgreSQL cluster of this module's own (chatsvc.devdb.PrivateCluster in
a temporary directory), never the suite's shared server, because it stops and starts it.

- An outage under light load: requests needing the database fail (503 `unavailable`, never a
  hang), `/check` turns 503 and `/healthz` stays 200; when PostgreSQL is back on the same socket the
  service recovers by itself, and every message answered 201 is stored, and nothing else except what
  a failed request stored and its idempotent retry then answered with that same row.
- A statement slower than `CHATSVC_DB_TIMEOUT` (a table lock held until the requests are answered)
  is a 503, not a hang; so is the wait for a connection when all of them are stuck.
- Slow uploads cannot hold the pool: the body is read before a connection is taken.

How fast each of these happens is measured and printed, never asserted: the machine may be loaded.

The figures measured are printed (run with `-rP` or `-s` to see them).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import unquote

import asyncpg
import httpx
import pytest

from chatsvc.devdb import PrivateCluster
from chatsvc.migrate import migrate
from chatsvc.testing import NO_RATE_LIMITS, QUIET_LOGS, ServerProcess, User, make_users
from tests.live.conftest import Launch
from tests.live.outage_requests import (
    CLIENT_TIMEOUT,
    LOAD_CLIENTS,
    Outcome,
    assert_unavailable,
    load,
    poll,
    report,
    text_message,
    timed,
)

DB_TIMEOUT = 1.0
HEALTH_INTERVAL = 0.2
# Waits for a change of state (/check turning, the recovery): only a hung server exceeds them.
HUNG = 60.0
SETTINGS = {
    "CHATSVC_DB_TIMEOUT": str(DB_TIMEOUT),
    "CHATSVC_HEALTH_INTERVAL": str(HEALTH_INTERVAL),
    **NO_RATE_LIMITS,
    **QUIET_LOGS,
}
WARMUP = 1.0
OUTAGE = 3.0


# --- the private cluster and servers on it ---------------------------------------------------

@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivateCluster]:
    """A cluster of this module's own, stopped and removed at the end.

    Not under pytest's tmp_path: PostgreSQL runs as another user when we are root, and a concurrent
    pytest run makes /tmp/pytest-of-<user> private again, or deletes an old run's directory, under
    a running cluster. A short path also keeps the socket in root/run, so a restarted cluster is
    where the server looks for it.
    """
    root = Path(tempfile.mkdtemp(prefix="chatsvc-outage-"))
    private = PrivateCluster(root, durable=False)  # throwaway: speed over crash safety
    try:
        private.start()
        assert private.dsn is not None and str(root / "run") in unquote(private.dsn), private.dsn
        yield private
    finally:
        private.destroy()
        shutil.rmtree(root, ignore_errors=True)  # the cluster's files are gone, anything else here


@pytest.fixture(scope="module")
async def dsn(cluster: PrivateCluster) -> str:
    assert cluster.dsn is not None
    await migrate(cluster.dsn)
    return cluster.dsn


@pytest.fixture
def server_settings() -> dict[str, str]:
    return SETTINGS


# --- an outage under load ---------------------------------------------------------------------

async def test_an_outage_fails_fast_recovers_by_itself_and_loses_nothing(
    cluster: PrivateCluster, dsn: str, launch: Launch
) -> None:
    server = await launch(database_url=dsn)
    pid = server.process.pid
    users = await make_users(server, LOAD_CLIENTS, timeout=CLIENT_TIMEOUT)
    stop = asyncio.Event()
    outcomes: list[Outcome] = []
    loaders = [asyncio.create_task(load(server, user, users[(i + 1) % len(users)], stop, outcomes))
               for i, user in enumerate(users)]
    public = httpx.AsyncClient(base_url=server.url, timeout=CLIENT_TIMEOUT)
    admin = httpx.AsyncClient(base_url=server.admin_url, timeout=CLIENT_TIMEOUT)
    check_watch: asyncio.Task | None = None
    try:
        await asyncio.sleep(WARMUP)
        assert any(o.status == 201 for o in outcomes), outcomes[:5]
        assert (await public.get("/check")).status_code == 200

        stop_called = time.monotonic()
        # /check is watched from the moment the stop begins: PostgreSQL refuses work before pg_ctl returns.
        check_watch = asyncio.create_task(
            poll(public, "/check", lambda status: status == 503, HUNG))
        await asyncio.to_thread(cluster.stop)  # pg_ctl stop -m fast
        down = time.monotonic()
        check_elapsed, _ = await asyncio.wait_for(check_watch, HUNG + CLIENT_TIMEOUT)
        check_turned = None if check_elapsed is None else stop_called + check_elapsed
        readyz = await admin.get("/readyz")
        liveness = []
        while time.monotonic() - down < OUTAGE:
            liveness.append((await admin.get("/healthz")).status_code)
            await asyncio.sleep(0.1)

        start_called = time.monotonic()
        restarted_dsn = await asyncio.to_thread(cluster.start)
        up = time.monotonic()
        assert restarted_dsn == dsn, "the cluster came back elsewhere: the server cannot follow it"
        recovered = None
        while recovered is None and time.monotonic() - up <= HUNG:
            recovered = min((o.finished for o in outcomes if o.method == "POST" and o.status == 201
                             and o.finished > start_called), default=None)
            await asyncio.sleep(0.02)
        check_back, _ = await poll(public, "/check", lambda status: status == 200, HUNG)
        await asyncio.sleep(0.5)  # some load after the recovery too
    finally:
        stop.set()
        if check_watch is not None:
            check_watch.cancel()
            await asyncio.gather(check_watch, return_exceptions=True)
        crashed = [r for r in await asyncio.gather(*loaders, return_exceptions=True) if r is not None]
        await public.aclose()
        await admin.aclose()
        if cluster.url() is None:
            cluster.start()  # for the next test, whatever failed here

    assert not crashed, crashed
    # The server process lived through it.
    assert server.process.poll() is None and server.process.pid == pid, server.log()[-3000:]
    assert check_turned is not None, f"/check did not turn 503 within {HUNG} s of PostgreSQL stopping"
    assert (readyz.status_code, readyz.text) == (503, '{"status":"unavailable","reason":"database"}'), (
        readyz.text, server.log()[-3000:])
    assert liveness and set(liveness) == {200}, liveness
    assert recovered is not None, f"no 201 within {HUNG} s of PostgreSQL's restart"
    recovery = max(0.0, recovered - up)
    assert check_back is not None, f"/check did not turn 200 again within {HUNG} s"

    # Every request got an answer: a success, or a fast 503 in the envelope.
    unanswered = [o for o in outcomes if o.status is None]
    assert not unanswered, unanswered[:5]
    assert {o.status for o in outcomes} <= {200, 201, 503}, [o for o in outcomes if o.status not in
                                                              (200, 201, 503)][:5]
    failed = [o for o in outcomes if o.status == 503]
    for outcome in failed:
        assert_unavailable(outcome)
    max_503 = max(o.latency for o in failed)
    during = [o for o in outcomes if o.started >= down and o.finished <= start_called]
    assert during, "no request was made while PostgreSQL was down"
    assert all(o.status == 503 for o in during), [o for o in during if o.status != 503][:5]

    messages_checked, stored_then_retried = await assert_nothing_lost(server, dsn, users, outcomes)
    report("outage", {
        "outage_s": f"{start_called - stop_called:.2f}",
        "requests": len(outcomes),
        "requests_during_outage": len(during),
        "503": len(failed),
        "max_503_latency_s": f"{max_503:.3f}",
        "postgres_stop_s": f"{down - stop_called:.2f}",
        "check_503_after_stop_began_s": f"{check_turned - stop_called:.3f}",
        "postgres_restart_s": f"{up - start_called:.2f}",
        "first_201_after_restart_began_s": f"{recovered - start_called:.3f}",
        "recovery_after_postgres_up_s": f"{recovery:.3f}",
        "messages_checked": messages_checked,
        "failed_posts_stored_anyway": stored_then_retried,
    })


async def assert_nothing_lost(server: ServerProcess, dsn: str, users: list[User],
                              outcomes: list[Outcome]) -> tuple[int, int]:
    """Every 201 is stored; nothing else is, but what a failed POST stored and its retry returns.

    Returns the number of messages checked and of failed POSTs that had been stored all the same.
    """
    posts = [o for o in outcomes if o.method == "POST"]
    acknowledged = {o.key: o.body["id"] for o in posts if o.status == 201}
    failed = [o for o in posts if o.status != 201]
    senders = [user.id for user in users]
    connection = await asyncpg.connect(dsn)
    try:
        rows = {row["idempotency_key"]: (row["id"], row["sender_id"]) for row in await connection.fetch(
            "SELECT id, sender_id, idempotency_key FROM messages WHERE sender_id = ANY($1)", senders)}
        assert len(rows) == len(await connection.fetch(
            "SELECT 1 FROM messages WHERE sender_id = ANY($1)", senders)), "a message without its key"
        missing = {key: id_ for key, id_ in acknowledged.items() if rows.get(key, (None,))[0] != id_}
        assert not missing, f"answered 201 but not stored: {missing}"
        failed_keys = {o.key for o in failed}
        unexplained = set(rows) - set(acknowledged) - failed_keys
        assert not unexplained, f"stored without a 201 or a failed request: {unexplained}"
        stored_anyway = {key: rows[key][0] for key in failed_keys if key in rows}

        # Every failed POST, retried with its own key, ends as exactly one row: the one it answers.
        tokens = {user.id: user.auth for user in users}
        async with httpx.AsyncClient(base_url=server.url, timeout=CLIENT_TIMEOUT) as client:
            for outcome in failed:
                retry = await client.post("/messages", json=outcome.message,
                                          headers={**tokens[outcome.sender], "Idempotency-Key": outcome.key})
                assert retry.status_code == 201, retry.text
                stored = await connection.fetch(
                    "SELECT id FROM messages WHERE sender_id = $1 AND idempotency_key = $2",
                    outcome.sender, outcome.key)
                assert [row["id"] for row in stored] == [retry.json()["id"]], (outcome, stored)
                if outcome.key in stored_anyway:
                    assert retry.json()["id"] == stored_anyway[outcome.key]
        total = await connection.fetchval("SELECT count(*) FROM messages WHERE sender_id = ANY($1)", senders)
        assert total == len(acknowledged) + len(failed)
    finally:
        await connection.close()
    return len(acknowledged) + len(failed), len(stored_anyway)


# --- a statement slower than the timeout ------------------------------------------------------

@contextlib.asynccontextmanager
async def messages_locked(dsn: str) -> AsyncIterator[None]:
    """`messages` held in ACCESS EXCLUSIVE mode by another session until the block ends."""
    connection = await asyncpg.connect(dsn)
    try:
        async with connection.transaction():
            await connection.execute("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
            yield
    finally:
        await connection.close()


async def test_a_statement_over_the_db_timeout_is_503_in_time_and_the_server_is_fine_after(
    dsn: str, launch: Launch
) -> None:
    server = await launch(database_url=dsn)
    [alice, bob] = await make_users(server, 2, timeout=CLIENT_TIMEOUT)
    key = f"locked-{secrets.token_hex(6)}"
    message = text_message(bob.id, "while locked")
    async with httpx.AsyncClient(base_url=server.url, headers=alice.auth, timeout=CLIENT_TIMEOUT) as client:
        async with messages_locked(dsn):
            blocked = await timed(client, alice, "POST", "/messages", key=key, message=message)
            listing = await timed(client, alice, "GET", "/messages", params={"recipient": alice.id})
        # Answered while the lock is still held: without the statement timeout, only the client's
        # own timeout (no status) would have ended them.
        assert_unavailable(blocked)
        assert_unavailable(listing)

        retry = await client.post("/messages", json=message, headers={"Idempotency-Key": key})
        assert retry.status_code == 201, retry.text
        assert (await client.get("/check")).text == "ok"
        listed = await client.get("/messages", params={"recipient": bob.id}, headers=bob.auth)
        assert [m["id"] for m in listed.json()["messages"]] == [retry.json()["id"]]
    report("statement timeout", {"post_503_latency_s": f"{blocked.latency:.3f}",
                                 "get_503_latency_s": f"{listing.latency:.3f}"})


# Queued behind one another on 2 connections, they would take QUEUED / 2 statement timeouts.
QUEUED = 2 * round(CLIENT_TIMEOUT / DB_TIMEOUT) + 4


async def test_more_slow_statements_than_connections_all_fail_fast(dsn: str, launch: Launch) -> None:
    """With every connection stuck behind a lock, a request waits no longer for a connection either.

    More requests than the client's timeout could see served one statement timeout after another on
    the pool's connections: each is answered 503 only if the wait for a connection is bounded too.
    """
    server = await launch(database_url=dsn, CHATSVC_DB_POOL_MAX="2", CHATSVC_DB_POOL_MIN="1")
    [alice] = await make_users(server, 1, timeout=CLIENT_TIMEOUT)
    async with httpx.AsyncClient(base_url=server.url, headers=alice.auth, timeout=CLIENT_TIMEOUT) as client:
        async with messages_locked(dsn):
            outcomes = await asyncio.gather(*(
                timed(client, alice, "POST", "/messages", message=text_message(alice.id, f"queued {n}"))
                for n in range(QUEUED)))
        for outcome in outcomes:
            assert_unavailable(outcome)
        latencies = sorted(round(o.latency, 3) for o in outcomes)
        after = await client.post("/messages", json=text_message(alice.id, "after"))
        assert after.status_code == 201, after.text
    report(f"{QUEUED} slow statements on 2 connections", {"503_latencies_s": latencies})


# --- slow clients cannot hold the pool --------------------------------------------------------

SLOW_CLIENTS = 20
SLOW_UPLOAD = 5.0  # well past DB_TIMEOUT: a pool held by the uploads would show as 503s
SLOW_PIECES = 25


async def slow_post(server: ServerProcess, user: User, recipient: int, n: int) -> tuple[int, float]:
    """POST /messages with a Content-Length, its body sent in pieces over SLOW_UPLOAD; (status, end)."""
    body = (b'{"recipient": %d, "content": {"type": "text", "text": "slow %d"}}' % (recipient, n))
    body = body[:-1] + b" " * 100 + b"}"
    head = (f"POST /messages HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {user.token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(head.encode())
        size = -(-len(body) // SLOW_PIECES)
        for offset in range(0, len(body), size):
            writer.write(body[offset:offset + size])
            await writer.drain()
            await asyncio.sleep(SLOW_UPLOAD / SLOW_PIECES)
        status_line = await asyncio.wait_for(reader.readline(), CLIENT_TIMEOUT)
        await reader.read()
        return int(status_line.split()[1]), time.monotonic()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def test_slow_uploads_do_not_hold_the_pool(dsn: str, launch: Launch) -> None:
    server = await launch(database_url=dsn, CHATSVC_DB_POOL_MAX="2", CHATSVC_DB_POOL_MIN="1",
                          CHATSVC_READ_TIMEOUT="30")
    [slow, quick, recipient] = await make_users(server, 3, timeout=CLIENT_TIMEOUT)
    uploads = [asyncio.create_task(slow_post(server, slow, recipient.id, n)) for n in range(SLOW_CLIENTS)]
    outcomes: list[Outcome] = []
    async with httpx.AsyncClient(base_url=server.url, headers=quick.auth, timeout=CLIENT_TIMEOUT) as client:
        await asyncio.sleep(0.5)  # every upload has started
        deadline = time.monotonic() + SLOW_UPLOAD - 1.5
        n = 0
        while time.monotonic() < deadline and not any(upload.done() for upload in uploads):
            outcomes.append(await timed(client, quick, "POST", "/messages",
                                        message=text_message(recipient.id, f"quick {n}")))
            outcomes.append(await timed(client, quick, "GET", "/messages",
                                        params={"recipient": quick.id}))
            n += 1
        others_done = time.monotonic()
        check = await client.get("/check")
    results = await asyncio.gather(*uploads)

    assert [o.status for o in outcomes] == [201, 200] * n, [o for o in outcomes if o.status not in (200, 201)]
    max_latency = max(o.latency for o in outcomes)
    assert check.text == "ok"
    # The uploads were all still running while the other client was served, and then succeeded.
    assert all(status == 201 for status, _ in results), results
    uploading_until = min(end for _, end in results)
    assert [o for o in outcomes if o.finished < uploading_until], (uploading_until, others_done)
    connection = await asyncpg.connect(dsn)
    try:
        stored = await connection.fetchval("SELECT count(*) FROM messages WHERE sender_id = $1", slow.id)
    finally:
        await connection.close()
    assert stored == SLOW_CLIENTS
    report("slow uploads", {"slow_clients": SLOW_CLIENTS, "pool_max": 2, "other_requests": len(outcomes),
                            "other_max_latency_s": f"{max_latency:.3f}"})
