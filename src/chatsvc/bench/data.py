"""The data the benchmark runs on: a private PostgreSQL, and databases prefilled with users,
sessions and messages of every content type."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import argon2
import asyncpg

from chatsvc import devdb
from chatsvc.bench import statements
from chatsvc.bench.conversations import (
    Conversations,
    Shape,
    add_conversations,
    check_conversations,
    indexes_dropped,
    lua_lines,
)
from chatsvc.bench.options import DATA, PRODUCTION, log
from chatsvc.testing import DatabaseFactory

# Exactly what msgspec encodes for each content type (compact JSON, fields in struct order).
# recipients = 0: each message to a random user; k > 0: to users 1..k in turn.
INSERT_MESSAGES = """
INSERT INTO messages (created_at, sender_id, recipient_id, content)
SELECT now() - make_interval(secs => (($1::int - i) * 0.25)::float8),
       1 + floor(random() * $2::int)::bigint,
       CASE WHEN $3::int = 0 THEN 1 + floor(random() * $2::int)::bigint ELSE 1 + i % $3::int END,
       (CASE
          WHEN r < 0.7 THEN '{"type":"text","text":"'
               || substr(repeat(md5(i::text) || ' ', 7), 1, 8 + (i * 37) % 200) || '"}'
          WHEN r < 0.9 THEN '{"type":"image","url":"https://images.example.com/' || md5(i::text)
               || '.jpg","width":' || 64 + i % 1000 || ',"height":' || 64 + i % 700 || '}'
          WHEN i % 2 = 0 THEN '{"type":"video","url":"https://www.youtube.com/watch?v='
               || substr(md5(i::text), 1, 11) || '","source":"youtube"}'
          ELSE '{"type":"video","url":"https://vimeo.com/' || 1000000 + i || '","source":"vimeo"}'
        END)::json
FROM (SELECT i, random() AS r FROM generate_series(1, $1::int) AS i) AS s
"""

# Conversation rows of random pairs compared with sql/0006's backfill after each prefill.
CHECKED_CONVERSATIONS = 1000


@dataclass
class Dataset:
    dsn: str
    users: int
    messages: int
    readers: int  # the users whose inboxes GET /messages reads: 1..readers
    password: str  # every user's
    tokens: dict[int, str]  # user id -> session token
    lua: Path  # the same, for the wrk scripts
    seconds: float  # how long the prefill took
    counts: dict[str, int] = field(default_factory=dict)  # messages per content type
    size: str = ""
    conversations: Conversations | None = None  # the hubs and long conversations, when added


@contextlib.contextmanager
def private_cluster(*, durable: bool = True) -> Iterator[tuple[devdb.PrivateCluster, str]]:
    """The bench cluster: devdb's settings, with shared_buffers large enough for the data set and
    pg_stat_statements loaded. Durable (fsync and synchronous_commit on) as a deployment runs it,
    unless `durable` is false, for a run labelled as such in the report."""
    settings = {"shared_buffers": "1GB", "max_connections": "300", **statements.PRELOAD}
    cluster = devdb.PrivateCluster(DATA, durable=durable, settings=settings)
    try:
        yield cluster, cluster.start()
    finally:
        cluster.stop()


def postmaster_pid(cluster: devdb.PrivateCluster) -> int:
    return int((cluster.data / "postmaster.pid").read_text().splitlines()[0])


async def server_version(dsn: str) -> str:
    connection = await asyncpg.connect(dsn)
    try:
        return str(await connection.fetchval("SHOW server_version"))
    finally:
        await connection.close()


async def prefill(
    databases: DatabaseFactory, name: str, users: int, messages: int, recipients: int, readers: int,
    shape: Shape | None = None,
) -> Dataset:
    """A fresh database of `databases` (the caller drops it): migrated, `users` users, `messages`
    messages, a session per user, then the conversations of `shape` and a conversation row for
    every pair that exchanged messages. `name` names it in the log and its wrk data file."""
    started = time.monotonic()
    dsn = await databases.create(migrated=True)
    password = "bench-" + secrets.token_urlsafe(12)
    hasher = argon2.PasswordHasher(
        time_cost=PRODUCTION.argon2_time_cost,
        memory_cost=PRODUCTION.argon2_memory_kib,
        parallelism=PRODUCTION.argon2_parallelism,
        type=argon2.Type.ID,
    )
    password_hash = hasher.hash(password)  # one hash at production parameters, shared by every user
    tokens = {uid: f"bench-{uid}-{secrets.token_hex(16)}" for uid in range(1, users + 1)}
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=PRODUCTION.session_lifetime)
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("SET maintenance_work_mem = '512MB'")
        # Every id is valid by construction: skip the per-row foreign key triggers.
        await connection.execute("SET session_replication_role = replica")
        await connection.execute(
            "INSERT INTO users (id, username, username_key, password_hash)"
            " SELECT i, 'bench-user-' || i, 'bench-user-' || i, $1 FROM generate_series(1, $2::int) AS i",
            password_hash,
            users,
        )
        await connection.execute("SELECT setval(pg_get_serial_sequence('users', 'id'), $1)", users)
        # Bulk load without the secondary indexes, then build them exactly as the migration did.
        log(f"inserting {messages:,} messages into {name}")
        async with indexes_dropped(connection, "messages"):
            await connection.execute(INSERT_MESSAGES, messages, users, recipients, timeout=None)
        conversations = None
        if shape is not None:
            log(f"adding conversations to {name}: {shape}")
            conversations = await add_conversations(connection, shape, users)
            checked = await check_conversations(connection, CHECKED_CONVERSATIONS)
            log(f"{checked:,} sampled conversations of {name} equal sql/0006's backfill")
        await connection.copy_records_to_table(
            "sessions",
            columns=["token_hash", "user_id", "expires_at"],
            records=[
                (hashlib.sha256(token.encode()).digest(), uid, expires) for uid, token in tokens.items()
            ],
        )
        await connection.execute("RESET session_replication_role")
        for table in ("users", "sessions", "messages", "conversations"):
            await connection.execute(f"VACUUM (ANALYZE) {table}", timeout=None)
        counts = {
            row["content_type"]: row["n"]
            for row in await connection.fetch(
                "SELECT content->>'type' AS content_type, count(*) AS n FROM messages GROUP BY 1 ORDER BY 1"
            )
        }
        size = await connection.fetchval("SELECT pg_size_pretty(pg_database_size(current_database()))")
    finally:
        await connection.close()
    lua = write_lua_data(DATA / f"{name}.lua", readers, password, tokens, conversations)
    return Dataset(
        dsn, users, messages, readers, password, tokens, lua, time.monotonic() - started, counts, size,
        conversations,
    )


def write_lua_data(
    path: Path, readers: int, password: str, tokens: dict[int, str], conversations: Conversations | None
) -> Path:
    """The users, their password and session tokens, and the conversations to read, as a Lua
    table for lua/common.lua."""
    lines = [
        f"return {{\n  users = {len(tokens)},\n  readers = {readers},\n  password = {json.dumps(password)},",
        *lua_lines(conversations),
        "  tokens = {",
        *(f"    {json.dumps(tokens[uid])}," for uid in range(1, len(tokens) + 1)),
        "  },\n}\n",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)  # a fresh checkout has no .data yet
    path.write_text("\n".join(lines))
    return path
