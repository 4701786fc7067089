"""`GET /messages/stream` against real `chatsvc serve` processes: fan-out across processes through
LISTEN/NOTIFY, lossless resume, out-of-order commits, slow readers, caps, heartbeats, the drain,
and a database restart under a held stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import pytest

from chatsvc.migrate import migrate
from chatsvc.testing import (
    NO_RATE_LIMITS,
    QUIET_LOGS,
    DatabaseFactory,
    ServerProcess,
    User,
    assert_error,
    make_users,
)
from tests.live.conftest import Launch

HEARTBEAT = 0.3
# Streams must outlive it: it bounds a request body's arrival, not a response's length.
READ_TIMEOUT = 1
BUFFER = 4
BIG_TEXT_CHARS = 200_000
COMMON = {
    **NO_RATE_LIMITS,
    **QUIET_LOGS,
    "CHATSVC_DRAIN_DELAY": "0",
    "CHATSVC_READ_TIMEOUT": str(READ_TIMEOUT),
}
PAIR_SETTINGS = {
    **COMMON,
    "CHATSVC_STREAM_HEARTBEAT": str(HEARTBEAT),
    "CHATSVC_STREAM_BUFFER": str(BUFFER),
    "CHATSVC_MAX_TEXT_CHARS": str(BIG_TEXT_CHARS),
    "CHATSVC_MAX_BODY_BYTES": str(2 * BIG_TEXT_CHARS),
}
# Long enough for any event that is coming to have come.
QUIET = 0.6


# ------------------------------------------------------------------ an SSE client


@dataclass
class Block:
    """One SSE block: its fields (`id`, `event`, `data`, `retry`) and its comment lines."""

    fields: dict[str, str] = field(default_factory=dict)
    comments: list[str] = field(default_factory=list)

    @property
    def message_id(self) -> int | None:
        return int(self.fields["id"]) if self.fields.get("event") == "message" else None

    def json(self) -> object:
        return json.loads(self.fields["data"])


def parse_blocks(data: bytes) -> tuple[list[Block], bytes]:
    """The complete blocks in `data`, and what is left after the last one."""
    *complete, rest = data.split(b"\n\n")
    blocks = []
    for raw in complete:
        block = Block()
        for line in raw.decode().split("\n"):
            if line.startswith(":"):
                block.comments.append(line[1:].strip())
            else:
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                block.fields[name] = block.fields[name] + "\n" + value if name in block.fields else value
        blocks.append(block)
    return blocks, rest


class EventReader:
    """Blocks of one open stream, in arrival order.

    A task reads the response into a queue: a timeout must never cancel the read itself, which
    would close httpx's byte iterator and with it the stream.
    """

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._blocks: asyncio.Queue[Block | None] = asyncio.Queue()
        self._pump = asyncio.create_task(self._read())
        self.ended = False

    async def _read(self) -> None:
        rest = b""
        try:
            async for chunk in self.response.aiter_raw():
                blocks, rest = parse_blocks(rest + chunk)
                for block in blocks:
                    self._blocks.put_nowait(block)
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.StreamClosed):
            pass
        finally:
            self._blocks.put_nowait(None)

    async def close(self) -> None:
        self._pump.cancel()
        await asyncio.gather(self._pump, return_exceptions=True)

    async def next(self, timeout: float) -> Block | None:
        """The next block; None at the end of the stream; TimeoutError if none comes in time."""
        if self.ended:
            return None
        async with asyncio.timeout(timeout):
            block = await self._blocks.get()
        self.ended = block is None
        return block

    async def messages(self, count: int, timeout: float = 10) -> list[Block]:
        """The next `count` message events, skipping comments."""
        found: list[Block] = []
        deadline = time.monotonic() + timeout
        while len(found) < count:
            block = await self.next(max(0.01, deadline - time.monotonic()))
            assert block is not None, f"the stream ended after {[b.message_id for b in found]}"
            if block.message_id is not None:
                found.append(block)
        return found

    async def quiet(self, seconds: float = QUIET) -> list[Block]:
        """Everything but comments that arrives within `seconds`: none, when all is well."""
        seen: list[Block] = []
        deadline = time.monotonic() + seconds
        with contextlib.suppress(TimeoutError):
            while (left := deadline - time.monotonic()) > 0:
                block = await self.next(left)
                if block is None:
                    break
                if block.fields:
                    seen.append(block)
        return seen


@contextlib.asynccontextmanager
async def open_stream(server: ServerProcess, user: User, *, last_event_id: int | None = None,
                      since: int | None = None) -> AsyncIterator[EventReader]:
    """A stream subscribed by the time it is yielded (its preamble has arrived)."""
    headers = dict(user.auth)
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    params = {} if since is None else {"since": since}
    async with httpx.AsyncClient(base_url=server.url, timeout=httpx.Timeout(10, read=None)) as client, \
            client.stream("GET", "/messages/stream", headers=headers, params=params) as response:
        assert response.status_code == 200, (await response.aread()).decode()
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-accel-buffering"] == "no"
        reader = EventReader(response)
        try:
            preamble = await reader.next(10)
            assert preamble is not None and preamble.fields == {"retry": "1000"}, preamble
            yield reader
        finally:
            await reader.close()


async def send(server: ServerProcess, sender: User, recipient: User, text: str) -> int:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        response = await client.post("/messages", headers=sender.auth, json={
            "recipient": recipient.id, "content": {"type": "text", "text": text}})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def ids(blocks: list[Block]) -> list[int]:
    return [block.message_id for block in blocks if block.message_id is not None]


async def metric(server: ServerProcess, name: str) -> float:
    """A sample of the server's Prometheus text (0 when absent)."""
    async with httpx.AsyncClient(timeout=5) as client:
        text = (await client.get(server.admin_url + "/metrics")).text
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


# ------------------------------------------------------------------ servers


@dataclass
class Pair:
    a: ServerProcess
    b: ServerProcess
    url: str


@pytest.fixture(scope="module")
async def pair(databases: DatabaseFactory, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Pair]:
    """Two `chatsvc serve` processes on one fresh migrated database."""
    url = await databases.create(migrated=True)
    logs = tmp_path_factory.mktemp("stream")
    a = ServerProcess(url, logs / "a.log", **PAIR_SETTINGS)
    b = ServerProcess(url, logs / "b.log", **PAIR_SETTINGS)
    with a, b:
        yield Pair(a, b, url)


@pytest.fixture
def server_settings() -> dict[str, str]:
    return COMMON


# ------------------------------------------------------------------ delivery


async def test_a_message_posted_to_one_process_arrives_on_a_stream_held_by_the_other(pair: Pair) -> None:
    alice, bob, carol = await make_users(pair.a, 3)
    async with open_stream(pair.b, alice) as alices, open_stream(pair.b, bob) as bobs, \
            open_stream(pair.b, carol) as carols:
        sent = await send(pair.a, bob, alice, "hello across processes")
        (event,) = await alices.messages(1)
        # The sender's own stream carries it too (a second device of the same user).
        (echo,) = await bobs.messages(1)
        async with httpx.AsyncClient(base_url=pair.a.url) as client:
            listing = (await client.get("/messages", headers=alice.auth,
                                        params={"recipient": alice.id})).json()
        assert event.fields["id"] == str(sent) and event.fields["event"] == "message"
        # `data` is the message exactly as the listing shows it.
        assert event.json() == listing["messages"][0] == echo.json()
        assert event.json()["content"] == {"type": "text", "text": "hello across processes"}
        # Carol's stream carries none of it: her first event is her own message.
        to_carol = await send(pair.a, bob, carol, "for carol")
        assert ids(await carols.messages(1)) == [to_carol]


@pytest.mark.parametrize("resume", ["Last-Event-ID", "since", "both"])
async def test_resume_after_a_forced_disconnect_replays_exactly_the_missed_messages(
        pair: Pair, resume: str) -> None:
    alice, bob = await make_users(pair.a, 2)
    async with open_stream(pair.b, alice) as stream:
        first = [await send(pair.a, bob, alice, f"m{n}") for n in (1, 2)]
        assert ids(await stream.messages(2)) == first
    # Disconnected: two messages to alice and one she sends (it is hers to see, too).
    missed = [await send(pair.a, bob, alice, "m3"), await send(pair.b, alice, bob, "m4"),
              await send(pair.a, bob, alice, "m5")]
    options = {"Last-Event-ID": {"last_event_id": first[-1]}, "since": {"since": first[-1]},
               # The header is what a reconnecting EventSource sends: it wins over the URL's since.
               "both": {"last_event_id": first[-1], "since": 0}}[resume]
    async with open_stream(pair.a, alice, **options) as stream:
        assert ids(await stream.messages(3)) == missed
        live = await send(pair.b, bob, alice, "m6")
        assert ids(await stream.messages(1)) == [live]
        assert await stream.quiet() == []  # no duplicate at the seam, nor later


# A message inserted by hand, in a transaction the test controls.
RAW_INSERT = ("INSERT INTO messages (sender_id, recipient_id, content) "
              "VALUES ($1, $2, '{\"type\": \"text\", \"text\": \"raw\"}') RETURNING id")


async def test_commits_out_of_id_order_are_delivered_in_id_order_and_resume_exactly(pair: Pair) -> None:
    alice, bob = await make_users(pair.a, 2)
    first, second = await asyncpg.connect(pair.url), await asyncpg.connect(pair.url)
    try:
        async with open_stream(pair.b, alice) as stream:
            early = first.transaction()
            await early.start()
            smaller = await first.fetchval(RAW_INSERT, bob.id, alice.id)
            async with second.transaction():
                larger = await second.fetchval(RAW_INSERT, bob.id, alice.id)
            assert smaller < larger
            # `larger` is committed, but `smaller` may still commit: delivering `larger` now would
            # let a client resuming from it skip `smaller` for ever.
            assert await stream.quiet() == []
            await early.commit()
            assert ids(await stream.messages(2)) == [smaller, larger]

            # A rolled-back id holds nothing up.
            doomed = first.transaction()
            await doomed.start()
            gone = await first.fetchval(RAW_INSERT, bob.id, alice.id)
            kept = await send(pair.a, bob, alice, "after the gap")
            await asyncio.sleep(0.2)
            await doomed.rollback()
            assert ids(await stream.messages(1)) == [kept] and gone < kept

            # A long transaction that never touches `messages` does not hold delivery up.
            bystander = first.transaction()
            await bystander.start()
            await first.execute("INSERT INTO users (username, username_key, password_hash) "
                                "VALUES ('bystander', 'bystander', 'x')")
            # Delivered while the bystander is still open: waiting for it would mean never.
            prompt = await send(pair.a, bob, alice, "while a bystander writes")
            assert ids(await stream.messages(1, timeout=30)) == [prompt]
            await bystander.rollback()
        async with open_stream(pair.a, alice, last_event_id=smaller) as resumed:
            assert ids(await resumed.messages(2)) == [larger, kept]
    finally:
        await first.close()
        await second.close()


async def test_a_smaller_id_held_by_a_newer_transaction_is_waited_for(pair: Pair) -> None:
    """The snapshot does not list a transaction whose xid is newer than the newest commit."""
    alice, bob = await make_users(pair.a, 2)
    older, newer = await asyncpg.connect(pair.url), await asyncpg.connect(pair.url)
    try:
        async with open_stream(pair.b, alice) as stream:
            older_transaction, newer_transaction = older.transaction(), newer.transaction()
            await older_transaction.start()
            await older.fetchval("SELECT pg_current_xact_id()")  # the older xid, no id yet
            await newer_transaction.start()
            smaller = await newer.fetchval(RAW_INSERT, bob.id, alice.id)  # a newer xid, the smaller id
            larger = await older.fetchval(RAW_INSERT, bob.id, alice.id)
            await older_transaction.commit()
            # The newest commit is now older than the transaction holding `smaller`: a snapshot's
            # xip does not list it, yet it may still commit.
            assert await stream.quiet() == []
            await newer_transaction.commit()
            assert ids(await stream.messages(2)) == [smaller, larger]
    finally:
        await older.close()
        await newer.close()


async def test_a_slow_reader_is_cut_and_resumes_losslessly(pair: Pair) -> None:
    (alice,) = await make_users(pair.a, 1)
    cut_before = await metric(pair.b, 'chatsvc_streams_ended_total{reason="slow"}')
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    # A small receive window: the server's socket buffers, then its stream buffer, fill up.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, ("127.0.0.1", pair.b.port))
        await loop.sock_sendall(sock, (f"GET /messages/stream HTTP/1.1\r\nHost: chatsvc\r\n"
                                       f"Authorization: Bearer {alice.token}\r\n\r\n").encode())
        received = await loop.sock_recv(sock, 65536)
        assert received.startswith(b"HTTP/1.1 200"), received
        posted: list[int] = []
        text = "x" * BIG_TEXT_CHARS
        while await metric(pair.b, 'chatsvc_streams_ended_total{reason="slow"}') == cut_before:
            assert len(posted) < 200, "the stream was never cut"
            posted.append(await send(pair.a, alice, alice, text))
            if len(posted) > 20:
                await asyncio.sleep(0.05)
        # Only now read what reached us: complete events, in order, then the end.
        data = bytearray(received)
        while chunk := await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), 10):
            data += chunk
    finally:
        sock.close()
    got = ids(parse_blocks(dechunk(bytes(data)))[0])
    assert got == posted[:len(got)], "what arrived is not a prefix of what was posted"
    assert len(got) < len(posted), f"all {len(posted)} arrived: nothing was cut"
    async with open_stream(pair.b, alice, last_event_id=got[-1] if got else posted[0] - 1) as stream:
        assert ids(await stream.messages(len(posted) - len(got), timeout=30)) == posted[len(got):]
        assert await stream.quiet() == []


def dechunk(response: bytes) -> bytes:
    """The body of a chunked HTTP/1.1 response, as far as its complete chunks go."""
    _, _, rest = response.partition(b"\r\n\r\n")
    body = bytearray()
    while True:
        size_line, found, rest = rest.partition(b"\r\n")
        if not found or not size_line:
            return bytes(body)
        size = int(size_line, 16)
        if size == 0 or len(rest) < size + 2:
            return bytes(body)
        body += rest[:size]
        rest = rest[size + 2:]


async def test_heartbeat_comments_keep_a_quiet_stream_alive(pair: Pair) -> None:
    (alice,) = await make_users(pair.a, 1)
    async with open_stream(pair.b, alice) as stream:
        started = time.monotonic()
        beats = []
        # Well past the read timeout, which must not end a stream whose client sends nothing.
        while time.monotonic() - started < 2.5 * READ_TIMEOUT:
            block = await stream.next(2 * HEARTBEAT + 1)
            assert block is not None and not block.fields, block
            beats.append((round(time.monotonic() - started, 2), block.comments))
        sent = await send(pair.a, alice, alice, "still here")
        assert ids(await stream.messages(1)) == [sent]
    assert all(comments == ["keep-alive"] for _, comments in beats), beats
    # One comment per heartbeat interval: about 8 in 2.5 s, never a burst, never a long gap (each
    # read above). Fewer is only a loaded machine's late timer, so the floor is just "repeated".
    assert 2 <= len(beats) <= 2.5 * READ_TIMEOUT / HEARTBEAT + 1, beats


async def test_a_logout_ends_that_sessions_streams_at_once_on_every_replica(pair: Pair) -> None:
    """Not after the periodic session check (60 s by default): one NOTIFY reaches every replica."""
    alice, bob = await make_users(pair.a, 2)
    async with httpx.AsyncClient(base_url=pair.a.url) as client:
        login = await client.post("/login", json={"username": alice.username, "password": alice.password})
    other_device = User(alice.id, alice.username, alice.password, login.json()["token"])
    async with open_stream(pair.b, alice) as stream, open_stream(pair.a, other_device) as kept:
        async with httpx.AsyncClient(base_url=pair.a.url) as client:
            assert (await client.post("/logout", headers=alice.auth)).status_code == 204
        assert await stream.quiet(3) == [] and stream.ended
        # The same user's other session keeps its stream.
        sent = await send(pair.b, bob, alice, "still here")
        assert ids(await kept.messages(1)) == [sent] and not kept.ended
    async with httpx.AsyncClient(base_url=pair.b.url) as client:
        response = await client.get("/messages/stream", headers=alice.auth)
    assert response.status_code == 401


async def log_in_again(server: ServerProcess, user: User) -> User:
    """Another device of `user`: a session of its own."""
    async with httpx.AsyncClient(base_url=server.url) as client:
        login = await client.post("/login", json={"username": user.username, "password": user.password})
    return User(user.id, user.username, user.password, login.json()["token"])


async def revoke_other(server: ServerProcess, user: User, other: User, how: str) -> None:
    async with httpx.AsyncClient(base_url=server.url) as client:
        if how == "DELETE /sessions/{id}":
            listed = (await client.get("/sessions", headers=other.auth)).json()["sessions"]
            (current,) = (session["id"] for session in listed if session["current"])
            response = await client.delete(f"/sessions/{current}", headers=user.auth)
        elif how == "POST /logout/all":
            response = await client.post("/logout/all", headers=user.auth)
        else:
            response = await client.put("/users/me/password", headers=user.auth, json={
                "current_password": user.password, "new_password": "a new password"})
    assert response.status_code == 204, response.text


@pytest.mark.parametrize("how", ["DELETE /sessions/{id}", "POST /logout/all", "PUT /users/me/password"])
async def test_revoking_a_session_ends_its_streams_at_once_on_every_replica(pair: Pair, how: str) -> None:
    """Like logout: the periodic session check (60 s) is not what ends them."""
    alice, bob = await make_users(pair.a, 2)
    phone = await log_in_again(pair.a, alice)
    async with open_stream(pair.b, phone) as revoked, open_stream(pair.a, alice) as presenting:
        await revoke_other(pair.a, alice, phone, how)
        assert await revoked.quiet(3) == [] and revoked.ended
        sent = await send(pair.b, bob, alice, "after the revocation")
        if how == "POST /logout/all":
            assert await presenting.quiet(3) == [] and presenting.ended
        else:  # the presenting session stays, and so does its stream
            assert ids(await presenting.messages(1)) == [sent] and not presenting.ended


async def test_a_read_marker_reaches_the_readers_other_devices_and_the_peer(pair: Pair) -> None:
    alice, bob = await make_users(pair.a, 2)
    laptop = await log_in_again(pair.a, bob)
    first = await send(pair.a, alice, bob, "one")
    async with open_stream(pair.b, alice) as peer, open_stream(pair.a, laptop) as other_device:
        async with httpx.AsyncClient(base_url=pair.b.url) as client:
            marked = await client.put(f"/conversations/{alice.id}/read", headers=bob.auth,
                                      json={"last_read": first})
        assert marked.status_code == 200, marked.text
        for stream in (peer, other_device):
            (event,) = await stream.quiet(2)
            assert event.fields["event"] == "read" and "id" not in event.fields
            assert event.json() == {"reader": bob.id, "peer": alice.id, "last_read": first}


@pytest.mark.parametrize(("headers", "params", "message"), [
    ({"Last-Event-ID": "abc"}, {}, "Last-Event-ID: expected an integer"),
    ({}, {"since": "-1"}, "since: expected an integer"),
    ({}, {"since": "99999999999999999999"}, "since: expected an integer"),
])
async def test_a_bad_resume_point_is_400(pair: Pair, headers: dict, params: dict, message: str) -> None:
    (alice,) = await make_users(pair.a, 1)
    async with httpx.AsyncClient(base_url=pair.b.url) as client:
        response = await client.get("/messages/stream", headers={**alice.auth, **headers}, params=params)
        anonymous = await client.get("/messages/stream")
    assert assert_error(response, 400, "invalid_request").startswith(message)
    assert_error(anonymous, 401, "unauthorized")


# ------------------------------------------------------------------ caps, drain, database restart


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
        await asyncio.to_thread(cluster.stop)
        shutil.rmtree(root, ignore_errors=True)
