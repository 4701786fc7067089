"""Real-time fan-out: one LISTEN connection per process, the settled watermark, the open streams.

A notification only says "messages for users X and Y may exist"; each stream then reads the
database from its own cursor, so the database stays the one source of truth. What a stream may
read is bounded by the *watermark* (chatsvc.horizon): the largest id below which no message can
still commit.

A process looks at the database only for the streams it holds: a notification concerning none of
them is dropped without a look, so the fan-out's database work does not grow with the number of
processes. The watermark then lags behind what committed, which is safe (a stream reads up to it,
never past it). A new subscription makes up for the notifications dropped before it: it waits for
the first look *begun* after it subscribed and is woken once the watermark reaches the newest id
that look saw. Every message whose notification had arrived committed before that look began, so
its id is at most that one. A stream opened without a resume point starts at the watermark that
same look leaves (`Fanout.starting_point`): whatever commits after it has a larger id.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time

import asyncpg

from chatsvc import metrics, queries, revocation
from chatsvc.announce import Outbox
from chatsvc.config import Settings
from chatsvc.db import UNAVAILABLE_ERRORS
from chatsvc.horizon import XID32, Horizon, Unannounced, in_progress
from chatsvc.revocation import Revocations
from chatsvc.subscription import Subscription, TooManyStreams

__all__ = ["Fanout", "Horizon", "Subscription", "TooManyStreams", "in_progress"]

log = logging.getLogger("chatsvc.fanout")

RECONNECT_MIN_SECONDS = 0.05
RECONNECT_MAX_SECONDS = 2.0
# While an id waits for older transactions, the snapshot is read again this soon, then less often.
SETTLE_POLL_MIN_SECONDS = 0.001
SETTLE_POLL_MAX_SECONDS = 0.025
# A transaction still in progress after this long is asked whether it writes `messages` at all.
WRITER_CHECK_AFTER_SECONDS = 0.1
# Notifications held for routing while the watermark lags; past it every stream is woken instead.
MAX_PENDING_EVENTS = 100_000
# Errors that mean "the listener connection is gone or unusable": reconnect.
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    *UNAVAILABLE_ERRORS, asyncpg.PostgresError, asyncpg.InterfaceError)
_CONNECT_ERRORS: tuple[type[BaseException], ...] = (*_CONNECTION_ERRORS, OSError)


class Fanout:
    """The process's LISTEN connection, its watermark, and the streams it wakes."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.horizon = Horizon()
        self.ready = asyncio.Event()  # the watermark has been read from the database at least once
        self._streams: dict[int, set[Subscription]] = {}
        self._per_address: dict[str, int] = {}
        self._count = 0
        # Heap of (id, sender, recipient, monotonic time of its notification), id > watermark.
        self._pending: list[tuple[int, int, int, float]] = []
        self._wake_all_pending = False
        self.revocations = Revocations()
        # Looks begun and looks completed, counted; `_looked` is set (and replaced) after each one.
        self._looks_begun = 0
        self._looks_done = 0
        self._looked = asyncio.Event()
        # Subscriptions waiting for their first look, and (id, n, subscription) to wake once the
        # watermark reaches id: the notifications dropped before they subscribed.
        self._new: list[Subscription] = []
        self._wake_at: list[tuple[int, int, Subscription]] = []
        self._wake_at_count = 0
        self._outbox = Outbox()
        self.unannounced = Unannounced()
        # `_kick` wakes the listener's loop; it looks at the database only when `_look_wanted`.
        self._kick = asyncio.Event()
        self._look_wanted = False
        self._flushed = asyncio.Event()  # set after each batch of announcements went out
        self._task: asyncio.Task[None] | None = None

    @property
    def watermark(self) -> int:
        return self.horizon.watermark

    @property
    def open_streams(self) -> int:
        return self._count

    @property
    def looks(self) -> int:
        """Looks at the database begun so far (the horizon query), for tests and benchmarks."""
        return self._looks_begun

    async def start(self) -> None:
        """Start listening; wait (up to `CHATSVC_DB_TIMEOUT`) for the first watermark."""
        self._task = asyncio.create_task(self._run(), name="stream-listener")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.db_timeout):
                await self.ready.wait()

    async def close(self) -> None:
        if self._task is not None and self._outbox:
            # The last announcements go out first; if they cannot, the periodic checks find them.
            self._flushed.clear()
            self._kick.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.db_timeout):
                    await self._flushed.wait()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def subscribe(self, user_id: int, digest: bytes, address: str) -> Subscription:
        """Register a stream of `user_id`'s messages, held with the token of SHA-256 `digest` from
        client `address` (ratelimit.client_bucket); TooManyStreams past a cap.

        The per-address cap keeps a few hundred accounts that never read, all from one machine,
        from filling the process's slots and locking everyone out of real-time delivery.
        """
        settings = self.settings
        if self._count >= settings.stream_max_per_process:
            raise TooManyStreams(f"this server holds its maximum of {settings.stream_max_per_process} "
                            "streams; retry, perhaps on another replica")
        if self._per_address.get(address, 0) >= settings.stream_max_per_address:
            raise TooManyStreams(f"at most {settings.stream_max_per_address} streams per client address "
                                 "are open at once; close one first")
        streams = self._streams.setdefault(user_id, set())
        if len(streams) >= settings.stream_max_per_user:
            raise TooManyStreams(f"at most {settings.stream_max_per_user} streams per user are open at once; "
                            "close one first")
        subscription = Subscription(user_id, digest, address, first_look=self._looks_begun + 1,
                                    settled=self.watermark, on_close=self._unsubscribe)
        streams.add(subscription)
        self._per_address[address] = self._per_address.get(address, 0) + 1
        self._count += 1
        metrics.STREAMS_OPEN.inc()
        self._new.append(subscription)
        self._want_look()
        return subscription

    async def starting_point(self, subscription: Subscription) -> int:
        """Where a stream without a resume point starts: the watermark after the subscription's
        first look. Ids at or below it had all ended when that look began; the stream was
        registered before, so it hears of every message committing later. Should the look not
        come within `CHATSVC_DB_TIMEOUT`, the watermark as it stands: older, so it only replays
        a few messages more."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.db_timeout):
                while self._looks_done < subscription.first_look:
                    await self._looked.wait()
        return self.watermark

    def _unsubscribe(self, subscription: Subscription) -> None:
        streams = self._streams.get(subscription.user_id)
        if streams is None or subscription not in streams:
            return
        streams.discard(subscription)
        if not streams:
            del self._streams[subscription.user_id]
        held = self._per_address.pop(subscription.address) - 1
        if held:
            self._per_address[subscription.address] = held
        self._count -= 1
        metrics.STREAMS_OPEN.dec()

    def announce(self, message_id: int, sender: int, recipient: int) -> None:
        """Tell every process of a message this one stored, once its statement has committed; sent
        with whatever else gathered meanwhile, off the request (chatsvc.announce)."""
        self._outbox.add(message_id, sender, recipient)
        self._kick.set()

    def _want_look(self) -> None:
        self._look_wanted = True
        self._kick.set()

    def _wake(self, *users: int) -> None:
        for user in users:
            for subscription in self._streams.get(user, ()):
                subscription.wake.set()

    def _wake_everyone(self) -> None:
        for streams in self._streams.values():
            for subscription in streams:
                subscription.wake.set()

    def _on_read(self, connection: object, pid: int, channel: str, payload: object) -> None:
        """A read marker moved: `event: read` to the reader's streams and the peer's."""
        try:
            reader, peer, last_read = (int(part) for part in str(payload).split(":"))
        except ValueError:
            log.warning("ignoring a malformed notification", extra={"channel": channel})
            return
        event = b'event: read\ndata: {"reader":%d,"peer":%d,"last_read":%d}\n\n' % (reader, peer, last_read)
        for user in {reader, peer}:
            for subscription in self._streams.get(user, ()):
                subscription.notify(event, self.settings.stream_buffer)

    def _on_revoked(self, connection: object, pid: int, channel: str, payload: object) -> None:
        self.revocations.note(str(payload))
        self._kick.set()

    def _on_notification(self, connection: object, pid: int, channel: str, payload: object) -> None:
        payload = str(payload)  # asyncpg passes the notification's text
        if payload == "*":
            if self._count:  # else nobody here to wake; a later subscription catches up itself
                self._wake_all_pending = True
                self._want_look()
            return
        try:
            events = [tuple(int(part) for part in item.split(":")) for item in payload.split()]
        except ValueError:
            log.warning("ignoring a malformed notification", extra={"channel": channel})
            return
        now = time.monotonic()
        for event in events:
            if len(event) != 3:
                continue
            message_id, sender, recipient = event
            self.unannounced.heard(message_id)
            if message_id <= self.watermark:
                self._wake(sender, recipient)
                metrics.STREAM_FANOUT_LAG.observe(0.0)
            elif sender in self._streams or recipient in self._streams:
                heapq.heappush(self._pending, (message_id, sender, recipient, now))
                self._want_look()
            # Else no stream here reads it: no look (a stream opened later catches up by itself).
        if len(self._pending) > MAX_PENDING_EVENTS:
            self._pending.clear()
            self._wake_all_pending = True

    async def _run(self) -> None:
        delay = RECONNECT_MIN_SECONDS
        while True:
            try:
                connection = await asyncpg.connect(
                    self.settings.database_url, timeout=self.settings.db_timeout,
                    # A NOTIFY takes an xid, so its commit would wait for a WAL flush; the
                    # connection writes nothing else, and a notification lost in a crash is made
                    # up for (every stream looks on reconnection), so none of its commits waits.
                    server_settings={"application_name": "chatsvc-listener", "timezone": "UTC",
                                     "synchronous_commit": "off"})
            except _CONNECT_ERRORS as error:
                log.warning("stream listener cannot connect; retrying",
                            extra={"error": type(error).__name__, "retry_in": delay})
                await asyncio.sleep(delay)
                delay = min(2 * delay, RECONNECT_MAX_SECONDS)
                continue
            delay = RECONNECT_MIN_SECONDS
            try:
                await self._follow(connection)
            except _CONNECTION_ERRORS as error:
                log.warning("stream listener lost its connection; reconnecting",
                            extra={"error": type(error).__name__})
                metrics.STREAM_LISTENER_RECONNECTS.inc()
            except Exception:
                log.exception("stream listener failed; reconnecting")
                metrics.STREAM_LISTENER_RECONNECTS.inc()
                await asyncio.sleep(RECONNECT_MAX_SECONDS)
            finally:
                connection.terminate()  # close() could wait on a dead socket

    async def _follow(self, connection: asyncpg.Connection) -> None:
        """LISTEN on `connection` and keep the watermark current until the connection fails."""
        connection.add_termination_listener(lambda _: self._kick.set())
        await connection.add_listener(queries.stream.MESSAGES_CHANNEL, self._on_notification)
        await connection.add_listener(revocation.CHANNEL, self._on_revoked)
        await connection.add_listener(queries.conversations.READS_CHANNEL, self._on_read)
        # Anything committed while no connection was listening went unheard: every stream looks,
        # and checks its session.
        self._wake_all_pending = True
        self.revocations.note_everyone()
        self._want_look()
        first = True
        poll = SETTLE_POLL_MIN_SECONDS
        periodic_at = time.monotonic() + self.settings.health_interval
        announced_at = 0.0
        while True:
            # Idle, the periodic look doubles as the connection's health check.
            wait = poll if self.horizon.pending else max(0.0, periodic_at - time.monotonic())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._kick.wait()
            self._kick.clear()
            if connection.is_closed():
                raise asyncpg.ConnectionDoesNotExistError("the listener connection closed")
            if self._outbox:
                # At most one announcement per window (CHATSVC_STREAM_ANNOUNCE_WINDOW).
                if (rest := announced_at + self.settings.stream_announce_window - time.monotonic()) > 0:
                    await asyncio.sleep(rest)
                announced_at = time.monotonic()
                await connection.execute(queries.stream.ANNOUNCE, queries.stream.MESSAGES_CHANNEL,
                                         self._outbox.take(), timeout=self.settings.db_timeout)
                self._flushed.set()
            periodic = time.monotonic() >= periodic_at
            if self._look_wanted or periodic or self.horizon.pending:
                self._look_wanted = False
                await self._look(connection)
            if first:
                self.unannounced.restart(self.watermark)
                first = False
            if periodic:
                periodic_at = time.monotonic() + self.settings.health_interval
                await self._find_unannounced(connection)
            if self.revocations.pending:
                await self.revocations.end_revoked(connection, self._streams,
                                                   self.settings.session_idle_timeout,
                                                   self.settings.db_timeout)
            poll = min(2 * poll, SETTLE_POLL_MAX_SECONDS) if self.horizon.pending else SETTLE_POLL_MIN_SECONDS

    async def _find_unannounced(self, connection: asyncpg.Connection) -> None:
        """Wake the streams of messages settled since the previous periodic look that were never
        announced (written by something other than a chatsvc process, or by one that stopped
        between its commit and the announcement)."""
        missing = self.unannounced.check(self.watermark)
        if not self._count or missing == []:
            return
        if missing is None:
            self._wake_everyone()
            return
        for row in await connection.fetch(queries.stream.MESSAGES_BY_ID, missing,
                                          timeout=self.settings.db_timeout):
            self._wake(row["sender_id"], row["recipient_id"])

    async def _look(self, connection: asyncpg.Connection) -> None:
        """Read the newest id and the transactions in progress; deliver what became settled."""
        wake_all, self._wake_all_pending = self._wake_all_pending, False
        self._looks_begun += 1
        generation, new, self._new = self._looks_begun, self._new, []
        try:
            row = await connection.fetchrow(queries.stream.MESSAGES_HORIZON, timeout=self.settings.db_timeout)
            assert row is not None  # an aggregate without GROUP BY returns exactly one row
            now = time.monotonic()
            running = {xid & XID32 for xid in in_progress(row["snapshot"])} | set(row["assigned"])
            _, everyone = self.horizon.observe(row["max_id"], running, now, wake_all)
            if self.horizon.pending and self.horizon.oldest_wait(now) >= WRITER_CHECK_AFTER_SECONDS:
                writers = set(await connection.fetchval(queries.stream.MESSAGE_WRITERS,
                                                        timeout=self.settings.db_timeout))
                idle = {xid for xid in self.horizon.waiting() if xid & XID32 not in writers}
                everyone |= self.horizon.discard(idle)[1]
        except BaseException:
            self._wake_all_pending |= wake_all
            self._new = new + self._new
            raise
        for subscription in new:
            if not subscription.closed and row["max_id"] > subscription.settled_at_start:
                self._wake_at_count += 1
                heapq.heappush(self._wake_at, (row["max_id"], self._wake_at_count, subscription))
        self._looks_done = generation
        looked, self._looked = self._looked, asyncio.Event()
        looked.set()
        self._deliver(everyone)
        if not self.horizon.pending:
            self.ready.set()

    def _deliver(self, everyone: bool) -> None:
        now = time.monotonic()
        while self._wake_at and self._wake_at[0][0] <= self.watermark:
            heapq.heappop(self._wake_at)[2].wake.set()
        while self._pending and self._pending[0][0] <= self.watermark:
            _, sender, recipient, notified_at = heapq.heappop(self._pending)
            metrics.STREAM_FANOUT_LAG.observe(now - notified_at)
            if not everyone:
                self._wake(sender, recipient)
        if everyone:
            self._wake_everyone()
