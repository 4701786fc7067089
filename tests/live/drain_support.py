"""What the drain tests share: their settings, the load they run across a SIGTERM, and the checks
that nothing it sent was lost (tests/live/test_drain.py, test_drain_workers.py)."""

from __future__ import annotations

import asyncio
import json
import math
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncpg
import httpx
import pytest

from chatsvc.testing import (
    NO_RATE_LIMITS,
    ServerProcess,
    User,
)

DRAIN_DELAY = 1.0
SHUTDOWN_TIMEOUT = 3.0
SETTINGS = {
    "CHATSVC_DRAIN_DELAY": str(DRAIN_DELAY),
    "CHATSVC_SHUTDOWN_TIMEOUT": str(SHUTDOWN_TIMEOUT),
    "CHATSVC_READ_TIMEOUT": "5",
    **NO_RATE_LIMITS,
}
# Readiness fails "at once": polled every 5 ms, judged by order (200s, then only 503s), never by
# how soon, since a loaded machine may run the signal handler late.
POLL_INTERVAL = 0.005
# Load stops this long before the listeners can close: a request crossing the server's FIN on
# an idle keep-alive connection is a race no HTTP/1.1 server can rule out.
STOP_MARGIN = 0.2
# Only stops a hung test: how fast a process exits is a matter for the benchmark, not a test.
HUNG = 60.0
LOAD_TASKS = 8
# The slow request starts this long after the signal and takes SLOW_DURATION, so the listeners
# close (at DRAIN_DELAY) while it is in flight.
SLOW_START = 0.2
SLOW_DURATION = 1.5



async def stored_message_ids(url: str, ids: list[int]) -> set[int]:
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch("SELECT id FROM messages WHERE id = ANY($1::bigint[])", ids)
    finally:
        await connection.close()
    return {row["id"] for row in rows}


async def wait_for_exit(server: ServerProcess, signalled_at: float, bound: float) -> tuple[int, float]:
    """The exit status and the seconds from the signal to the exit; fails past `bound` (a hang)."""
    remaining = max(0.0, signalled_at + bound - time.monotonic())
    try:
        code = await asyncio.to_thread(server.wait, remaining)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {bound} s after SIGTERM:\n{server.log()[-5000:]}")
    return code, time.monotonic() - signalled_at


def message(user: User, recipient: int, text: str) -> dict:
    return {"sender": user.id, "recipient": recipient, "content": {"type": "text", "text": text}}


async def slow_post(server: ServerProcess, user: User, text: str) -> httpx.Response:
    """POST /messages whose body trickles in over SLOW_DURATION seconds (chunked)."""
    body = json.dumps(message(user, user.id, text)).encode()
    pieces = 15

    async def trickle() -> AsyncIterator[bytes]:
        step = math.ceil(len(body) / pieces)
        for start in range(0, len(body), step):
            yield body[start:start + step]
            await asyncio.sleep(SLOW_DURATION / pieces)

    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        return await client.post("/messages", content=trickle(), headers=user.auth)


async def probe_new_connection(server: ServerProcess) -> str:
    """What a brand-new connection gets: "refused", "answered <status>", or the transport error."""
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.get(server.url + "/check")
    except httpx.ConnectError:
        return "refused"
    except httpx.HTTPError as error:
        return f"accepted, then {error!r}"
    return f"answered {response.status_code}"


@dataclass
class Outcome:
    route: str
    client: int  # which load task (one keep-alive connection each); -1 for the poller
    sent: float  # monotonic
    status: int | None
    error: str | None = None
    received: float = math.inf  # monotonic; when the answer was in


@dataclass
class DrainRun:
    """Everything observed while a server drained under load."""

    signalled_at: float = math.inf
    stop_at: float = math.inf
    first_503: float | None = None  # seconds from the signal to the first 503 received
    last_200_sent: float = -math.inf  # monotonic; sent before the server handled the signal
    checks: list[Outcome] = field(default_factory=list)  # the dedicated /check poller
    outcomes: list[Outcome] = field(default_factory=list)  # the load
    created: list[int] = field(default_factory=list)  # ids answered 201
    slow: httpx.Response | None = None
    exit_code: int | None = None
    exit_after: float | None = None

    def after_signal(self, outcome: Outcome) -> bool:
        return outcome.sent >= self.signalled_at

    def served_during_drain(self) -> list[Outcome]:
        return [o for o in self.outcomes if self.after_signal(o) and o.status is not None]

    def summary(self) -> str:
        during = self.served_during_drain()
        posts = sum(1 for o in during if o.route == "POST /messages" and o.status == 201)
        first = "never" if self.first_503 is None else f"{self.first_503 * 1000:.1f} ms"
        return (f"first 503 after {first}; "
                f"{len(self.outcomes)} load requests, {len(during)} served during the drain "
                f"({posts} messages created); exit {self.exit_code} after {self.exit_after:.2f} s")


async def drain_under_load(server: ServerProcess, users: list[User], *, warmup: float = 0.5) -> DrainRun:
    """Load the server, SIGTERM it, keep loading through the drain delay, wait for the exit."""
    run = DrainRun()

    def poll_check() -> None:
        # In a thread of its own, so the load tasks on the event loop do not delay its readings.
        with httpx.Client(base_url=server.url, timeout=5) as client:
            while time.monotonic() < run.stop_at:
                sent = time.monotonic()
                if sent > run.signalled_at + HUNG:
                    run.stop_at = sent  # never turned 503: end the load, the test fails
                    return
                try:
                    response = client.get("/check")
                except httpx.HTTPError as error:
                    run.checks.append(Outcome("GET /check", -1, sent, None, repr(error)))
                    run.stop_at = min(run.stop_at, time.monotonic())
                    return
                received = time.monotonic()
                run.checks.append(Outcome("GET /check", -1, sent, response.status_code, received=received))
                if response.status_code == 200:
                    run.last_200_sent = sent
                elif response.status_code == 503 and run.first_503 is None and sent >= run.signalled_at:
                    run.first_503 = received - run.signalled_at
                    # The server handled the signal after the last 200 was sent: its listeners
                    # close no sooner than DRAIN_DELAY after that, however late the handler ran.
                    handled_after = max(run.signalled_at, run.last_200_sent)
                    run.stop_at = handled_after + DRAIN_DELAY - STOP_MARGIN
                time.sleep(POLL_INTERVAL if run.first_503 is None else 0.02)

    async def load(number: int, user: User, peer: User) -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            for n in range(1_000_000):
                sent = time.monotonic()
                if sent >= run.stop_at:
                    return
                route = ("POST /messages", "GET /messages", "GET /check")[n % 3]
                try:
                    if route == "POST /messages":
                        response = await client.post(
                            "/messages", json=message(user, peer.id, f"load {n}"), headers=user.auth)
                    elif route == "GET /messages":
                        response = await client.get("/messages", headers=user.auth,
                                                    params={"recipient": peer.id, "limit": 5})
                    else:
                        response = await client.get("/check")
                except httpx.HTTPError as error:
                    run.outcomes.append(Outcome(route, number, sent, None, repr(error)))
                    # Refused after the listeners closed is "not sent"; judged by the test.
                    return
                run.outcomes.append(Outcome(route, number, sent, response.status_code,
                                            received=time.monotonic()))
                if response.status_code == 201:
                    run.created.append(response.json()["id"])

    async def slow() -> None:
        await asyncio.sleep(SLOW_START)
        run.slow = await slow_post(server, users[0], "slow, in flight when the listeners close")

    peers = users[1:] + users[:1]
    tasks = [asyncio.create_task(load(number, user, peer))
             for number, (user, peer) in enumerate(zip(users, peers, strict=True))]
    tasks.append(asyncio.create_task(asyncio.to_thread(poll_check)))
    await asyncio.sleep(warmup)
    # On a busy machine: signal only once the poller saw a 200 and the load is well under way.
    for _ in range(200):
        if any(o.status == 200 for o in run.checks) and len(run.outcomes) >= 2 * len(users):
            break
        await asyncio.sleep(0.05)
    run.signalled_at = time.monotonic()
    server.signal(signal.SIGTERM)
    # The load goes on until the poller sees the drain begin (it then sets stop_at).
    tasks.append(asyncio.create_task(slow()))
    try:
        await asyncio.gather(*tasks)
    finally:
        run.stop_at = min(run.stop_at, time.monotonic())  # ends the poller thread on any failure
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    run.exit_code, run.exit_after = await wait_for_exit(server, run.signalled_at, HUNG)
    return run


async def assert_drained_cleanly(run: DrainRun, server: ServerProcess) -> None:
    log = server.log()[-5000:]
    # /check: 200 before the signal, then 503 during the drain delay and never 200 again.
    # (One sent just before the signal may be answered after it, either way.)
    before = [o for o in run.checks if o.received < run.signalled_at]
    assert before and all(o.status == 200 for o in before), before
    assert run.first_503 is not None, f"/check never turned 503: {run.checks[-5:]}"
    # The poller keeps one connection (one process): from its first 503 on, nothing else.
    flapped = [o for o in run.checks if o.sent >= run.signalled_at + run.first_503 and o.status != 503]
    assert not flapped, flapped[:5]
    # Each load task keeps one connection too: once its /check said 503, never 200 again.
    load_checks = [o for o in run.outcomes if o.route == "GET /check" and o.status is not None]
    assert any(o.status == 503 for o in load_checks), load_checks[-5:]
    for client in {o.client for o in load_checks}:
        statuses = [o.status for o in load_checks if o.client == client]
        turned = statuses.index(503) if 503 in statuses else len(statuses)
        assert set(statuses[turned:]) <= {503}, (client, statuses)
    # Every request sent before the listeners closed got a complete, non-5xx answer.
    listeners_close = run.signalled_at + DRAIN_DELAY
    failed = [o for o in run.outcomes + run.checks
              if o.status is None and not (o.error and o.error.startswith("ConnectError")
                                           and o.sent >= listeners_close - 0.05)]
    assert not failed, f"{failed[:5]}\n{log}"
    errors = [o for o in run.outcomes if o.status is not None and o.status >= 500 and o.route != "GET /check"]
    assert not errors, errors[:5]
    # Serving went on through the drain delay: messages were created once readiness was failing.
    during = run.served_during_drain()
    draining_since = run.signalled_at + run.first_503
    late_posts = [o for o in during if o.route == "POST /messages" and o.status == 201
                  and o.received >= draining_since]
    assert late_posts, f"no message created once /check said 503: {during[-5:]}"
    # The request in flight when the listeners closed finished.
    if run.slow is not None:
        assert run.slow.status_code == 201, run.slow.text
        run.created.append(run.slow.json()["id"])
    # Every message answered 201 is stored.
    missing = set(run.created) - await stored_message_ids(server.database_url, run.created)
    assert not missing, f"answered 201 but not stored: {sorted(missing)[:10]}"
    assert run.exit_code == 0, f"exit status {run.exit_code}\n{log}"
