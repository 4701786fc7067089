"""A rolling update, measured: two replicas behind HAProxy, each replaced twice under constant load.

PostgreSQL, two `chatsvc serve` processes on fixed ports (the load balancer's two server slots),
HAProxy in front health-checking `GET /check`, and a mixed load of sign-ups, logins, sends and
listings through HAProxy. Each replica in turn is sent SIGTERM, waited for, and replaced by a new
process on the same ports, which must be ready and seen UP by HAProxy before the next one goes.

The claim under test is that the drain alone makes this invisible: `/check` turns 503 at once,
HAProxy (one failed check, every 200 ms) stops sending new requests within its detection time,
the replica keeps serving for CHATSVC_DRAIN_DELAY, longer than that, and only then closes its
listeners and finishes what it has in flight. So the test asserts zero failed requests, every
message answered 201 stored, and zero retries and redispatches in HAProxy's own counters: the
retry policy (connection failures for anything; L7 retries only for safe methods and for
`POST /messages` with an `Idempotency-Key`) is a safety net for real networks, not what made
the run pass.

`make test-rollout` runs just this file. It needs HAProxy (Debian package haproxy), which
`bin/system-deps` installs.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import secrets
import signal
import statistics
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import msgspec
import pytest

from chatsvc.testing import (
    NO_RATE_LIMITS,
    QUIET_LOGS,
    DatabaseFactory,
    ServerProcess,
    User,
    free_port,
    make_users,
    require_program,
)

# HAProxy notices a draining replica after FALL failed checks INTER_MS apart, each answered (503)
# or failed (timeout) within CHECK_TIMEOUT_MS; the replica must go on serving for longer than that
# before it closes its listeners. The check timeout is not left at its default (INTER_MS): on a
# busy machine the one replica left serving during a replacement can take longer than 200 ms (and
# has taken over a second) to answer a check, and with FALL 1 that would take the last server out.
INTER_MS = 200
CHECK_TIMEOUT_MS = 2000
FALL = 1
RISE = 1
DRAIN_DELAY = 3.0
SHUTDOWN_TIMEOUT = 5.0
SETTINGS = {
    "CHATSVC_DRAIN_DELAY": str(DRAIN_DELAY),
    "CHATSVC_SHUTDOWN_TIMEOUT": str(SHUTDOWN_TIMEOUT),
    **NO_RATE_LIMITS,
    **QUIET_LOGS,
}
REPLICAS = 2
ROUNDS = 2
LOAD_WORKERS = 8
WARMUP = 1.0
COOLDOWN = 1.0
# Bounds, so nothing here can run away (a hang, never a slow machine): the whole load, one
# replica's exit, one HAProxy state change.
LOAD_DEADLINE = 180.0
EXIT_BOUND = 60.0
LB_STATE_BOUND = 60.0
# What each kind of request does, in the load's repeating order: mostly sends and listings.
MIX = ("send", "list", "send-with-key", "login", "list", "send", "sign-up", "list", "send-with-key", "list")
EXPECTED_STATUS = {"sign-up": 201, "login": 200, "send": 201, "send-with-key": 201, "list": 200}

HAPROXY_CONFIG = """\
global
    stats socket {socket} mode 600 level admin
    maxconn 2000

defaults
    mode http
    log stderr format raw local0 notice
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout http-request 10s
    timeout http-keep-alive 30s
    timeout queue 5s
    timeout check {check_timeout}ms
    # Keep-alive to clients; one server connection per request, so HAProxy never reuses an idle
    # connection at the moment a replica closes it (a race no HTTP/1.1 server can rule out).
    option http-server-close
    # Connection failures (nothing was sent) may be retried for any request, on another replica.
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response response-timeout

frontend chat
    bind 127.0.0.1:{port}
    default_backend replicas

backend replicas
    balance roundrobin
    # A retry after the request reached a replica is safe only when a repeat cannot do anything
    # twice: safe methods, and POST /messages with an Idempotency-Key. Sign-ups, logins and
    # logouts are never retried past a connection failure.
    acl safe_method method GET HEAD OPTIONS
    acl has_idempotency_key req.hdr(Idempotency-Key) -m found
    http-request disable-l7-retry unless safe_method || has_idempotency_key
    option httpchk GET /check
    http-check expect status 200
    default-server check inter {inter}ms fall {fall} rise {rise}
{servers}
"""


@pytest.fixture(scope="module")
def haproxy() -> str:
    """HAProxy's path (bin/system-deps installs it; skipped naming the package when missing)."""
    return require_program("haproxy", "haproxy")


def new_replica(database_url: str, log_path: Path, port: int, admin_port: int) -> ServerProcess:
    """A `chatsvc serve` in one of the load balancer's server slots (fixed ports)."""
    return ServerProcess(database_url, log_path, port=port, admin_port=admin_port, **SETTINGS)


async def requests_served(server: ServerProcess) -> int:
    """Requests a replica answered, by its own metrics, HAProxy's health checks left out."""
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(server.admin_url + "/metrics")
    response.raise_for_status()
    total = 0.0
    for line in response.text.splitlines():
        if line.startswith("chatsvc_http_requests_total{") and 'route="/check"' not in line:
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


class HAProxy:
    """An HAProxy process in front of the replica slots, with its admin socket."""

    def __init__(self, binary: str, directory: Path, slots: list[tuple[int, int]]) -> None:
        self.binary = binary
        self.port = free_port()
        self.socket = directory / "haproxy.sock"
        self.config = directory / "haproxy.cfg"
        self.log_path = directory / "haproxy.log"
        servers = "\n".join(f"    server r{n} 127.0.0.1:{port}" for n, (port, _) in enumerate(slots))
        self.config.write_text(HAPROXY_CONFIG.format(
            socket=self.socket, port=self.port, inter=INTER_MS, check_timeout=CHECK_TIMEOUT_MS,
            fall=FALL, rise=RISE, servers=servers))
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        checked = subprocess.run([self.binary, "-c", "-f", str(self.config)], capture_output=True,
                                 text=True, timeout=30, check=False)
        assert checked.returncode == 0, f"haproxy -c rejects the config:\n{checked.stdout}{checked.stderr}"
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen([self.binary, "-db", "-f", str(self.config)],
                                        stdout=self._log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None:
            self._log.close()

    async def stats(self) -> dict[str, dict[str, str]]:
        """`show stat` by row name: the backend (`BACKEND`) and each server (`r0`, `r1`)."""
        reader, writer = await asyncio.open_unix_connection(str(self.socket))
        try:
            writer.write(b"show stat\n")
            await writer.drain()
            raw = (await reader.read()).decode()
        finally:
            writer.close()
            await writer.wait_closed()
        rows = csv.DictReader(io.StringIO(raw.removeprefix("# ")))
        return {row["svname"]: row for row in rows if row["pxname"] == "replicas"}

    async def wait_for(self, server: str, status: str) -> float:
        """Wait until HAProxy reports `server` in `status`; returns the seconds it took."""
        started = time.monotonic()
        deadline = started + LB_STATE_BOUND
        last = None
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, self.log()
            with contextlib.suppress(OSError):
                last = (await self.stats())[server]["status"]
                if last == status:
                    return time.monotonic() - started
            await asyncio.sleep(0.02)
        pytest.fail(f"HAProxy did not report {server} {status} in {LB_STATE_BOUND} s (last: {last})")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class Outcome:
    kind: str
    started: float  # monotonic
    seconds: float
    status: int | None
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None or self.status != EXPECTED_STATUS[self.kind]


@dataclass
class Load:
    """A constant mixed load through the load balancer, until `stop` is set."""

    url: str
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    outcomes: list[Outcome] = field(default_factory=list)
    sent: dict[int, tuple[int, int, str]] = field(default_factory=dict)  # id -> sender, recipient, text
    duplicate_ids: list[int] = field(default_factory=list)

    async def run(self, users: list[User]) -> None:
        peers = users[1:] + users[:1]
        await asyncio.gather(*(self._worker(n, user, peer)
                               for n, (user, peer) in enumerate(zip(users, peers, strict=True))))

    async def _worker(self, worker: int, user: User, peer: User) -> None:
        deadline = time.monotonic() + LOAD_DEADLINE
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as client:
            step = worker  # workers start at different points of the mix
            while not self.stop.is_set() and time.monotonic() < deadline:
                kind = MIX[step % len(MIX)]
                step += 1
                started = time.monotonic()
                try:
                    response = await self._request(client, kind, user, peer, step)
                except httpx.HTTPError as error:
                    seconds = time.monotonic() - started
                    self.outcomes.append(Outcome(kind, started, seconds, None, repr(error)))
                    continue
                outcome = Outcome(kind, started, time.monotonic() - started, response.status_code)
                if outcome.failed:
                    outcome.error = response.text[:300]
                self.outcomes.append(outcome)

    async def _request(self, client: httpx.AsyncClient, kind: str, user: User, peer: User,
                       step: int) -> httpx.Response:
        if kind == "sign-up":
            credentials = {"username": f"rollout-{secrets.token_hex(6)}", "password": secrets.token_hex(8)}
            return await client.post("/users", json=credentials)
        if kind == "login":
            return await client.post("/login", json={"username": user.username, "password": user.password})
        if kind == "list":
            return await client.get("/messages", headers=user.auth,
                                    params={"recipient": peer.id, "limit": 20})
        text = f"rollout {user.id} {step} {secrets.token_hex(4)}"
        headers = dict(user.auth)
        if kind == "send-with-key":
            headers["Idempotency-Key"] = f"rollout-{secrets.token_hex(8)}"
        body = {"recipient": peer.id, "content": {"type": "text", "text": text}}
        response = await client.post("/messages", json=body, headers=headers)
        if response.status_code == 201:
            message_id = response.json()["id"]
            if message_id in self.sent:
                self.duplicate_ids.append(message_id)
            self.sent[message_id] = (user.id, peer.id, text)
        return response


async def stored_messages(database_url: str, ids: list[int]) -> dict[int, tuple[int, int, str]]:
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch(
            "SELECT id, sender_id, recipient_id, content::text AS content FROM messages "
            "WHERE id = ANY($1::bigint[])", ids)
    finally:
        await connection.close()
    return {row["id"]: (row["sender_id"], row["recipient_id"], msgspec.json.decode(row["content"])["text"])
            for row in rows}


async def test_rolling_update_under_load_fails_no_request(
        haproxy: str, databases: DatabaseFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    detection = FALL * (INTER_MS + CHECK_TIMEOUT_MS) / 1000
    assert detection < DRAIN_DELAY, f"the drain must outlast HAProxy's detection ({detection} s)"
    database_url = await databases.create(migrated=True)
    slots = [(free_port(), free_port()) for _ in range(REPLICAS)]
    replicas: list[ServerProcess] = []
    lb = HAProxy(haproxy, tmp_path, slots)
    load = Load(lb.url)
    load_task: asyncio.Task | None = None
    served: list[int] = []  # requests each replica answered, in the order they were stopped
    replacements: list[float] = []  # seconds from SIGTERM to the new replica UP in HAProxy
    windows: list[tuple[float, float]] = []  # (SIGTERM, new replica UP), monotonic
    try:
        for slot, (port, admin_port) in enumerate(slots):
            replicas.append(new_replica(database_url, tmp_path / f"replica-{slot}-0.log", port, admin_port))
            await asyncio.to_thread(replicas[-1].start)
        lb.start()
        for slot in range(REPLICAS):
            await lb.wait_for(f"r{slot}", "UP")
        users = await make_users(lb.url, LOAD_WORKERS)

        load_task = asyncio.create_task(load.run(users))
        await asyncio.sleep(WARMUP)
        rollover_started = time.monotonic()
        for generation in range(1, ROUNDS + 1):
            for slot, (port, admin_port) in enumerate(slots):
                old = replicas[slot]
                signalled = time.monotonic()
                served.append(await requests_served(old))
                old.signal(signal.SIGTERM)
                try:
                    code = await asyncio.to_thread(old.wait, EXIT_BOUND)
                except subprocess.TimeoutExpired:
                    pytest.fail(f"replica {slot} still running {EXIT_BOUND} s after SIGTERM:\n"
                                f"{old.log()[-3000:]}")
                assert code == 0, f"replica {slot} exited {code}:\n{old.log()[-3000:]}"
                old.stop()
                log_path = tmp_path / f"replica-{slot}-{generation}.log"
                new = new_replica(database_url, log_path, port, admin_port)
                replicas[slot] = new
                await asyncio.to_thread(new.start)
                await lb.wait_for(f"r{slot}", "UP")
                replacements.append(time.monotonic() - signalled)
                windows.append((signalled, time.monotonic()))
        rollover_ended = time.monotonic()
        await asyncio.sleep(COOLDOWN)
        for replica in replicas:
            served.append(await requests_served(replica))
        load.stop.set()
        await load_task
        stats = await lb.stats()
    finally:
        load.stop.set()
        if load_task is not None and not load_task.done():
            load_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await load_task
        lb.stop()
        for replica in replicas:
            replica.stop()

    outcomes = load.outcomes
    failures = [o for o in outcomes if o.failed]
    during = [o for o in outcomes if rollover_started <= o.started <= rollover_ended]
    longest = max(during, key=lambda o: o.seconds)
    kinds = Counter(o.kind.removesuffix("-with-key") for o in outcomes)
    stored = await stored_messages(database_url, list(load.sent))
    backend = stats["BACKEND"]
    lb_counters = {name: int(backend[name] or 0) for name in ("wretr", "wredis", "econ", "eresp", "hrsp_5xx")}
    summary = (
        f"rollout: {REPLICAS} replicas x {ROUNDS} rounds = {len(replacements)} replacements "
        f"(SIGTERM to new replica UP: {min(replacements):.2f}-{max(replacements):.2f} s), "
        f"{len(outcomes)} requests served ({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))}), "
        f"{len(failures)} errors; during the rollover ({rollover_ended - rollover_started:.1f} s): "
        f"{len(during)} requests, longest {longest.seconds * 1000:.0f} ms ({longest.kind}), "
        f"median {statistics.median(o.seconds for o in during) * 1000:.1f} ms; "
        f"{len(load.sent)} messages answered 201, {len(stored)} of them stored; "
        f"HAProxy retries {lb_counters['wretr']}, redispatches {lb_counters['wredis']}; "
        f"requests per replica {served}")
    with capsys.disabled():
        print("\n" + summary)

    assert not failures, (f"{len(failures)} failed requests, first: {failures[:5]}\n{summary}\n"
                          f"HAProxy log:\n{lb.log()[-3000:]}")
    assert not load.duplicate_ids, f"ids answered 201 twice: {load.duplicate_ids[:10]}"
    missing = sorted(set(load.sent) - set(stored))
    assert not missing, f"{len(missing)} messages answered 201 are not stored: {missing[:10]}"
    assert stored == load.sent, "a stored message differs from the one answered 201"
    assert lb_counters == dict.fromkeys(lb_counters, 0), (
        f"HAProxy retried, redispatched or saw errors: {lb_counters}: the drain did not do it alone")
    # The load really ran through every replica and every replacement.
    assert all(count > 0 for count in served), f"a replica served nothing: {served}"
    assert all(n > 0 for n in kinds.values()) and set(kinds) == {"sign-up", "login", "send", "list"}
    per_replacement = [sum(1 for o in outcomes if start <= o.started <= end) for start, end in windows]
    assert all(per_replacement), f"requests started during each replacement: {per_replacement}"
