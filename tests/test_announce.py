"""Announcements from the sending process (chatsvc.announce) and the listener's check for ids
settled without one (horizon.Unannounced): without the trigger of old, psql and the importer
announce nothing, and streams must find their messages all the same."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from chatsvc.announce import MAX_WAITING, PAYLOAD_BYTES, Outbox
from chatsvc.config import Settings
from chatsvc.fanout import Fanout
from chatsvc.horizon import MAX_UNANNOUNCED, Unannounced
from chatsvc.testing import User
from chatsvc.tokens import token_digest

INSERT = ("INSERT INTO messages (sender_id, recipient_id, content) "
          "VALUES ($1, $2, '{\"type\": \"text\", \"text\": \"unannounced\"}') RETURNING id")


def test_a_batch_is_split_into_payloads_postgresql_accepts_and_loses_nothing() -> None:
    outbox = Outbox()
    for n in range(2000):
        outbox.add(10**12 + n, 10**9 + n, 7)
    payloads = outbox.take()
    assert len(payloads) > 1 and all(len(p.encode()) < PAYLOAD_BYTES for p in payloads)
    items = [item for payload in payloads for item in payload.split(" ")]
    assert items == [f"{10**12 + n}:{10**9 + n}:7" for n in range(2000)]
    assert not outbox and outbox.take() == []


def test_an_outbox_past_its_bound_announces_everyone_once() -> None:
    outbox = Outbox()
    for n in range(MAX_WAITING + 1):
        outbox.add(n, 1, 2)
    assert outbox.take() == ["*"] and not outbox


def test_the_ids_settled_by_the_previous_check_and_never_heard_of_are_found() -> None:
    ids = Unannounced()
    ids.restart(10)
    for message_id in (11, 13, 16):
        ids.heard(message_id)
    assert ids.check(14) == []  # nothing is due yet: 11..14 get an interval to be heard of
    ids.heard(14)
    assert ids.check(16) == [12]
    assert ids.check(16) == [15]
    assert ids.check(16 + MAX_UNANNOUNCED + 1) == []
    assert ids.check(16 + MAX_UNANNOUNCED + 1) is None  # too many to list: every stream looks


@pytest.fixture
async def fanout(settings: Settings) -> AsyncIterator[Fanout]:
    started = Fanout(settings.replace(health_interval=0.2))
    await started.start()
    try:
        yield started
    finally:
        await started.close()


async def test_a_message_nobody_announced_still_wakes_its_streams(
        fanout: Fanout, db: asyncpg.Pool, alice: User, bob: User) -> None:
    alices = fanout.subscribe(alice.id, token_digest(alice.token), "127.0.0.1")
    await fanout.starting_point(alices)
    alices.wake.clear()
    written = await db.fetchval(INSERT, bob.id, alice.id)  # as psql would: no announcement
    async with asyncio.timeout(10):
        await alices.wake.wait()
    assert fanout.watermark >= written


async def test_an_announced_message_wakes_its_streams_through_the_database(
        fanout: Fanout, settings: Settings, db: asyncpg.Pool, alice: User, bob: User) -> None:
    other = Fanout(settings.replace(health_interval=300))  # another process, holding the stream
    await other.start()
    try:
        alices = other.subscribe(alice.id, token_digest(alice.token), "127.0.0.1")
        await other.starting_point(alices)
        alices.wake.clear()
        written = await db.fetchval(INSERT, bob.id, alice.id)
        fanout.announce(written, bob.id, alice.id)
        async with asyncio.timeout(10):  # no periodic look on `other` could have found it
            await alices.wake.wait()
        assert other.watermark >= written
    finally:
        await other.close()


async def test_announcements_made_within_the_window_go_out_together(settings: Settings) -> None:
    heard: list[str] = []
    arrived = asyncio.Event()

    def hear(*args: object) -> None:
        heard.append(str(args[3]))
        arrived.set()

    listener = await asyncpg.connect(settings.database_url)
    batching = Fanout(settings.replace(health_interval=300, stream_announce_window=0.5))
    try:
        await listener.add_listener("chatsvc_messages", hear)
        await batching.start()
        nobody = 10**12  # no such user: no stream anywhere looks for these
        batching.announce(nobody + 1, nobody, nobody)
        async with asyncio.timeout(5):
            await arrived.wait()
        arrived.clear()
        batching.announce(nobody + 2, nobody, nobody)
        await asyncio.sleep(0)  # the listener's loop runs between the two: it waits for the window
        batching.announce(nobody + 3, nobody, nobody)
        async with asyncio.timeout(5):
            await arrived.wait()
        await asyncio.sleep(0.1)  # time for a third notification, if the two went apart
        one, two, three = (f"{nobody + n}:{nobody}:{nobody}" for n in (1, 2, 3))
        assert heard == [one, f"{two} {three}"]
    finally:
        await batching.close()
        await listener.close()
