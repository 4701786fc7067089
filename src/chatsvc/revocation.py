"""Revocation reaches open streams at once, on every replica (docs/API.md, "Authentication" and "Streams").

To revoke sessions, delete their rows from `sessions` (or move their `expires_at` earlier): that
is all a handler does. sql/0003_revocation.sql's trigger then sends one NOTIFY per statement on `CHANNEL`,
naming the users whose sessions went (`*` when more than 100 did). Each process's listener
connection (fanout.Fanout) hears it and, in one query, asks which of those users' open streams
still hold a valid session; the others end at once. Logout, logout everywhere, deleting one
session and a password change all revoke this way. The periodic re-check of every stream
(`CHATSVC_STREAM_SESSION_CHECK`) stays as the safety net for a missed notification.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Protocol

import asyncpg

from chatsvc import queries

log = logging.getLogger("chatsvc.revocation")

CHANNEL = queries.sessions.REVOCATIONS_CHANNEL
EVERYONE = "*"


class Revocable(Protocol):
    """An open stream as revocation sees it: its session and the event that ends it."""

    digest: bytes
    revoked: asyncio.Event


class Revocations:
    """The users whose open streams must check their session, gathered from notifications."""

    def __init__(self) -> None:
        self._users: set[int] = set()
        self._everyone = False

    @property
    def pending(self) -> bool:
        return self._everyone or bool(self._users)

    def note(self, payload: str) -> None:
        """Record one notification's payload: user ids separated by spaces, or `*`."""
        if payload == EVERYONE:
            self._everyone = True
            return
        try:
            self._users.update(int(part) for part in payload.split())
        except ValueError:
            log.warning("a malformed revocation notification: every stream checks its session")
            self._everyone = True

    def note_everyone(self) -> None:
        """Notifications may have been missed (the listener reconnected): every stream checks."""
        self._everyone = True

    async def end_revoked(self, connection: asyncpg.Connection,
                          streams: Mapping[int, Iterable[Revocable]],
                          idle_timeout: float, timeout: float) -> int:
        """End the noted users' streams whose session is no longer valid; how many ended."""
        everyone, users = self._everyone, self._users
        self._everyone, self._users = False, set()
        concerned = [stream for user, held in streams.items() if everyone or user in users
                     for stream in held if not stream.revoked.is_set()]
        if not concerned:
            return 0
        digests = list({stream.digest for stream in concerned})
        try:
            valid = await queries.sessions.still_valid(connection, digests, idle_timeout=idle_timeout,
                                                       timeout=timeout)
        except BaseException:
            # Look again on the next pass (or the next connection).
            self._everyone |= everyone
            self._users |= users
            raise
        ended = 0
        for stream in concerned:
            if stream.digest not in valid:
                stream.revoked.set()
                ended += 1
        return ended
