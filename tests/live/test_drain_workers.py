"""Shutdown of a server with several worker processes: one signal drains them all, and their
request counts add up in one /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.mmap_dict import MmapedDict

from chatsvc import metrics
from chatsvc.testing import (
    DatabaseFactory,
    ServerProcess,
    kill_if_same,
    make_users,
    start_time,
)
from tests.live.conftest import Launch
from tests.live.drain_support import (
    HUNG,
    SETTINGS,
    assert_drained_cleanly,
    drain_under_load,
)


@pytest.fixture
def server_settings() -> dict[str, str]:
    return SETTINGS


def metric_value(text: str, name: str, labels: dict[str, str]) -> float | None:
    """The value of the one sample of `name` with exactly `labels` (in any order)."""
    for line in text.splitlines():
        match = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\} (\S+)", line)
        if match and match.group(1) == name:
            found = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', match.group(2)))
            if found == labels:
                return float(match.group(3))
    return None


# Requests to a path no route has: none but this test's (the harness polls /check) are counted here.
UNKNOWN = {"method": "GET", "route": "unmatched", "status": "404"}


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


async def counted_once_flushed(admin: httpx.AsyncClient, sent: int) -> tuple[float | None, str]:
    """The group's count of the requests to UNKNOWN once it reaches `sent`, and the scrape's text.

    The answering worker writes its counts before the scrape; the other writes its own every
    CHATSVC_METRICS_FLUSH_INTERVAL (1 s), so scrape until they are in (bounded, for a failure).
    """
    deadline = time.monotonic() + 30
    while True:
        text = await scrape(admin)
        counted = metric_value(text, "chatsvc_http_requests_total", UNKNOWN)
        if counted == sent or time.monotonic() > deadline:
            return counted, text
        await asyncio.sleep(0.05)


async def test_several_workers_count_together_and_drain_on_one_signal(launch: Launch) -> None:
    server = await launch(CHATSVC_WORKERS="2")
    assert server.process is not None
    await asyncio.to_thread(server.wait_listening, 2)
    workers = server.descendants()
    try:
        async with httpx.AsyncClient(base_url=server.admin_url, timeout=5) as admin:
            # Scrapes go to the admin app, which does not count requests: two count nothing.
            assert metric_value(await scrape(admin), "chatsvc_http_requests_total", UNKNOWN) is None
            assert metric_value(await scrape(admin), "chatsvc_http_requests_total", UNKNOWN) is None
            sent = 0
            # A fresh connection each, so the kernel hands them to both workers; which one gets a
            # connection is its choice, so send another batch in the unlikely case one got none.
            async with httpx.AsyncClient(base_url=server.url, timeout=5,
                                         limits=httpx.Limits(max_keepalive_connections=0)) as client:
                for _ in range(5):
                    for _ in range(40):
                        response = await client.get("/no-such-path")
                        assert response.status_code == 404, response.text
                        sent += 1
                    counted, text = await counted_once_flushed(admin, sent)
                    # Every worker has written all it counted: its file says how many were its.
                    split = counted_by_each_worker(list(workers), "chatsvc_http_requests_total", UNKNOWN)
                    if sum(1 for count in split.values() if count > 0) >= 2:
                        break
        print(f"workers: unmatched 404 counted {counted} (sent {sent}); by pid: {split}")
        assert counted == sent, f"counted {counted}, sent {sent}:\n{text}"
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
