"""The conversations migration builds every conversation of the messages the old schema holds."""

from __future__ import annotations

import json
import random
import secrets
import shutil
from collections import defaultdict
from pathlib import Path

import asyncpg

from chatsvc.migrate import default_sql_dir, migrate
from chatsvc.queries import conversations as sql
from chatsvc.schemas import MAX_ID
from chatsvc.testing import DatabaseFactory
from tests.db_sessions import POLICY, session_for

IDLE, TOUCH = POLICY.idle_timeout, POLICY.touch_interval
USERS = 12
MESSAGES = 600
PAGE = 7

# How the old schema stored a message (the send statement before conversations existed).
OLD_SEND = """
INSERT INTO messages (sender_id, recipient_id, content) VALUES ($1, $2, $3) RETURNING id
"""


def conversations_migration() -> Path:
    (path,) = default_sql_dir().glob("*_conversations.sql")
    return path


def old_schema(tmp_path: Path) -> Path:
    """The migrations that came before conversations."""
    directory = tmp_path / "old-sql"
    directory.mkdir()
    for path in default_sql_dir().glob("*.sql"):
        if path.name < conversations_migration().name:
            shutil.copy(path, directory)
    return directory


async def test_every_conversation_count_and_page_of_old_messages(
        databases: DatabaseFactory, tmp_path: Path) -> None:
    url = await databases.create()
    await migrate(url, old_schema(tmp_path))
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    try:
        await pool.execute("INSERT INTO users (username, username_key, password_hash) "
                           "SELECT 'm' || g, 'm' || g, 'x' FROM generate_series(1, $1) g", USERS)
        # Skewed on purpose: user 1 writes and receives far more; some pairs never talk; notes to self.
        rng = random.Random(13)
        pairs: dict[tuple[int, int], list[tuple[int, int, int]]] = defaultdict(list)
        for n in range(MESSAGES):
            sender = 1 if rng.random() < 0.4 else rng.randint(1, USERS - 2)
            recipient = rng.choice([1, 1, sender, rng.randint(1, USERS - 2)])
            message_id = await pool.fetchval(OLD_SEND, sender, recipient,
                                             json.dumps({"type": "text", "text": f"m{n}"}))
            pairs[min(sender, recipient), max(sender, recipient)].append((message_id, sender, recipient))
        old_sessions = [secrets.token_bytes(32) for _ in range(3)]
        for token_hash in old_sessions:
            await pool.execute("INSERT INTO sessions (token_hash, user_id, expires_at) "
                               "VALUES ($1, 1, now() + interval '1 hour')", token_hash)

        assert conversations_migration().name in await migrate(url)

        tokens = {user: await session_for(pool, user) for user in range(1, USERS + 1)}
        for user in range(1, USERS + 1):
            listed = await all_conversations(pool, tokens[user])
            expected = sorted(
                ((high if low == user else low), messages)
                for (low, high), messages in pairs.items() if user in (low, high))
            expected.sort(key=lambda item: -item[1][-1][0])
            assert [c["peer"]["id"] for c in listed] == [peer for peer, _ in expected]
            for conversation, (peer, messages) in zip(listed, expected, strict=True):
                last_id, last_sender, last_recipient = messages[-1]
                assert conversation["last_message"]["id"] == last_id
                assert (conversation["last_message"]["sender"],
                        conversation["last_message"]["recipient"]) == (last_sender, last_recipient)
                assert conversation["peer"]["username"] == f"m{peer}"
                unread = 0 if peer == user else sum(1 for _, s, _ in messages if s == peer)
                assert conversation["unread"] == unread
                assert conversation["last_read"] is None and conversation["peer_last_read"] is None
                ids = [message_id for message_id, _, _ in messages]
                assert await walk(pool, tokens[user], peer, older=True) == ids
                assert await walk(pool, tokens[user], peer, older=False) == ids
        # Users who never talked to each other have an empty conversation.
        assert await walk(pool, tokens[USERS], USERS - 1, older=True) == []
        # Sessions from before the migration each got a public id of their own.
        public_ids = await pool.fetch("SELECT public_id FROM sessions WHERE token_hash = any($1)",
                                      old_sessions)
        assert len({row["public_id"] for row in public_ids}) == len(old_sessions)
    finally:
        await pool.close()


async def all_conversations(pool: asyncpg.Pool, token_hash: bytes) -> list[dict]:
    seen: list[dict] = []
    upto = MAX_ID
    while True:
        listed = await sql.list_conversations(pool, token_hash, POLICY, upto=upto, limit=PAGE)
        assert listed is not None
        page = json.loads(listed.conversations)
        assert len(page) <= PAGE
        seen.extend(page)
        if listed.next_before is None:
            return seen
        upto = listed.next_before - 1


async def walk(pool: asyncpg.Pool, token_hash: bytes, peer: int, *, older: bool) -> list[int]:
    seen: list[int] = []
    bound = MAX_ID if older else 0
    while True:
        page = await sql.conversation_page(pool, token_hash, POLICY, peer=peer, bound=bound, limit=PAGE,
                                           older=older)
        assert page is not None and page.peer_exists
        ids = [message["id"] for message in json.loads(page.messages)]
        seen = ids + seen if older else seen + ids
        if page.fetched <= PAGE:
            return seen
        bound = ids[0] - 1 if older else ids[-1]
