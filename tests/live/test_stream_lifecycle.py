"""Live `GET /messages/stream` over a server's life: the per-user and per-process caps, the drain,
and a database restart under a held stream."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import asyncpg
import httpx
import pytest

from chatsvc.migrate import migrate
from chatsvc.testing import (
    ServerProcess,
    User,
    assert_error,
    make_users,
)
from tests.live.conftest import Launch
from tests.live.streams import (
    COMMON,
    ids,
    metric,
    open_stream,
    send,
)


@pytest.fixture
def server_settings() -> dict[str, str]:
    return COMMON


async def test_streams_past_the_per_user_and_per_process_caps_get_429(launch: Launch) -> None:
    server = await launch(CHATSVC_STREAM_MAX_PER_USER="2", CHATSVC_STREAM_MAX_PER_PROCESS="3")
    alice, bob, carol = await make_users(server, 3)

    async def refused(user: User) -> httpx.Response:
        """The answer to one more stream; a stream that opens is closed again at once."""
        async with httpx.AsyncClient(base_url=server.url, timeout=5) as client, \
                client.stream("GET", "/messages/stream", headers=user.auth) as response:
            if response.status_code != 200:
                await response.aread()
            return response

    async with contextlib.AsyncExitStack() as streams:
        first = await streams.enter_async_context(open_stream(server, alice))
        await streams.enter_async_context(open_stream(server, alice))
        per_user = await refused(alice)
        await streams.enter_async_context(open_stream(server, bob))
        per_process = await refused(carol)
        for response, words in ((per_user, "per user"), (per_process, "this server")):
            assert words in assert_error(response, 429, "rate_limited")
            assert response.headers["retry-after"] == "1"
        # Closing a stream frees its place.
        await first.response.aclose()
        deadline = time.monotonic() + 5
        while (response := await refused(carol)).status_code == 429:
            assert time.monotonic() < deadline, "a closed stream kept its place"
            await asyncio.sleep(0.05)
        assert response.status_code == 200


async def test_drain_ends_streams_with_a_shutdown_event_at_once(launch: Launch) -> None:
    drain_delay, shutdown_timeout = 2.0, 10.0
    server = await launch(CHATSVC_DRAIN_DELAY=str(drain_delay),
                          CHATSVC_SHUTDOWN_TIMEOUT=str(shutdown_timeout))
    alice, bob = await make_users(server, 2)
    async with open_stream(server, alice) as first, open_stream(server, bob) as second:
        signalled_at = time.monotonic()
        server.signal(signal.SIGTERM)
        for stream in (first, second):
            block = await stream.next(1)
            assert block is not None and block.fields.get("event") == "shutdown", block
            assert await stream.next(1) is None  # and the connection closes
        ended_after = time.monotonic() - signalled_at
        # A stream opened during the drain delay is told the same at once.
        async with open_stream(server, alice) as late:
            block = await late.next(1)
            assert block is not None and block.fields.get("event") == "shutdown", block
    try:
        code = await asyncio.to_thread(server.wait, drain_delay + 3)
    except subprocess.TimeoutExpired:
        pytest.fail(f"streams held the drain open:\n{server.log()[-3000:]}")
    exited_after = time.monotonic() - signalled_at
    assert ended_after < 0.5, f"streams ended only {ended_after:.2f} s after SIGTERM"
    assert code == 0
    # Nothing waited for the shutdown timeout: the process left right after the drain delay.
    assert exited_after < drain_delay + 1.5, exited_after


async def test_streams_resume_without_loss_after_a_database_restart(tmp_path: Path) -> None:
    from chatsvc.devdb import PrivateCluster

    # Not under tmp_path: when the tests run as root the cluster runs as another user, and any
    # pytest session that starts meanwhile takes the others' access to /tmp/pytest-of-<user> away.
    root = Path(tempfile.mkdtemp(prefix="chatsvc-stream-pg-"))
    cluster = PrivateCluster(root, durable=False)  # throwaway: speed over crash safety
    server = None
    try:
        dsn = await asyncio.to_thread(cluster.start)
        await migrate(dsn)
        server = ServerProcess(dsn, tmp_path / "serve.log", **COMMON, CHATSVC_HEALTH_INTERVAL="0.2",
                               CHATSVC_DB_POOL_MIN="1").start()
        alice, bob = await make_users(server, 2)
        reconnects = await metric(server, "chatsvc_stream_listener_reconnects_total")
        async with open_stream(server, alice) as stream:
            before = await send(server, bob, alice, "before the restart")
            assert ids(await stream.messages(1)) == [before]
            await asyncio.to_thread(cluster.stop)
            assert await asyncio.to_thread(cluster.start) == dsn
            # Stored the moment the database is back, while the listener is still backing off:
            # its notification is lost, and the stream must find it all the same.
            direct = await asyncpg.connect(dsn)
            try:
                after = [await direct.fetchval(
                    "INSERT INTO messages (sender_id, recipient_id, content) "
                    "VALUES ($1, $2, '{\"type\": \"text\", \"text\": \"direct\"}') RETURNING id",
                    bob.id, alice.id)]
            finally:
                await direct.close()
            deadline = time.monotonic() + 30
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
                while len(after) < 4:
                    assert time.monotonic() < deadline, server.log()[-3000:]
                    response = await client.post("/messages", headers=bob.auth, json={
                        "recipient": alice.id, "content": {"type": "text", "text": f"after {len(after)}"}})
                    if response.status_code == 201:
                        after.append(response.json()["id"])
                    else:
                        assert response.status_code == 503, response.text
                        await asyncio.sleep(0.05)
            try:
                assert ids(await stream.messages(4, timeout=15)) == after
            except BaseException:
                print("SERVER LOG", server.log()[-6000:])
                raise
            assert await stream.quiet() == []
        assert await metric(server, "chatsvc_stream_listener_reconnects_total") > reconnects
    finally:
        if server is not None:
            server.stop()
        await asyncio.to_thread(cluster.destroy)
        shutil.rmtree(root, ignore_errors=True)  # the cluster's files are gone, anything else here
