"""Sessions: the token check every authenticated statement starts with, login sessions, listing and
revoking them (logout, one by its public id, all of a user's), the revocation check of streams and
the background deletion of expired ones."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from chatsvc.config import SessionPolicy
from chatsvc.db import BoundedPool
from chatsvc.queries.formats import timestamp_of

# A session is valid while neither its absolute nor its idle expiry has passed.
# The idle clock is written only when it is older than the touch interval, so
# a busy client does not turn every read into a write. $1 token hash, $2 idle
# timeout, $3 touch interval (seconds). Every statement that authenticates starts
# with this same text, so that authentication and the work are one round trip.
# CALLER_UNTOUCHED, without the touch, is for statements that delete sessions: they must not
# also update one of those rows in the same statement.
CALLER_UNTOUCHED = """
WITH caller AS (
    SELECT user_id FROM sessions
    WHERE token_hash = $1
      AND expires_at > now()
      AND last_seen_at > now() - make_interval(secs => $2)
)"""
CALLER = CALLER_UNTOUCHED + """, touch AS (
    UPDATE sessions SET last_seen_at = now()
    WHERE token_hash = $1
      AND last_seen_at < now() - make_interval(secs => $3)
      AND EXISTS (SELECT FROM caller)
)"""

AUTHENTICATE = CALLER + """
SELECT user_id FROM caller
"""

CREATE_SESSION = """
INSERT INTO sessions (token_hash, user_id, expires_at, user_agent)
VALUES ($1, $2, now() + make_interval(secs => $3), $4)
"""

REVOKE_SESSION = "DELETE FROM sessions WHERE token_hash = $1"

# sql/0003_revocation.sql's trigger: the ids of the users whose sessions went, or "*" (chatsvc.revocation).
REVOCATIONS_CHANNEL = "chatsvc_revoked"

# Of the tokens $1, those whose session is still valid (the rule of CALLER, without refreshing the
# idle clock: a revocation check is not the client's activity). $2 idle timeout.
STILL_VALID = """
SELECT token_hash FROM sessions
WHERE token_hash = ANY($1::bytea[])
  AND expires_at > now()
  AND last_seen_at > now() - make_interval(secs => $2)
"""

# chatsvc.session_cleanup's lock: any constant works; it only has to be the same for every replica
# (and differ from migrate's).
ADVISORY_LOCK_KEY = 0x63686174736573  # "chatses"

# The number of rows deleted, or NULL when another replica holds the lock. $1 batch size, $2 lock key.
DELETE_EXPIRED_BATCH = """
WITH lock AS (
    SELECT pg_try_advisory_xact_lock($2) AS held
), doomed AS (
    SELECT token_hash FROM sessions
    WHERE expires_at < now() AND (SELECT held FROM lock)
    ORDER BY expires_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), deleted AS (
    DELETE FROM sessions WHERE token_hash IN (SELECT token_hash FROM doomed) RETURNING 1
)
SELECT CASE WHEN (SELECT held FROM lock) THEN (SELECT count(*) FROM deleted) END
"""

# The caller's live sessions, newest first, at most $4 of them: the presented one (live, or the
# caller would be empty) and the $4 - 1 newest others, each part a range of an index, so a user
# who logged in a hundred thousand times costs what one with $4 sessions does. None at all when
# the token is not valid.
SESSIONS = CALLER + """
SELECT caller.user_id AS caller, s.public_id::text AS id,
       """ + timestamp_of("s.created_at") + """ AS created_at,
       """ + timestamp_of("s.last_seen_at") + """ AS last_seen_at,
       """ + timestamp_of("s.expires_at") + """ AS expires_at,
       s.user_agent, s.token_hash = $1 AS current
FROM caller CROSS JOIN LATERAL (
    (SELECT * FROM sessions WHERE token_hash = $1)
    UNION ALL
    (SELECT * FROM sessions
     WHERE user_id = caller.user_id AND token_hash <> $1
       AND expires_at > now() AND last_seen_at > now() - make_interval(secs => $2)
     ORDER BY created_at DESC, public_id
     LIMIT $4::int - 1)
) AS s
ORDER BY s.created_at DESC, s.public_id
"""

# Revokes the caller's session with public id $3; the token hashes revoked (none: not theirs).
REVOKE_SESSION_BY_ID = CALLER_UNTOUCHED + """, revoked AS (
    DELETE FROM sessions USING caller
    WHERE sessions.user_id = caller.user_id AND sessions.public_id = $3
    RETURNING sessions.token_hash
)
SELECT caller.user_id AS caller, coalesce((SELECT array_agg(token_hash) FROM revoked), '{}') AS revoked
FROM caller
"""

# Revokes every session of the caller, the presented one included.
REVOKE_ALL_SESSIONS = CALLER_UNTOUCHED + """, revoked AS (
    DELETE FROM sessions USING caller
    WHERE sessions.user_id = caller.user_id
    RETURNING sessions.token_hash
)
SELECT caller.user_id AS caller, coalesce((SELECT array_agg(token_hash) FROM revoked), '{}') AS revoked
FROM caller
"""



async def user_for_token(db: BoundedPool, token_hash: bytes, policy: SessionPolicy) -> int | None:
    """The id of the user holding a valid session, refreshing its idle clock now and then."""
    user_id: int | None = await db.fetchval(AUTHENTICATE, *caller_parameters(token_hash, policy))
    return user_id


async def create_session(db: BoundedPool, token_hash: bytes, *, user_id: int, policy: SessionPolicy,
                         user_agent: str | None) -> None:
    await db.execute(CREATE_SESSION, token_hash, user_id, policy.lifetime, user_agent)


async def revoke_session(db: BoundedPool, token_hash: bytes) -> None:
    await db.execute(REVOKE_SESSION, token_hash)


async def delete_expired_sessions(db: BoundedPool, batch: int) -> int | None:
    """Delete every expired session, a batch at a time; how many, or None if another replica is at it."""
    total = 0
    while True:
        deleted: int | None = await db.fetchval(DELETE_EXPIRED_BATCH, batch, ADVISORY_LOCK_KEY)
        if deleted is None:
            return None if total == 0 else total
        total += deleted
        if deleted < batch:
            return total


async def still_valid(connection: asyncpg.Connection, token_hashes: list[bytes], *, idle_timeout: float,
                      timeout: float) -> set[bytes]:
    """Which of `token_hashes` a valid session still holds; on the listener's own connection."""
    rows = await connection.fetch(STILL_VALID, token_hashes, idle_timeout, timeout=timeout)
    return {bytes(row["token_hash"]) for row in rows}
@dataclass(frozen=True, slots=True)
class Revoked:
    caller: int
    token_hashes: list[bytes]


async def sessions_of_caller(db: BoundedPool, token_hash: bytes, policy: SessionPolicy, *,
                             limit: int) -> list[asyncpg.Record]:
    """The caller's live sessions, newest first, at most `limit` (the presented one always among
    them); [] for a token that is not valid."""
    return await db.fetch(SESSIONS, *caller_parameters(token_hash, policy), limit)


async def revoke_session_by_id(db: BoundedPool, token_hash: bytes, policy: SessionPolicy, *,
                               public_id: str) -> Revoked | None:
    """Revoke the caller's session `public_id`; None for a token that is not valid."""
    row = await db.fetchrow(REVOKE_SESSION_BY_ID, token_hash, policy.idle_timeout, public_id)
    return None if row is None else Revoked(row["caller"], list(row["revoked"]))


async def revoke_all_sessions(db: BoundedPool, token_hash: bytes, policy: SessionPolicy) -> Revoked | None:
    """Revoke every session of the caller; None for a token that is not valid."""
    row = await db.fetchrow(REVOKE_ALL_SESSIONS, token_hash, policy.idle_timeout)
    return None if row is None else Revoked(row["caller"], list(row["revoked"]))


def caller_parameters(token_hash: bytes, policy: SessionPolicy) -> tuple[bytes, float, float]:
    """$1 to $3 of every statement that starts with `CALLER`."""
    return token_hash, policy.idle_timeout, policy.touch_interval
