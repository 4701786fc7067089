"""Failover and switchover of a highly available PostgreSQL under load, measured.

The database is `chatsvc.ha`: a primary and a synchronous standby run by Patroni with etcd, HAProxy
routing to the primary, PgBouncer (transaction pooling) in front of HAProxy, all from deploy/ha/
under `.data/failover`. Two `chatsvc serve` processes find the primary by themselves: both have
the multi-host `DATABASE_URL` with `target_session_attrs=read-write` for their stream listener;
process `pooled` runs its request pool through PgBouncer (CHATSVC_POOLER_URL), process `direct`
on the multi-host URL itself, so both kinds of client are proven.

1. Failover: the primary's postmaster is killed with SIGKILL under mixed load. Patroni promotes the
   synchronous standby. Measured: kill to the first 201 of a send made after the kill, the 503s,
   and `/check` of both processes (503 while there is no primary, 200 after).
2. Switchover (`patronictl switchover`) back to the first node once it has rejoined as standby,
   under the same load: the requests that failed.

Both phases prove that every message answered 201 is on the new primary, that none is stored twice
(each send is retried with its Idempotency-Key until it is answered 201), and that every stream,
resumed with Last-Event-ID every few seconds, saw every message of its user exactly once.
`make test-failover` runs this file alone and prints the figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest

from chatsvc.ha.cluster import PatroniCluster
from chatsvc.ha.pooler import PgBouncer
from chatsvc.migrate import migrate
from chatsvc.testing import ServerProcess, User, make_users, require_program
from tests import PROJECT_ROOT
from tests.live.failover_load import SEND_DEADLINE, Load, StreamLog

ROOT = PROJECT_ROOT / ".data" / "failover"
HEALTH_INTERVAL = 0.2
SETTINGS = {
    "CHATSVC_HEALTH_INTERVAL": str(HEALTH_INTERVAL),
    "CHATSVC_RATE": "0",
    "CHATSVC_AUTH_RATE": "0",
    "CHATSVC_LOG_LEVEL": "warning",
    "CHATSVC_ACCESS_LOG": "false",
}
USERS = 4
SENDERS = 6
LISTERS = 2
WARMUP = 2.0
# Load keeps running this long after the service recovered, so the recovery is seen under load.
AFTER_RECOVERY = 3.0
CHECK_POLL = 0.05
MESSAGES_OF = """
SELECT id, sender_id, recipient_id, content->>'text' AS text FROM messages
WHERE sender_id = ANY($1::bigint[]) OR recipient_id = ANY($1::bigint[])
"""
# Bounds, so that nothing here can run away (not timing goals: those are reported).
RECOVERY_BOUND = 60.0
STREAMS_CATCH_UP = 20.0


@dataclass
class Setup:
    cluster: PatroniCluster
    servers: dict[str, ServerProcess]
    users: list[User]


@pytest.fixture(scope="module")
def ha() -> Iterator[tuple[PatroniCluster, PgBouncer]]:
    require_program("etcd", "etcd-server")
    require_program("patroni", "patroni")
    require_program("patronictl", "patroni")
    require_program("haproxy", "haproxy")
    require_program("pgbouncer", "pgbouncer")
    with contextlib.ExitStack() as made:  # destroyed, not just stopped: every run makes them anew
        cluster = PatroniCluster(ROOT / "cluster")
        made.callback(cluster.destroy)
        cluster.start()
        pooler = PgBouncer(ROOT / "pgbouncer", "127.0.0.1", cluster.primary_port)
        made.callback(pooler.destroy)
        pooler.start()
        yield cluster, pooler


@pytest.fixture(scope="module")
async def setup(ha: tuple[PatroniCluster, PgBouncer]) -> AsyncIterator[Setup]:
    cluster, pooler = ha
    await migrate(cluster.database_url)
    servers = {
        "pooled": ServerProcess(cluster.database_url, ROOT / "pooled.log", **SETTINGS,
                                CHATSVC_POOLER_URL=pooler.url),
        "direct": ServerProcess(cluster.database_url, ROOT / "direct.log", **SETTINGS),
    }
    try:
        for server in servers.values():
            await asyncio.to_thread(server.start)
        users = await make_users(servers["pooled"], USERS)
        yield Setup(cluster, servers, users)
    finally:
        for server in servers.values():
            server.stop()


class CheckWatch:
    """Polls `/check` of one process, recording (time, status)."""

    def __init__(self, url: str) -> None:
        self.url = url + "/check"
        self.seen: list[tuple[float, int | None]] = []

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=2) as client:
            while True:
                try:
                    status: int | None = (await client.get(self.url)).status_code
                except httpx.HTTPError:
                    status = None
                self.seen.append((time.monotonic(), status))
                await asyncio.sleep(CHECK_POLL)

    def unready_window(self, since: float) -> tuple[float, float] | None:
        """Seconds from `since` to the first non-200, and to the first 200 after it."""
        down = next((t for t, status in self.seen if t >= since and status != 200), None)
        if down is None:
            return None
        up = next((t for t, status in self.seen if t > down and status == 200), None)
        return down - since, (up - since if up else float("nan"))


@contextlib.asynccontextmanager
async def running(setup: Setup) -> AsyncIterator[tuple[Load, dict[str, CheckWatch]]]:
    """The load and the /check watchers, running for the body of the `async with`."""
    load = Load({name: server.url for name, server in setup.servers.items()}, setup.users)
    watches = {name: CheckWatch(server.url) for name, server in setup.servers.items()}
    tasks = [asyncio.create_task(load.run(SENDERS, LISTERS)),
             *(asyncio.create_task(watch.run()) for watch in watches.values())]
    try:
        yield load, watches
    finally:
        load.stop.set()
        load.close_streams.set()
        for task in tasks[1:]:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def wait_recovered(load: Load, since: float) -> float:
    """Seconds from `since` to the first 201 of a send made after it."""
    deadline = since + RECOVERY_BOUND
    while time.monotonic() < deadline:
        if first := load.first_success_after(since):
            return first.answered - since
        await asyncio.sleep(0.05)
    pytest.fail(f"no send made after {since} was answered 201 within {RECOVERY_BOUND} s: "
                f"{load.statuses(since)}")


async def finish(load: Load, cluster: PatroniCluster) -> dict[str, int]:
    """Stop sending, let the streams catch up, and check everything the load was told."""
    load.stop.set()
    async with asyncio.timeout(SEND_DEADLINE + 10):
        await load.requests_done.wait()
    created = [sent for sent in load.sends if sent.ids]
    assert all(len(sent.ids) == 1 for sent in created), \
        f"one key answered with two ids: {[s for s in created if len(s.ids) > 1][:5]}"
    # Read on the node that is primary now, by its own address: what it has is what survived.
    leader = await asyncio.to_thread(cluster.leader)
    assert leader is not None, "no primary after the load"
    everything = await messages_of(cluster.nodes[leader].url, [user.id for user in load.users])
    stored = {mid: row for mid, row in everything.items() if row[2].startswith(f"failover-{load.tag}-")}
    answered = {next(iter(sent.ids)): sent for sent in created}
    missing = [sent for message_id, sent in answered.items() if message_id not in stored]
    assert not missing, f"{len(missing)} messages answered 201 are not on the new primary: {missing[:5]}"
    for message_id, sent in answered.items():
        assert stored[message_id] == (sent.sender, sent.recipient, sent.text), message_id
    texts = [text for _, _, text in stored.values()]
    twice = {text for text in texts if texts.count(text) > 1}
    assert not twice, f"stored twice: {sorted(twice)[:5]}"
    # A send abandoned at the deadline may still have been stored once; the load never abandons one.
    assert len(stored) == len(answered), f"stored {len(stored)}, answered 201 {len(answered)}"

    # The users are this module's own, and each stream starts from id 0: it must see them all.
    expected = {user.id: {mid for mid, (sender, recipient, _) in everything.items()
                          if user.id in (sender, recipient)} for user in load.users}
    for _ in range(int(STREAMS_CATCH_UP / 0.1)):
        if all(expected[log.user] <= set(log.events) for log in load.streams):
            break
        await asyncio.sleep(0.1)
    load.close_streams.set()
    for log in load.streams:
        assert len(log.events) == len(set(log.events)), \
            f"stream of user {log.user} on {log.server} saw an event twice"
        seen = set(log.events)
        missing, extra = expected[log.user] - seen, seen - expected[log.user]
        assert not missing and not extra, (
            f"stream of user {log.user} on {log.server}: missing {sorted(missing)[:5]}, "
            f"extra {sorted(extra)[:5]}; {stream_story(load, log, missing)}")
    return {"stored": len(stored), "stream events": sum(len(log.events) for log in load.streams),
            "stream resumes": sum(log.connects - 1 for log in load.streams)}


def stream_story(load: Load, log: StreamLog, missing: set[int]) -> str:
    """What a failure message needs to tell a lost event's story, times in s from the load's start."""
    connections = [(round(t - load.started, 2), since, first) for t, since, first in log.history[:30]]
    sends = [(i, round(s.answered - load.started, 2)) for s in load.sends for i in s.ids if i in missing]
    return f"events {log.events[:40]}; connections (s, Last-Event-ID, first id) {connections}; sends {sends}"


async def messages_of(database_url: str, users: list[int]) -> dict[int, tuple[int, int, str]]:
    """Every message the users sent or received, on the primary: id -> (sender, recipient, text)."""
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch(MESSAGES_OF, users)
    finally:
        await connection.close()
    return {row["id"]: (row["sender_id"], row["recipient_id"], row["text"]) for row in rows}


def report(title: str, figures: dict[str, object], capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():
        print(f"\n{title}: " + "; ".join(f"{name} {value}" for name, value in figures.items()))


async def test_failover_when_the_primary_dies_loses_no_acknowledged_message(
        setup: Setup, capsys: pytest.CaptureFixture[str]):
    cluster = setup.cluster
    old = cluster.leader()
    async with running(setup) as (load, watches):
        await wait_recovered(load, load.started)  # the load runs (a busy machine may take a while)
        await asyncio.sleep(WARMUP)
        killed_at = time.monotonic()
        assert await asyncio.to_thread(cluster.kill_primary_postmaster) == old
        recovery = await wait_recovered(load, killed_at)
        await asyncio.sleep(AFTER_RECOVERY)
        new = await asyncio.to_thread(cluster.leader)
        checked = await finish(load, cluster)
    assert new is not None and new != old, f"the primary is still {old}"
    windows = {name: watch.unready_window(killed_at) for name, watch in watches.items()}
    for name, window in windows.items():
        assert window is not None, f"/check of {name} never turned 503 while there was no primary"
        assert window[1] == window[1], f"/check of {name} never turned 200 again"
    statuses = load.statuses(killed_at)
    after = [a for a in load.attempts if a.sent >= killed_at]
    longest = max(after, key=lambda a: a.answered - a.sent)
    report("failover (SIGKILL of the primary's postmaster)", {
        "kill to first 201": f"{recovery:.2f} s",
        "requests from the kill on": len(after),
        "503s": sum(n for kind, n in statuses.items() if kind.endswith(" 503")),
        "by outcome": dict(sorted(statuses.items())),
        "longest request": f"{longest.answered - longest.sent:.2f} s ({longest.server} {longest.kind})",
        "/check not 200 (s after the kill)": {
            name: f"{down:.2f}-{up:.2f}" for name, (down, up) in windows.items()},  # type: ignore[misc]
        **checked}, capsys)
    assert not [kind for kind in statuses if kind.endswith(" 500")], statuses


async def test_switchover_under_load(setup: Setup, capsys: pytest.CaptureFixture[str]):
    cluster = setup.cluster
    await asyncio.to_thread(cluster.wait_in_sync)
    old, candidate = cluster.leader(), cluster.sync_standby()
    assert candidate is not None
    async with running(setup) as (load, _):
        await wait_recovered(load, load.started)
        await asyncio.sleep(WARMUP)
        started = time.monotonic()
        await asyncio.to_thread(cluster.switchover, candidate)  # returns once it is done
        switched = time.monotonic() - started
        await wait_recovered(load, started)
        await asyncio.sleep(AFTER_RECOVERY)
        new = await asyncio.to_thread(cluster.leader)
        ended = time.monotonic()
        checked = await finish(load, cluster)
    assert new == candidate, f"the primary is {new}, not {candidate} (was {old})"
    during = [a for a in load.attempts if started <= a.sent <= ended]
    failed = [a for a in during if a.status not in (200, 201)]
    longest = max(during, key=lambda a: a.answered - a.sent)
    report("switchover (patronictl switchover)", {
        "command": f"{switched:.2f} s", "requests from the command on": len(during), "failed": len(failed),
        "by outcome": dict(sorted(load.statuses(started).items())),
        "longest request": f"{longest.answered - longest.sent:.2f} s ({longest.server} {longest.kind})",
        **checked}, capsys)
    assert not [a for a in failed if a.status == 500], "a 500 during the switchover"
