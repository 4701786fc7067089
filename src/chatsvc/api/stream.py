"""`GET /messages/stream`: Server-Sent Events of the caller's messages, resumable by id."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Annotated

import asyncpg
from msgspec import Meta, Struct
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from chatsvc import metrics, queries
from chatsvc.api.common import authenticate, token_hash
from chatsvc.db import UNAVAILABLE_ERRORS
from chatsvc.errors import invalid_request, unavailable
from chatsvc.fanout import Subscription
from chatsvc.middleware.ratelimit import client_address, client_bucket
from chatsvc.openapi import Header, Operation, Reply, documented
from chatsvc.resources import Resources, resources_of
from chatsvc.schemas import MAX_ID

log = logging.getLogger("chatsvc.stream")

HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-store"),
           (b"x-accel-buffering", b"no"), (b"connection", b"close")]
# Sent at once, so the client has the headers before the first event; and EventSource clients
# reconnect after a second rather than their default of several.
PREAMBLE = b"retry: 1000\n\n"
KEEP_ALIVE = b": keep-alive\n\n"
SHUTDOWN = b'event: shutdown\ndata: {"reason": "draining"}\n\n'
# Rows read per query; fewer when the buffer has less room.
PAGE = 100
# A full buffer the reader takes nothing from for this long ends the stream.
SLOW_READER_GRACE_SECONDS = 1.0
# How long the last bytes (the shutdown event) may take to leave before the stream is just dropped.
FINISH_SECONDS = 1.0
RETRY_MIN_SECONDS = 0.25
RETRY_MAX_SECONDS = 5.0

_RESUME_ID = re.compile(r"[0-9]{1,19}")


class StreamQuery(Struct):
    """Query parameters of `GET /messages/stream`."""

    since: Annotated[Annotated[int, Meta(ge=0, le=MAX_ID)] | None, Meta(description=(
        "Replay every readable message with a larger id first; `Last-Event-ID` wins when both are "
        "given. Without either, the stream starts with the next new message."))] = None


class SlowReader(Exception):
    """The client left the buffer full: it resumes with `Last-Event-ID`, losing nothing."""


@documented(Operation(
    "Stream new messages (Server-Sent Events)",
    {200: Reply("`text/event-stream`: for each message the caller received or sent, `id: <id>`, "
                "`event: message`, `data: <the message as in the listing>`; when the caller or a peer "
                "moves a read marker of a conversation with the caller, `event: read`, "
                "`data: {\"reader\", \"peer\", \"last_read\"}` (no `id:`, not replayed); "
                "a `: keep-alive` comment every `CHATSVC_STREAM_HEARTBEAT` seconds; `event: shutdown` "
                "before the stream ends on a drain.", {"type": "string"}, media_type="text/event-stream"),
     400: "`since` or `Last-Event-ID` is not an integer from 0 to 2^63-1.",
     429: "Rate limited, or too many open streams: `CHATSVC_STREAM_MAX_PER_USER` for the caller, "
          "`CHATSVC_STREAM_MAX_PER_ADDRESS` for the client address (an IPv6 /64), "
          "`CHATSVC_STREAM_MAX_PER_PROCESS` for this server."},
    description="Messages are delivered in id order, each once. After a disconnect, send the last id "
                "received as `Last-Event-ID` (or `?since=`): the stream replays every message after "
                "it from the database, then goes live, with no gap and no duplicate. A client that "
                "reads too slowly is disconnected, and resumes the same way.",
    query=StreamQuery, authenticated=True, uses_database=True,
    headers=[Header("Last-Event-ID", "The id of the last message received: resume after it.",
                    {"type": "string", "pattern": "^[0-9]{1,19}$"})],
))
async def stream_messages(request: Request) -> Response | EventStream:
    """Server-Sent Events of every message the caller receives or sends, resumable by `Last-Event-ID`."""
    resources = resources_of(request)
    caller = await authenticate(request)
    since = _resume_point(request)
    if request.method == "HEAD":
        return Response(headers={name.decode(): value.decode() for name, value in HEADERS})
    fanout = resources.fanout
    if since is None and not fanout.ready.is_set():
        raise unavailable("real-time delivery is reconnecting to the database; retry shortly")
    address = client_bucket(client_address(request.scope, resources.settings.trusted_proxies))
    subscription = fanout.subscribe(caller, token_hash(request), address)  # 429 past the caps
    if since is None:
        try:
            since = await fanout.starting_point(subscription)
        except BaseException:
            subscription.close()
            raise
    return EventStream(resources, subscription, since)


def _resume_point(request: Request) -> int | None:
    """`Last-Event-ID`, else `?since=`, else None (start with the next new message)."""
    for name, raw in (("Last-Event-ID", request.headers.get("last-event-id")),
                      ("since", request.query_params.get("since"))):
        if raw is None or (name == "Last-Event-ID" and not raw.strip()):
            continue
        value = raw.strip()
        if not _RESUME_ID.fullmatch(value) or int(value) > MAX_ID:
            raise invalid_request(f"{name}: expected an integer from 0 to {MAX_ID}")
        return int(value)
    return None


class EventStream:
    """The response of one stream: a producer reads the database into a bounded buffer, a writer
    sends it; a watcher each for the client leaving, the drain and the session ending.

    Delivery is in id order and never skips: once a send was cut off, nothing is sent after it,
    so the client's last complete event is always a correct resume point.
    """

    def __init__(self, resources: Resources, subscription: Subscription, since: int) -> None:
        self._resources = resources
        self._settings = resources.settings
        self._pool = resources.pool
        self._fanout = resources.fanout
        self._subscription = subscription
        self._scanned = since  # every readable message up to here has been buffered
        self._capacity = resources.settings.stream_buffer
        self._buffer: list[bytes] = []
        self._ready = asyncio.Event()  # the buffer has something, or the stream is ending
        self._room = asyncio.Event()  # the writer has emptied the buffer
        self._ending: bytes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        reason = "error"
        try:
            await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
            await send({"type": "http.response.body", "body": PREAMBLE, "more_body": True})
            reason = await self._serve(receive, send)
        finally:
            self._subscription.close()
            metrics.STREAMS_ENDED.labels(reason=reason).inc()

    async def _serve(self, receive: Receive, send: Send) -> str:
        user_id = self._subscription.user_id
        writer = asyncio.create_task(self._write(send), name="stream-writer")
        # In order of precedence, should several end at once.
        watchers = {
            asyncio.create_task(_disconnected(receive), name="stream-disconnect"): "client",
            asyncio.create_task(self._produce(), name="stream-producer"): "slow",
            asyncio.create_task(self._resources.readiness.wait_draining(), name="stream-drain"): "shutdown",
            asyncio.create_task(self._watch_session(), name="stream-session"): "revoked",
        }
        try:
            done, _ = await asyncio.wait({writer, *watchers}, return_when=asyncio.FIRST_COMPLETED)
            await _cancel(*watchers)
            if writer in done:  # only a failed send ends the writer early: the client is gone
                error = writer.exception()
                if error is not None and not isinstance(error, OSError):
                    log.error("stream writer failed", exc_info=error, extra={"user_id": user_id})
                    return "error"
                return "client"
            finished = next(task for task in watchers if task in done)
            reason = watchers[finished]
            error = finished.exception()
            if isinstance(error, SlowReader):
                log.info("stream cut: the client reads too slowly",
                         extra={"user_id": user_id, "buffer": self._capacity})
            elif error is not None:
                log.error("stream failed", exc_info=error, extra={"user_id": user_id})
                return "error"
            if reason in ("shutdown", "revoked"):
                # What is buffered goes out first, then the end; a stalled client is just dropped.
                self._ending = SHUTDOWN if reason == "shutdown" else b""
                self._ready.set()
                await asyncio.wait({writer}, timeout=FINISH_SECONDS)
            return reason
        finally:
            # Cutting a send short is safe only because nothing is sent after it.
            await _cancel(writer, *watchers)

    async def _produce(self) -> None:
        """Buffer new messages each time the watermark passes one of the caller's; until cut."""
        wake = self._subscription.wake
        retry = RETRY_MIN_SECONDS
        while True:
            await wake.wait()
            wake.clear()
            try:
                await self._catch_up()
                await self._add_notices()
            except UNAVAILABLE_ERRORS as error:
                # The listener's reconnection wakes every stream; this covers a failure of the pool only.
                log.info("stream cannot read the database; retrying",
                         extra={"error": type(error).__name__, "retry_in": retry})
                await asyncio.sleep(retry)
                retry = min(2 * retry, RETRY_MAX_SECONDS)
                wake.set()
            else:
                retry = RETRY_MIN_SECONDS

    async def _catch_up(self) -> None:
        user = self._subscription.user_id
        while (upto := self._fanout.watermark) > self._scanned:
            limit = min(PAGE, await self._wait_for_room())
            rows = await queries.stream.messages_for_stream(self._pool, user, after=self._scanned, upto=upto,
                                                     limit=limit)
            self._buffer.extend(_event(row) for row in rows)
            if rows:
                self._ready.set()
            self._scanned = rows[-1]["id"] if len(rows) == limit else upto

    async def _add_notices(self) -> None:
        """Buffer the `read` events waiting, after the messages they may refer to."""
        if self._subscription.overflowed:
            raise SlowReader
        for notice in self._subscription.take_notices():
            await self._wait_for_room()
            self._buffer.append(notice)
            self._ready.set()

    async def _wait_for_room(self) -> int:
        while len(self._buffer) >= self._capacity:
            self._room.clear()
            try:
                async with asyncio.timeout(SLOW_READER_GRACE_SECONDS):
                    await self._room.wait()
            except TimeoutError:
                raise SlowReader from None
        return self._capacity - len(self._buffer)

    async def _write(self, send: Send) -> None:
        """Send what the buffer holds, or a keep-alive comment after a quiet heartbeat interval."""
        heartbeat = self._settings.stream_heartbeat
        while True:
            while not self._buffer and self._ending is None:
                self._ready.clear()
                try:
                    async with asyncio.timeout(heartbeat):
                        await self._ready.wait()
                except TimeoutError:
                    await send({"type": "http.response.body", "body": KEEP_ALIVE, "more_body": True})
            events = len(self._buffer)
            chunk = b"".join(self._buffer)
            self._buffer.clear()
            self._room.set()
            if self._ending is not None:
                await send({"type": "http.response.body", "body": chunk + self._ending, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                metrics.STREAM_EVENTS.inc(events)
                return
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            metrics.STREAM_EVENTS.inc(events)

    async def _watch_session(self) -> None:
        """Return once the stream's session is no longer valid (logged out, expired).

        A revocation ends it at once (chatsvc.revocation); the periodic check is the safety net.
        """
        while True:
            try:
                async with asyncio.timeout(self._settings.stream_session_check):
                    await self._subscription.revoked.wait()
                return
            except TimeoutError:
                pass
            try:
                user = await queries.sessions.user_for_token(self._pool, self._subscription.digest,
                                                    self._resources.session_policy)
            except UNAVAILABLE_ERRORS:
                continue  # the database is away; the stream waits for it like everything else
            if user != self._subscription.user_id:
                return


def _event(row: asyncpg.Record) -> bytes:
    """One `message` event; the data is the message exactly as a listing shows it."""
    data = row["json"].encode()
    if b"\n" in data or b"\r" in data:
        # Stored JSON from elsewhere may hold line breaks between tokens; each line is one data line.
        data = b"\ndata: ".join(data.splitlines())
    return b"id: %d\nevent: message\ndata: %s\n\n" % (row["id"], data)


async def _disconnected(receive: Receive) -> None:
    message: Message = await receive()
    while message["type"] != "http.disconnect":
        message = await receive()


async def _cancel(*tasks: asyncio.Task[object]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
