"""A process looks at the database only for the streams it holds (chatsvc.fanout's doc): the
notifications it drops, and the subscriptions that must make up for them, in process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from chatsvc import queries
from chatsvc.config import Settings
from chatsvc.fanout import Fanout, Subscription
from chatsvc.testing import User
from chatsvc.tokens import token_digest

TEXT = '{"type": "text", "text": "routed"}'
INSERT = "INSERT INTO messages (sender_id, recipient_id, content) VALUES ($1, $2, $3) RETURNING id"


@pytest.fixture
async def fanout(settings: Settings) -> AsyncIterator[Fanout]:
    # No periodic look during a test: every look counted is one a notification or a stream caused.
    started = Fanout(settings.replace(health_interval=300))
    await started.start()
    assert started.ready.is_set()
    try:
        yield started
    finally:
        await started.close()


async def announced(db: asyncpg.Pool, sender: User, recipient: User) -> int:
    """A message stored and then announced, as a chatsvc process does (chatsvc.announce)."""
    message_id: int = await db.fetchval(INSERT, sender.id, recipient.id, TEXT)
    await db.execute("SELECT pg_notify($1, $2)", queries.stream.MESSAGES_CHANNEL,
                     f"{message_id}:{sender.id}:{recipient.id}")
    return message_id


def subscribe(fanout: Fanout, user: User) -> Subscription:
    return fanout.subscribe(user.id, token_digest(user.token), "127.0.0.1")


async def heard(db: asyncpg.Pool, witness: Subscription) -> None:
    """Return once the listener has handled every notification committed before this call: a read
    event for `witness` comes after them on the same connection, in commit order."""
    witness.take_notices()
    await db.execute("SELECT pg_notify($1, $2)", queries.conversations.READS_CHANNEL,
                     f"{witness.user_id}:{witness.user_id}:0")
    async with asyncio.timeout(5):
        while not witness.notices:
            witness.wake.clear()
            await witness.wake.wait()


async def test_a_notification_no_local_stream_reads_starts_no_look(
        fanout: Fanout, db: asyncpg.Pool, alice: User, bob: User, carol: User) -> None:
    carols = subscribe(fanout, carol)  # a stream of someone else
    await fanout.starting_point(carols)
    before = fanout.looks
    for _ in range(3):
        await announced(db, bob, alice)
    await heard(db, carols)
    assert fanout.looks == before
    # The same message, once a stream it concerns is held here, is looked for and delivered.
    alices = subscribe(fanout, alice)
    await fanout.starting_point(alices)
    alices.wake.clear()
    sent = await announced(db, bob, alice)
    async with asyncio.timeout(5):
        await alices.wake.wait()
    assert fanout.looks > before + 1 and fanout.watermark >= sent


async def test_a_message_announced_before_its_stream_opened_and_settled_after_still_wakes_it(
        fanout: Fanout, db: asyncpg.Pool, settings: Settings, alice: User, bob: User, carol: User) -> None:
    carols = subscribe(fanout, carol)
    await fanout.starting_point(carols)
    older = await asyncpg.connect(settings.database_url)
    try:
        # An older id still in flight keeps a newer one, already announced, from settling.
        transaction = older.transaction()
        await transaction.start()
        held = await older.fetchval(INSERT, bob.id, carol.id, TEXT)
        newer = await announced(db, bob, alice)
        assert held < newer
        await heard(db, carols)  # dropped: no stream of alice's here yet
        alices = subscribe(fanout, alice)
        since = await fanout.starting_point(alices)
        # Its first read stops at the watermark, below `newer`; nothing will announce it again.
        assert since == fanout.watermark < held
        alices.wake.clear()
        await transaction.commit()
    finally:
        await older.close()
    async with asyncio.timeout(5):
        await alices.wake.wait()
    assert fanout.watermark >= newer


async def test_a_stream_without_a_resume_point_starts_after_what_committed_before_it(
        fanout: Fanout, db: asyncpg.Pool, alice: User, bob: User, carol: User) -> None:
    carols = subscribe(fanout, carol)
    await fanout.starting_point(carols)
    stale = fanout.watermark
    before = await announced(db, bob, alice)
    await heard(db, carols)
    assert fanout.watermark == stale < before  # dropped without a look: the watermark lags
    alices = subscribe(fanout, alice)
    # Starting at the stale watermark would replay `before`, sent before the stream opened.
    assert await fanout.starting_point(alices) >= before
