"""What tells every replica that sessions were revoked: sql/0003's notifications, and how a
process reads them (chatsvc.revocation). The streams ending is tested live in
tests/live/test_stream_delivery.py."""

from __future__ import annotations

import asyncio
import secrets

import asyncpg

from chatsvc import revocation
from chatsvc.revocation import Revocations
from chatsvc.testing import DatabaseFactory

BULK = 101  # past 100 users in one statement, the payload is "*"


async def notifications_of(url: str, statement: str, *args: object) -> list[str]:
    """The payloads on revocation.CHANNEL that `statement` sends, in order."""
    listener, writer = await asyncpg.connect(url), await asyncpg.connect(url)
    heard: asyncio.Queue[str] = asyncio.Queue()
    try:
        await listener.add_listener(revocation.CHANNEL, lambda *event: heard.put_nowait(event[3]))
        await writer.execute(statement, *args)
        await writer.execute("SELECT pg_notify('chatsvc_test_end', '')")  # a round trip after it
        payloads = []
        while True:
            try:
                payloads.append(await asyncio.wait_for(heard.get(), 1))
            except TimeoutError:
                return payloads
    finally:
        await listener.close()
        await writer.close()


async def test_every_way_of_ending_sessions_notifies_once_and_a_touch_does_not(
        databases: DatabaseFactory) -> None:
    url = await databases.create(migrated=True)
    connection = await asyncpg.connect(url)
    try:
        ids = await connection.fetchval(
            "WITH made AS (INSERT INTO users (username, username_key, password_hash)"
            " SELECT 'u' || n, 'u' || n || $1::text, 'x' FROM generate_series(1, $2) AS n RETURNING id)"
            " SELECT array_agg(id ORDER BY id) FROM made", secrets.token_hex(3), BULK + 2)
        await connection.execute(
            "INSERT INTO sessions (token_hash, user_id, expires_at) SELECT sha256(id::text::bytea), id,"
            " now() + interval '1 h' FROM unnest($1::bigint[]) AS id", ids)
    finally:
        await connection.close()
    one, shortened, bulk = ids[0], ids[1], ids[2:]
    assert await notifications_of(url, "UPDATE sessions SET last_seen_at = now()") == []
    assert await notifications_of(url, "DELETE FROM sessions WHERE user_id = $1", one) == [str(one)]
    assert await notifications_of(url, "UPDATE sessions SET expires_at = now() WHERE user_id = $1",
                                  shortened) == [str(shortened)]
    assert await notifications_of(url, "DELETE FROM sessions WHERE user_id = ANY($1)", bulk) == ["*"]


def test_notifications_are_gathered_until_checked() -> None:
    revocations = Revocations()
    assert not revocations.pending
    revocations.note("7 9")
    revocations.note("not a number")  # malformed: every stream checks, rather than none
    assert revocations.pending
    assert revocations._users == {7, 9} and revocations._everyone
