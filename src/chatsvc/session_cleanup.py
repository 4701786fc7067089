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
from chatsvc.queries.login_failures import delete_passed_windows
from chatsvc.queries.sessions import delete_expired_sessions

log = logging.getLogger("chatsvc.session_cleanup")


async def clean_up_sessions_forever(db: BoundedPool, interval: float, batch: int,
                                    login_failure_window: float) -> None:
    """The background task, until cancelled: every `interval` seconds, `delete_expired_sessions`,
    and the failed-login counts whose window has passed (queries.login_failures)."""
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
