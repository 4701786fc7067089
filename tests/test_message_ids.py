"""The send statement takes its transaction's xid, and its conversation's lock, before its id: the
watermark (chatsvc.horizon) is correct only if every transaction holding an id is one a snapshot
can list, and ids of one conversation commit in order only if the lock comes first."""

from __future__ import annotations

import asyncio

import asyncpg

from chatsvc import queries
from chatsvc.config import Settings
from chatsvc.resources import Resources
from chatsvc.testing import User
from chatsvc.tokens import token_digest

# Holds a lock on the id sequence that nextval waits for (ShareRowExclusive against RowExclusive).
HOLD_THE_SEQUENCE = "ALTER SEQUENCE messages_id_seq INCREMENT BY 1"
STATE = """
SELECT a.backend_xid IS NOT NULL AS has_xid,
       EXISTS (SELECT FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'advisory' AND l.granted)
           AS holds_pair,
       EXISTS (SELECT FROM pg_locks l WHERE l.pid = a.pid AND NOT l.granted
                 AND l.relation = 'messages_id_seq'::regclass) AS waits_for_id
FROM pg_stat_activity a WHERE a.pid = $1
"""


async def test_a_send_has_its_xid_and_its_pair_lock_before_it_asks_for_an_id(
        settings: Settings, resources: Resources, db: asyncpg.Pool, alice: User, bob: User) -> None:
    holder = await asyncpg.connect(settings.database_url)
    sender = await asyncpg.connect(settings.database_url)
    try:
        held = holder.transaction()
        await held.start()
        await holder.execute(HOLD_THE_SEQUENCE)
        digest = token_digest(alice.token)
        assert digest is not None
        sending = asyncio.create_task(queries.messages.send_message(
            sender, digest, resources.session_policy,  # type: ignore[arg-type]
            recipient=bob.id, content='{"type": "text", "text": "ordered"}', idempotency_key=None,
            sender=None))
        state = None
        for _ in range(500):  # until the send waits for its id
            state = await db.fetchrow(STATE, sender.get_server_pid())
            if state is not None and state["waits_for_id"]:
                break
            await asyncio.sleep(0.01)
        assert state is not None and state["waits_for_id"], state
        assert state["has_xid"] and state["holds_pair"], state
        await held.commit()
        sent = await asyncio.wait_for(sending, 10)
        assert sent is not None and sent.id is not None
    finally:
        await holder.close()
        await sender.close()
