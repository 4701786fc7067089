"""The failover test's load: sends retried with their Idempotency-Key, listings, conversations, streams.

Every request is recorded with the time it was sent and what came back, so the test can say when
the service recovered and how many requests failed; every 201 is kept to be looked for in the
database; every stream event is kept per stream to prove each message arrived exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

from chatsvc.testing import User

# A send is retried with its key until it is answered 201, this often and for at most this long.
RETRY_SECONDS = 0.05
SEND_DEADLINE = 60.0
# Each stream is closed and resumed with Last-Event-ID this often, so resuming happens in every phase.
STREAM_RESUME_SECONDS = (1.5, 3.0)
REQUEST_TIMEOUT = 10.0


@dataclass
class Attempt:
    kind: str  # "send", "list" or "conversation"
    server: str
    sent: float  # monotonic
    answered: float
    status: int | None  # None: no HTTP answer (connection refused or cut)


@dataclass
class Sent:
    key: str
    sender: int
    recipient: int
    text: str
    ids: set[int] = field(default_factory=set)  # every id a 201 for this key named: exactly one
    answered: float = 0.0  # when the first 201 came


@dataclass
class StreamLog:
    user: int
    server: str
    events: list[int] = field(default_factory=list)
    connects: int = 0
    # Each connection: when it was made, the Last-Event-ID it sent, the first id it received.
    history: list[tuple[float, int, int | None]] = field(default_factory=list)


@dataclass
class Load:
    """Mixed load over several servers until `stop` is set; streams run until `close_streams`."""

    servers: dict[str, str]  # name: base URL
    users: list[User]
    tag: str = field(default_factory=lambda: secrets.token_hex(4))
    started: float = field(default_factory=time.monotonic)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    close_streams: asyncio.Event = field(default_factory=asyncio.Event)
    requests_done: asyncio.Event = field(default_factory=asyncio.Event)  # every send answered 201
    attempts: list[Attempt] = field(default_factory=list)
    sends: list[Sent] = field(default_factory=list)
    streams: list[StreamLog] = field(default_factory=list)

    async def run(self, senders: int, listers: int) -> None:
        """Run until stopped: `senders` and `listers` workers, one stream per user on every server."""
        streams = [asyncio.create_task(self._stream(StreamLog(user.id, server), user))
                   for user in self.users for server in self.servers]
        async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT) as client:
            await asyncio.gather(*(self._sender(client, n) for n in range(senders)),
                                 *(self._lister(client, n) for n in range(listers)))
        self.requests_done.set()
        await self.close_streams.wait()
        for task in streams:
            task.cancel()
        await asyncio.gather(*streams, return_exceptions=True)

    def first_success_after(self, moment: float) -> Attempt | None:
        """The first send sent after `moment` that was answered 201."""
        return min((a for a in self.attempts if a.kind == "send" and a.status == 201 and a.sent >= moment),
                   key=lambda a: a.answered, default=None)

    def statuses(self, since: float = 0.0) -> Counter[str]:
        """How many requests sent since `since` had each outcome, by process: "pooled send 503"."""
        return Counter(f"{a.server} {a.kind} {a.status or 'no answer'}"
                       for a in self.attempts if a.sent >= since)

    async def _sender(self, client: httpx.AsyncClient, worker: int) -> None:
        step = 0
        while not self.stop.is_set():
            user = self.users[(worker + step) % len(self.users)]
            peer = self.users[(worker + step + 1) % len(self.users)]
            step += 1
            key = f"failover-{self.tag}-{worker}-{step}"
            sent = Sent(key, user.id, peer.id, f"{key} {secrets.token_hex(4)}")
            self.sends.append(sent)
            await self._send_until_created(client, sent, user, worker + step)

    async def _send_until_created(self, client: httpx.AsyncClient, sent: Sent, user: User, turn: int) -> None:
        body = {"recipient": sent.recipient, "content": {"type": "text", "text": sent.text}}
        headers = {**user.auth, "Idempotency-Key": sent.key}
        deadline = time.monotonic() + SEND_DEADLINE
        while time.monotonic() < deadline:
            # Each retry goes to the next server, as a load balancer would send it.
            server = list(self.servers)[turn % len(self.servers)]
            turn += 1
            response = await self._request(client, "send", server, "POST", "/messages", json=body,
                                           headers=headers)
            if response is not None and response.status_code == 201:
                sent.ids.add(response.json()["id"])
                sent.answered = sent.answered or time.monotonic()
                return
            await asyncio.sleep(RETRY_SECONDS)

    async def _lister(self, client: httpx.AsyncClient, worker: int) -> None:
        step = 0
        while not self.stop.is_set():
            user = self.users[(worker + step) % len(self.users)]
            peer = self.users[(worker + step + 1) % len(self.users)]
            # Inbox listings and conversation reads in turn, each on every server.
            server = list(self.servers)[step // 2 % len(self.servers)]
            step += 1
            if step % 2:
                await self._request(client, "list", server, "GET", "/messages", headers=user.auth,
                                    params={"recipient": user.id, "limit": 20})
            else:
                await self._request(client, "conversation", server, "GET",
                                    f"/conversations/{peer.id}/messages", headers=user.auth,
                                    params={"limit": 20})
            await asyncio.sleep(RETRY_SECONDS)

    async def _request(self, client: httpx.AsyncClient, kind: str, server: str, method: str, path: str,
                       **options: object) -> httpx.Response | None:
        started = time.monotonic()
        try:
            response = await client.request(method, self.servers[server] + path, **options)  # type: ignore[arg-type]
        except httpx.HTTPError:
            response = None
        self.attempts.append(Attempt(kind, server, started, time.monotonic(),
                                     None if response is None else response.status_code))
        return response

    async def _stream(self, log: StreamLog, user: User) -> None:
        """Hold a stream open, and resume it with Last-Event-ID after every end, cut or failure."""
        self.streams.append(log)
        async with httpx.AsyncClient(timeout=httpx.Timeout(REQUEST_TIMEOUT, read=None)) as client:
            while True:
                # The first connection starts before the first message: since 0 replays everything.
                since = log.events[-1] if log.events else 0
                headers = {**user.auth, "Last-Event-ID": str(since)}
                log.connects += 1
                log.history.append((time.monotonic(), since, None))
                with contextlib.suppress(httpx.HTTPError, TimeoutError):
                    async with asyncio.timeout(random.uniform(*STREAM_RESUME_SECONDS)):
                        await self._read_events(client, log, headers)
                await asyncio.sleep(RETRY_SECONDS)

    async def _read_events(self, client: httpx.AsyncClient, log: StreamLog, headers: dict[str, str]) -> None:
        url = self.servers[log.server] + "/messages/stream"
        async with client.stream("GET", url, headers=headers) as response:
            if response.status_code != 200:
                return
            async for line in response.aiter_lines():
                if line.startswith("id: "):
                    log.events.append(int(line[4:]))
                    if log.history[-1][2] is None:
                        log.history[-1] = (*log.history[-1][:2], log.events[-1])
