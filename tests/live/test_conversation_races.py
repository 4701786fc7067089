"""Concurrent clients against a live server: sends racing each other in one conversation, read
markers from two devices racing the sends, and a reader catching up with `after=` meanwhile.
Afterwards every count, marker, last message and page is exactly what the sends and markers imply.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from chatsvc.testing import (
    NO_RATE_LIMITS,
    QUIET_LOGS,
    DatabaseFactory,
    ServerProcess,
    User,
    client_for,
    make_users,
    serving,
)

SETTINGS = {"CHATSVC_WORKERS": "2", "CHATSVC_DRAIN_DELAY": "0", **NO_RATE_LIMITS, **QUIET_LOGS}
SENDERS_EACH_WAY = (3, 2)  # concurrent senders from alice to bob, and from bob to alice
MESSAGES_PER_SENDER = 30
PAGE = 7
# Each send waits a little between taking its id and committing, so that sends overlap there and
# commit out of id order unless something orders them: the window a real server has under load,
# made wide enough that a test without it fails.
SLOW_COMMITS = """
CREATE FUNCTION test_slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_sleep(random() * 0.02);
    RETURN NULL;
END
$$;
CREATE TRIGGER test_slow_commit AFTER INSERT ON messages FOR EACH ROW EXECUTE FUNCTION test_slow_commit();
"""


@pytest.fixture(scope="module")
async def server(databases: DatabaseFactory, tmp_path_factory: pytest.TempPathFactory
                 ) -> AsyncIterator[ServerProcess]:
    async with serving(databases, tmp_path_factory.mktemp("races") / "serve.log", **SETTINGS) as process:
        connection = await asyncpg.connect(process.database_url)
        try:
            await connection.execute(SLOW_COMMITS)
        finally:
            await connection.close()
        yield process


async def second_device(server: ServerProcess, user: User) -> User:
    async with client_for(server) as client:
        login = await client.post("/login", json={"username": user.username, "password": user.password})
    return User(user.id, user.username, user.password, login.json()["token"])


async def test_racing_sends_and_read_markers_leave_exact_counts_and_pages(server: ServerProcess) -> None:
    alice, bob = await make_users(server, 2)
    bobs_laptop = await second_device(server, bob)
    sent: dict[int, tuple[int, int]] = {}  # id -> (sender, recipient)
    markers: dict[int, list[int]] = {alice.id: [], bob.id: []}  # every id each reader marked read
    sending = asyncio.Event()
    sending.set()
    rng = random.Random(7)

    async def sender(me: User, peer: User) -> None:
        async with client_for(server, me) as client:
            for n in range(MESSAGES_PER_SENDER):
                response = await client.post("/messages", json={
                    "recipient": peer.id, "content": {"type": "text", "text": f"{me.id}-{n}"}})
                assert response.status_code == 201, response.text
                sent[response.json()["id"]] = (me.id, peer.id)

    async def marker(device: User, peer: User) -> None:
        """Marks a random message of the newest page read, again and again, while sends go on."""
        async with client_for(server, device) as client:
            while sending.is_set():
                page = (await client.get(f"/conversations/{peer.id}/messages", params={"limit": PAGE})).json()
                if page["messages"]:
                    chosen = rng.choice(page["messages"])["id"]
                    response = await client.put(f"/conversations/{peer.id}/read", json={"last_read": chosen})
                    assert response.status_code == 200, response.text
                    markers[device.id].append(chosen)
                    assert response.json()["last_read"] >= chosen
                await asyncio.sleep(0)

    async def follower(device: User, peer: User) -> list[int]:
        """Catches up with `after=` while messages arrive: must see each exactly once, in order."""
        seen: list[int] = []
        after = 0
        async with client_for(server, device) as client:
            while True:
                still_sending = sending.is_set()
                page = (await client.get(f"/conversations/{peer.id}/messages",
                                         params={"after": after, "limit": PAGE})).json()
                ids = [message["id"] for message in page["messages"]]
                seen.extend(ids)
                if ids:
                    after = ids[-1]
                if page["newer"] is None and not still_sending:
                    return seen

    senders = [sender(alice, bob) for _ in range(SENDERS_EACH_WAY[0])]
    senders += [sender(device, alice) for device in (bob, bobs_laptop)[:SENDERS_EACH_WAY[1]]]
    background = [asyncio.create_task(job) for job in (
        marker(bob, alice), marker(bobs_laptop, alice), marker(alice, bob))]
    catching_up = asyncio.create_task(follower(alice, bob))
    await asyncio.gather(*senders)
    sending.clear()
    await asyncio.gather(*background)
    caught_up = await catching_up

    everything = sorted(sent)
    assert len(everything) == sum(SENDERS_EACH_WAY) * MESSAGES_PER_SENDER
    assert caught_up == everything, "a page caught up with after= skipped or repeated a message"
    async with client_for(server, alice) as client:
        assert await walk_back(client, bob) == everything
    assert markers[bob.id] and markers[alice.id], "the markers never raced the sends"

    for reader, peer in ((alice, bob), (bob, alice)):
        last_read = max(markers[reader.id])
        unread = sum(1 for message_id, (sender_id, _) in sent.items()
                     if sender_id == peer.id and message_id > last_read)
        async with client_for(server, reader) as client:
            (conversation,) = (await client.get("/conversations")).json()["conversations"]
            assert conversation["last_message"]["id"] == everything[-1]
            assert (conversation["last_read"], conversation["unread"]) == (last_read, unread)
            assert conversation["peer_last_read"] == max(markers[peer.id])
    # Marking the newest message read leaves nothing unread.
    async with client_for(server, bob) as client:
        response = await client.put(f"/conversations/{alice.id}/read", json={"last_read": everything[-1]})
        assert response.json() == {"last_read": everything[-1], "unread": 0}


async def walk_back(client: httpx.AsyncClient, peer: User) -> list[int]:
    seen: list[int] = []
    params: dict[str, int] = {"limit": PAGE}
    while True:
        page = (await client.get(f"/conversations/{peer.id}/messages", params=params)).json()
        seen = [message["id"] for message in page["messages"]] + seen
        if page["older"] is None:
            return seen
        params["before"] = page["older"]
