"""Shutdown as docs/API.md promises it, against real `chatsvc serve` processes over TCP.

SIGTERM: `/check` and `/readyz` turn 503 at once, requests keep being served for the drain delay,
then the listeners close, requests in flight finish, idle keep-alive connections are closed
cleanly, and the process exits 0. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import pytest
from prometheus_client.mmap_dict import MmapedDict

from chatsvc import metrics
from chatsvc.testing import (
    NO_RATE_LIMITS,
    DatabaseFactory,
    ServerProcess,
    User,
    kill_if_same,
    make_users,
    start_time,
)
from tests.live.conftest import Launch

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


@pytest.fixture
def server_settings() -> dict[str, str]:
    return SETTINGS


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


async def test_drain_under_load_serves_every_request_and_exits_0(launch: Launch) -> None:
    server = await launch()
    users = await make_users(server, LOAD_TASKS)
    run = await drain_under_load(server, users)
    print("drain, 1 process:", run.summary())
    await assert_drained_cleanly(run, server)


async def test_admin_probes_during_the_drain_delay(launch: Launch) -> None:
    server = await launch()
    async with httpx.AsyncClient(base_url=server.admin_url, timeout=5) as admin:
        ready = await admin.get("/readyz")
        assert (ready.status_code, ready.json()) == (200, {"status": "ready"}), ready.text
        signalled_at = time.monotonic()
        server.signal(signal.SIGTERM)
        readyz: list[tuple[float, int, object]] = []
        healthz: list[tuple[float, int, object]] = []
        # Polled until the drain is seen, then on until before the listeners can close: the
        # server handled the signal after the last ready answer was asked for.
        handled_after, stop_at = signalled_at, signalled_at + HUNG
        while time.monotonic() < stop_at:
            for path, seen in (("/readyz", readyz), ("/healthz", healthz)):
                sent = time.monotonic()
                response = await admin.get(path)
                seen.append((sent - signalled_at, response.status_code, response.text))
                if path == "/readyz" and response.status_code == 200:
                    handled_after = sent
                elif path == "/readyz" and stop_at == signalled_at + HUNG:
                    stop_at = handled_after + DRAIN_DELAY - STOP_MARGIN
            await asyncio.sleep(POLL_INTERVAL if stop_at == signalled_at + HUNG else 0.05)
    code, _ = await wait_for_exit(server, signalled_at, HUNG)
    # Ready until the signal was handled, then draining on every reading after the first.
    turned = next((n for n, (_, status, _) in enumerate(readyz) if status != 200), None)
    assert turned is not None, readyz[-5:]
    draining = readyz[turned:]
    for _, status, text in draining:
        assert (status, json.loads(text)) == (503, {"status": "unavailable", "reason": "draining"}), text
    assert len(draining) >= 2, readyz
    assert healthz and all((s, json.loads(t)) == (200, {"status": "ok"}) for _, s, t in healthz), healthz
    assert code == 0


@pytest.mark.parametrize("workers", [1, 2], ids=["1-process", "2-workers"])
async def test_a_request_in_flight_when_the_listeners_close_finishes(launch: Launch, workers: int) -> None:
    server = await launch(CHATSVC_WORKERS=str(workers))
    await asyncio.to_thread(server.wait_listening, workers)
    (user,) = await make_users(server, 1)
    signalled_at = time.monotonic()
    server.signal(signal.SIGTERM)
    await asyncio.sleep(SLOW_START)
    in_flight = asyncio.create_task(slow_post(server, user, "in flight"))
    # New connections are answered (200 until the signal is handled, then 503) until the listeners
    # close; the first that is not must
    # be refused, while the slow request is still being sent.
    # (With a connection that is accepted but never served, this returns only at the exit.)
    await asyncio.sleep(DRAIN_DELAY - SLOW_START)
    answered = ("answered 200", "answered 503")
    while (probe := await probe_new_connection(server)) in answered and not in_flight.done():
        assert time.monotonic() < signalled_at + HUNG, "the listeners never closed"
        await asyncio.sleep(0.02)
    assert not in_flight.done(), "the slow request ended before the listeners closed"
    response = await in_flight
    code, exit_after = await wait_for_exit(server, signalled_at, HUNG)
    print(f"in flight ({workers} worker(s)): {response.status_code} after "
          f"{time.monotonic() - signalled_at:.2f} s; new connection after close: {probe}; "
          f"exit {code} after {exit_after:.2f} s")
    assert response.status_code == 201, response.text
    assert await stored_message_ids(server.database_url, [response.json()["id"]]) == {response.json()["id"]}
    assert code == 0, server.log()[-3000:]
    # A connection made after the listeners closed must be refused, never accepted and then reset:
    # the client could not tell whether its request was processed.
    assert probe == "refused", probe


async def test_a_second_signal_exits_at_once(launch: Launch) -> None:
    # A drain delay far longer than any wait here: exiting before it ends is "at once".
    server = await launch(CHATSVC_DRAIN_DELAY="120")
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as client:
        server.signal(signal.SIGTERM)
        deadline = time.monotonic() + HUNG
        # Wait until the first signal is being handled, so the second is not merged with it.
        while (await client.get("/check")).status_code != 503:
            assert time.monotonic() < deadline, "the first SIGTERM was not handled"
            await asyncio.sleep(POLL_INTERVAL)
    signalled_at = time.monotonic()
    server.signal(signal.SIGTERM)
    code, exit_after = await wait_for_exit(server, signalled_at, bound=HUNG)
    print(f"second signal: exit {code} after {exit_after:.3f} s")
    assert code != 0


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip()
               for name, _, value in (line.partition(":") for line in lines if line)}
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 5)
    return int(status_line.split()[1]), headers, body


async def test_idle_keep_alive_connections_are_closed_cleanly_at_shutdown(launch: Launch) -> None:
    # Idle timeouts far longer than the test: only the shutdown may close the connection.
    server = await launch(CHATSVC_KEEP_ALIVE_TIMEOUT="60", CHATSVC_READ_TIMEOUT="60")
    request = f"GET /check HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nConnection: keep-alive\r\n\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(request.encode())
        status, headers, body = await read_response(reader)
        assert (status, body) == (200, b"ok")
        assert headers.get("connection", "keep-alive").lower() != "close", headers
        signalled_at = time.monotonic()
        server.signal(signal.SIGTERM)
        # During the drain delay the same connection is still served: ready until the signal is
        # handled, then readiness fails.
        statuses = []
        while 503 not in statuses:
            assert len(statuses) < HUNG / POLL_INTERVAL, statuses[-5:]
            await asyncio.sleep(POLL_INTERVAL)
            writer.write(request.encode())
            statuses.append((await read_response(reader))[0])
        assert set(statuses) <= {200, 503}, statuses
        try:
            eof = await asyncio.wait_for(reader.read(1), HUNG)
        except ConnectionResetError:
            pytest.fail("the idle keep-alive connection was reset instead of closed")
        except TimeoutError:
            pytest.fail("the idle keep-alive connection was not closed at shutdown")
        closed_after = time.monotonic() - signalled_at
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    code, exit_after = await wait_for_exit(server, signalled_at, HUNG)
    print(f"idle keep-alive: EOF {closed_after:.2f} s after SIGTERM; exit {code} after {exit_after:.2f} s")
    assert eof == b""
    # Closed once the listeners closed, not during the drain delay (a slow machine only delays it).
    assert closed_after >= DRAIN_DELAY - 0.05
    assert code == 0


def metric_value(text: str, name: str, labels: dict[str, str]) -> float | None:
    """The value of the one sample of `name` with exactly `labels` (in any order)."""
    for line in text.splitlines():
        match = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\} (\S+)", line)
        if match and match.group(1) == name:
            found = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', match.group(2)))
            if found == labels:
                return float(match.group(3))
    return None


CHECK_OK = {"method": "GET", "route": "/check", "status": "200"}


def counted_by_each_worker(pids: list[int], name: str, labels: dict[str, str]) -> dict[int, float]:
    """Each process's own count, read from the prometheus_client files it writes for the group."""
    counts: dict[int, float] = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            environ = dict(entry.split(b"=", 1) for entry in
                           Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if b"=" in entry)
            directory = environ.get(metrics.MULTIPROCESS_DIR_ENV.encode())
            counts[pid] = 0.0
            if directory is None:
                continue
            path = Path(directory.decode()) / f"counter_{pid}.db"
            if path.exists():
                for key, value, _, _ in MmapedDict.read_all_values_from_file(str(path)):
                    _, sample, sample_labels, _ = json.loads(key)
                    if sample == name and sample_labels == labels:
                        counts[pid] += value
    return counts


async def scrape(admin: httpx.AsyncClient) -> str:
    response = await admin.get("/metrics")
    assert response.status_code == 200, response.text
    return response.text


async def test_several_workers_count_together_and_drain_on_one_signal(launch: Launch) -> None:
    server = await launch(CHATSVC_WORKERS="2")
    assert server.process is not None
    await asyncio.to_thread(server.wait_listening, 2)
    workers = server.descendants()
    try:
        async with httpx.AsyncClient(base_url=server.admin_url, timeout=5) as admin:
            first = metric_value(await scrape(admin), "chatsvc_http_requests_total", CHECK_OK)
            # Scrapes go to the admin app, which does not count requests: a second one changes nothing.
            assert metric_value(await scrape(admin), "chatsvc_http_requests_total", CHECK_OK) == first
            baseline = first or 0.0
            sent = 0
            # A fresh connection each, so the kernel hands them to both workers; which one gets a
            # connection is its choice, so send another batch in the unlikely case one got none.
            async with httpx.AsyncClient(base_url=server.url, timeout=5,
                                         limits=httpx.Limits(max_keepalive_connections=0)) as client:
                for _ in range(5):
                    for _ in range(40):
                        response = await client.get("/check")
                        assert response.status_code == 200, response.text
                        sent += 1
                    split = counted_by_each_worker(list(workers), "chatsvc_http_requests_total", CHECK_OK)
                    if sum(1 for count in split.values() if count > 0) >= 2:
                        break
            expected = baseline + sent
            # A worker counts a request just after answering it: allow it a moment.
            for _ in range(20):
                text = await scrape(admin)
                if (counted := metric_value(text, "chatsvc_http_requests_total", CHECK_OK)) == expected:
                    break
                await asyncio.sleep(0.05)
        split = counted_by_each_worker(list(workers), "chatsvc_http_requests_total", CHECK_OK)
        print(f"workers: /check 200 counted {counted} (baseline {baseline}, sent {sent}); by pid: {split}")
        assert counted == expected, f"counted {counted}, expected {expected}:\n{text}"
        # The sum is only worth checking if both workers answered some of them.
        assert sum(1 for count in split.values() if count > 0) >= 2, split
        assert sum(split.values()) == counted, split
        assert 'route="/metrics"' not in text

        users = await make_users(server, 4)
        run = await drain_under_load(server, users)
        print("drain, 2 workers:", run.summary())
        await assert_drained_cleanly(run, server)
        # No worker (nor any other child) outlives the supervisor.
        for _ in range(40):
            if not (alive := {pid for pid, started in workers.items() if start_time(pid) == started}):
                break
            await asyncio.sleep(0.05)
        assert len(workers) >= 2, workers
        assert not alive, f"still running after the supervisor exited: {alive}"
    finally:
        kill_if_same(workers)



async def test_a_sigterm_while_the_workers_start_still_exits_0(databases: DatabaseFactory,
                                                               tmp_path: Path) -> None:
    url = await databases.create(migrated=True)
    server = ServerProcess(url, tmp_path / "serve.log", **{**SETTINGS, "CHATSVC_WORKERS": "2"})
    process = server.spawn()  # not start(): the signal comes before it serves
    children: dict[int, str] = {}
    try:
        for _ in range(200):
            if '"supervising"' in server.log():
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail(f"the supervisor did not start its workers:\n{server.log()}")
        children = server.descendants()
        signalled_at = time.monotonic()
        process.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.to_thread(process.wait, HUNG)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {HUNG} s after SIGTERM:\n{server.log()[-3000:]}")
        exit_after = time.monotonic() - signalled_at
    finally:
        server.stop()
        kill_if_same(children)  # workers whose supervisor is gone are no longer its descendants
    stopped = [line for line in server.log().splitlines() if '"worker stopped"' in line]
    print(f"SIGTERM while starting: exit {code} after {exit_after:.2f} s; {stopped}")
    assert code == 0, "\n".join(stopped) + "\n" + server.log()[-2000:]
