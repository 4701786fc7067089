"""Live `GET /messages/stream` on two processes sharing one database: LISTEN/NOTIFY, lossless resume,
out-of-order commits, slow readers, heartbeats, sessions ending and read markers."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest

from chatsvc.testing import (
    DatabaseFactory,
    ServerProcess,
    User,
    assert_error,
    make_users,
)
from tests.live.streams import (
    BIG_TEXT_CHARS,
    HEARTBEAT,
    PAIR_SETTINGS,
    READ_TIMEOUT,
    ids,
    metric,
    open_stream,
    parse_blocks,
    send,
)

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
