"""Shutdown as docs/API.md promises it, against real `chatsvc serve` processes over TCP.

SIGTERM: `/check` and `/readyz` turn 503 at once, requests keep being served for the drain delay,
then the listeners close, requests in flight finish, idle keep-alive connections are closed
cleanly, and the process exits 0. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time

import httpx
import pytest

from chatsvc.testing import (
    make_users,
)
from tests.live.conftest import Launch
from tests.live.drain_support import (
    DRAIN_DELAY,
    HUNG,
    LOAD_TASKS,
    POLL_INTERVAL,
    SETTINGS,
    SLOW_START,
    STOP_MARGIN,
    assert_drained_cleanly,
    drain_under_load,
    probe_new_connection,
    slow_post,
    stored_message_ids,
    wait_for_exit,
)


@pytest.fixture
def server_settings() -> dict[str, str]:
    return SETTINGS


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
