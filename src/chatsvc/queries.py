"""The SQL of chatsvc, as named constants beside the thin functions that run them."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from chatsvc import usernames
from chatsvc.config import SessionPolicy
from chatsvc.db import BoundedPool

# A session is valid while neither its absolute nor its idle expiry has passed.
# The idle clock is written only when it is older than the touch interval, so
# a busy client does not turn every read into a write. $1 token hash, $2 idle
# timeout, $3 touch interval (seconds). The message statements below start with
# this same text, so that authentication and the work are one round trip.
_CALLER = """
WITH caller AS (
    SELECT user_id FROM sessions
    WHERE token_hash = $1
      AND expires_at > now()
      AND last_seen_at > now() - make_interval(secs => $2)
), touch AS (
    UPDATE sessions SET last_seen_at = now()
    WHERE token_hash = $1
      AND last_seen_at < now() - make_interval(secs => $3)
      AND EXISTS (SELECT FROM caller)
)"""

# A message exactly as the API shows it, built beside the rows: the stored content goes out as it
# was stored, and no message is decoded and re-encoded in Python. Timestamps are RFC 3339 in UTC
# with microseconds; the 201 of a send and every later listing or event format the same instant
# with the same expression, so they are the same string.
_TIMESTAMP = """to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""
_MESSAGE_JSON = (
    """'{"id":' || id || ',"timestamp":"' || """ + _TIMESTAMP
    + """ || '","sender":' || sender_id || ',"recipient":' || recipient_id"""
    + """ || ',"content":' || content || '}'"""
)

AUTHENTICATE = _CALLER + """
SELECT user_id FROM caller
"""

# No row: the token is not valid. Otherwise the caller, and the new message
# unless the sender check ($7) failed or the idempotency key ($6) was used.
SEND_MESSAGE = _CALLER + """, sent AS (
    INSERT INTO messages (sender_id, recipient_id, content, idempotency_key)
    SELECT user_id, $4, $5, $6 FROM caller
    WHERE $7::bigint IS NULL OR $7 = user_id
    ON CONFLICT (sender_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id, """ + _TIMESTAMP + """ AS timestamp
)
SELECT caller.user_id AS caller, sent.id, sent.timestamp FROM caller LEFT JOIN sent ON true
"""

# No row: the token is not valid. Otherwise one row: the caller, the page as a JSON array, and
# the id of the first message past it (fetched, not shown) or NULL. Only one branch runs: the
# reader's whole inbox, or what the caller sent to `recipient`, each a range scan of its own index.
# $6 is the page size.
LIST_MESSAGES = _CALLER + """
SELECT caller.user_id AS caller,
       coalesce('[' || string_agg(page.json, ',' ORDER BY page.id) FILTER (WHERE page.n <= $6) || ']',
                '[]') AS messages,
       min(page.id) FILTER (WHERE page.n > $6) AS next_start
FROM caller LEFT JOIN LATERAL (
    SELECT id, json, row_number() OVER (ORDER BY id) AS n FROM (
        (SELECT id, """ + _MESSAGE_JSON + """ AS json FROM messages
         WHERE caller.user_id = $4 AND recipient_id = $4 AND id >= $5
         ORDER BY id LIMIT $6 + 1)
        UNION ALL
        (SELECT id, """ + _MESSAGE_JSON + """ AS json FROM messages
         WHERE caller.user_id <> $4 AND recipient_id = $4 AND sender_id = caller.user_id AND id >= $5
         ORDER BY id LIMIT $6 + 1)
    ) AS readable
) AS page ON true
GROUP BY caller.user_id
"""

# Nothing is inserted when the key ($2) is taken or the skeleton ($3) is an account's already: among
# new accounts a unique index says so, even for two sign-ups racing; accounts from before the
# PRECIS rule (legacy_key) are a fixed set, checked here. sql/0004, chatsvc.usernames.
CREATE_USER = """
INSERT INTO users (username, username_key, username_skeleton, password_hash)
SELECT $1, $2, $3, $4
WHERE NOT EXISTS (SELECT FROM users WHERE legacy_key AND username_skeleton = $3)
ON CONFLICT DO NOTHING
RETURNING id
"""

# By the PRECIS key ($1, NULL for a name the rule refuses), or by the old key ($2) for accounts made
# before it; the account spelled exactly as typed ($3) first, should both exist.
USER_FOR_LOGIN = """
SELECT id, password_hash FROM users
WHERE (username_key = $1 AND NOT legacy_key) OR (username_key = $2 AND legacy_key)
ORDER BY username = $3 DESC, legacy_key
LIMIT 1
"""

# Guarded by the old hash so two concurrent logins cannot undo each other's upgrade.
REPLACE_PASSWORD_HASH = "UPDATE users SET password_hash = $3 WHERE id = $1 AND password_hash = $2"  # noqa: S105

CREATE_SESSION = """
INSERT INTO sessions (token_hash, user_id, expires_at)
VALUES ($1, $2, now() + make_interval(secs => $3))
"""

REVOKE_SESSION = "DELETE FROM sessions WHERE token_hash = $1"

MESSAGE_BY_IDEMPOTENCY_KEY = """
SELECT id, """ + _TIMESTAMP + """ AS timestamp, recipient_id, content FROM messages
WHERE sender_id = $1 AND idempotency_key = $2
"""

# GET /messages/stream. The channel of sql/0002's trigger: "id:sender:recipient …", or "*".
MESSAGES_CHANNEL = "chatsvc_messages"

# What user $1 received or sent, after id $2 and up to the watermark $3: two range scans
# (messages_recipient_id, messages_sender_id) merged by id. The `OR` form would read the user's
# whole history into a bitmap for every page.
STREAM_PAGE = """
SELECT id, json FROM (
    (SELECT id, """ + _MESSAGE_JSON + """ AS json FROM messages
     WHERE recipient_id = $1 AND id > $2 AND id <= $3
     ORDER BY id LIMIT $4)
    UNION ALL
    (SELECT id, """ + _MESSAGE_JSON + """ AS json FROM messages
     WHERE sender_id = $1 AND recipient_id <> $1 AND id > $2 AND id <= $3
     ORDER BY id LIMIT $4)
) AS readable
ORDER BY id
LIMIT $4
"""

# The newest message id and the transactions in progress, in one snapshot (fanout.Horizon).
MESSAGES_HORIZON = """
SELECT coalesce(max(id), 0) AS max_id, pg_current_snapshot()::text AS snapshot FROM messages
"""

# The 32-bit xids of the transactions holding any lock on `messages` in this database. An insert
# locks the table before it takes an id, so a transaction missing here holds no unfinished id.
MESSAGE_WRITERS = """
SELECT coalesce(array_agg(DISTINCT x.transactionid::text::bigint), '{}') FROM pg_locks x
JOIN pg_locks r ON r.virtualtransaction = x.virtualtransaction
WHERE x.locktype = 'transactionid' AND x.mode = 'ExclusiveLock' AND x.granted
  AND r.locktype = 'relation' AND r.relation = 'messages'::regclass
  AND r.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


@dataclass(frozen=True, slots=True)
class Sent:
    """The outcome of SEND_MESSAGE for a valid token: `id` is None when nothing was inserted."""

    caller: int
    id: int | None
    timestamp: str | None


@dataclass(frozen=True, slots=True)
class IdempotentOriginal:
    id: int
    timestamp: str
    recipient_id: int
    content: str


async def user_for_token(db: BoundedPool, token_hash: bytes, policy: SessionPolicy) -> int | None:
    """The id of the user holding a valid session, refreshing its idle clock now and then."""
    return await db.fetchval(AUTHENTICATE, *_caller(token_hash, policy))


async def create_user(db: BoundedPool, *, username: str, password_hash: str) -> int | None:
    """The new user's id, or None when the name (or a look-alike) is taken; `username` is valid."""
    key = usernames.account_key(username)
    return await db.fetchval(CREATE_USER, username, key, usernames.skeleton(key), password_hash)


async def user_for_login(db: BoundedPool, typed: str) -> asyncpg.Record | None:
    """The account a login names, under the PRECIS rule or, for older accounts, the rule they had."""
    return await db.fetchrow(USER_FOR_LOGIN, usernames.login_key(typed), usernames.legacy_key(typed), typed)


async def replace_password_hash(db: BoundedPool, user_id: int, *, old: str, new: str) -> None:
    await db.execute(REPLACE_PASSWORD_HASH, user_id, old, new)


async def create_session(db: BoundedPool, token_hash: bytes, *, user_id: int, policy: SessionPolicy) -> None:
    await db.execute(CREATE_SESSION, token_hash, user_id, policy.lifetime)


async def revoke_session(db: BoundedPool, token_hash: bytes) -> None:
    await db.execute(REVOKE_SESSION, token_hash)


async def send_message(
    db: BoundedPool, token_hash: bytes, policy: SessionPolicy, *,
    recipient: int, content: str, idempotency_key: str | None, sender: int | None,
) -> Sent | None:
    """Authenticate and store in one statement; None when the token is not valid."""
    row = await db.fetchrow(SEND_MESSAGE, *_caller(token_hash, policy),
                            recipient, content, idempotency_key, sender)
    return None if row is None else Sent(*row)


async def message_by_idempotency_key(
    db: BoundedPool, sender: int, idempotency_key: str
) -> IdempotentOriginal | None:
    row = await db.fetchrow(MESSAGE_BY_IDEMPOTENCY_KEY, sender, idempotency_key)
    return None if row is None else IdempotentOriginal(*row)


@dataclass(frozen=True, slots=True)
class Page:
    """A listing page: `messages` is the JSON array, ready to send."""

    caller: int
    messages: str
    next_start: int | None


async def list_messages(
    db: BoundedPool, token_hash: bytes, policy: SessionPolicy, *, recipient: int, start: int, limit: int,
) -> Page | None:
    """Authenticate and read a page in one statement; None for a token that is not valid."""
    row = await db.fetchrow(LIST_MESSAGES, *_caller(token_hash, policy), recipient, start, limit)
    return None if row is None else Page(*row)


async def messages_for_stream(
    db: BoundedPool, user: int, *, after: int, upto: int, limit: int
) -> list[asyncpg.Record]:
    """Up to `limit` messages `user` received or sent with `after` < id <= `upto`, by id."""
    return await db.fetch(STREAM_PAGE, user, after, upto, limit)


def _caller(token_hash: bytes, policy: SessionPolicy) -> tuple[bytes, float, float]:
    """$1 to $3 of every statement that starts with `_CALLER`."""
    return token_hash, policy.idle_timeout, policy.touch_interval
