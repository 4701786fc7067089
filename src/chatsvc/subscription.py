"""An open stream's registration with its process's fan-out (chatsvc.fanout)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class TooManyStreams(Exception):
    """A cap on open streams is reached (per user, per process); the message says which."""


class Subscription:
    """One open stream's registration: `wake` is set whenever it should read the database or
    send a notice, `revoked` once its session (the token of SHA-256 `digest`) was revoked."""

    __slots__ = ("_on_close", "address", "closed", "digest", "first_look", "notices", "overflowed",
                 "revoked", "settled_at_start", "user_id", "wake")

    def __init__(self, user_id: int, digest: bytes, address: str, *, first_look: int, settled: int,
                 on_close: Callable[[Subscription], None]) -> None:
        self._on_close = on_close
        self.user_id = user_id
        self.digest = digest
        self.address = address
        self.wake = asyncio.Event()
        self.wake.set()  # the first look: the replay
        self.revoked = asyncio.Event()
        self.closed = False
        # Events that are not messages (`read`), waiting for the stream to send them. Bounded by
        # the stream buffer: a stream that lets more pile up is cut as a slow reader.
        self.notices: list[bytes] = []
        self.overflowed = False
        # The first look begun after it subscribed (chatsvc.fanout's doc), and the watermark then:
        # its first read goes at least this far.
        self.first_look = first_look
        self.settled_at_start = settled

    def notify(self, event: bytes, bound: int) -> None:
        if len(self.notices) >= bound:
            self.overflowed = True
        else:
            self.notices.append(event)
        self.wake.set()

    def take_notices(self) -> list[bytes]:
        notices, self.notices = self.notices, []
        return notices

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._on_close(self)
