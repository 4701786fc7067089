"""Expired sessions are deleted in the background, so the table does not grow forever.

Every `CHATSVC_SESSION_CLEANUP_INTERVAL` seconds each process tries; one replica at a time does
the work, under a transaction-level advisory lock taken by each batch's own statement (a replica
that does not get it leaves the round to the one that did). Batches of
`CHATSVC_SESSION_CLEANUP_BATCH` rows keep every statement short. Only sessions past their absolute
expiry go, found by the `sessions_expires_at` index: an idle-expired session is refused by every
request already and reaches its absolute expiry within `CHATSVC_SESSION_LIFETIME`.
"""

from __future__ import annotations

import asyncio
import logging

from chatsvc.db import UNAVAILABLE_ERRORS, BoundedPool
from chatsvc.login_throttle import delete_passed_windows

log = logging.getLogger("chatsvc.session_cleanup")

# Any constant works; it only has to be the same for every replica (and differ from migrate's).
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


async def clean_up_sessions_forever(db: BoundedPool, interval: float, batch: int,
                                    login_failure_window: float) -> None:
    """The background task, until cancelled: every `interval` seconds, `delete_expired_sessions`,
    and the failed-login counts whose window has passed (chatsvc.login_throttle)."""
    while True:
        await asyncio.sleep(interval)
        try:
            await delete_passed_windows(db, login_failure_window, batch)
            deleted = await delete_expired_sessions(db, batch)
        except UNAVAILABLE_ERRORS as error:
            log.info("session cleanup skipped: the database is unavailable",
                     extra={"error": type(error).__name__})
            continue
        if deleted:
            log.info("deleted expired sessions", extra={"sessions": deleted})
