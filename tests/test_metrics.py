"""The metrics the alert rules watch: readiness, the database, the hash queue, the stream fan-out lag.

In-process, against the suite's database: each metric follows the state it reports. That Prometheus
reads them from a running server, and that every metric a rule names exists, is
tests/live/test_prometheus.py's part.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import time

import httpx
import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Histogram
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from chatsvc import metrics
from chatsvc.app import build_app
from chatsvc.config import Settings
from chatsvc.db import create_pool
from chatsvc.middleware.observe import Observe
from chatsvc.passwords import HashQueueFull, Passwords
from chatsvc.readiness import Readiness
from chatsvc.resources import Resources
from chatsvc.testing import User
from chatsvc.tokens import token_digest


def sample(name: str) -> float:
    value = REGISTRY.get_sample_value(name)
    assert value is not None, f"{name} is not exported"
    return value


async def test_readiness_and_database_gauges_follow_the_health_state(settings: Settings):
    pool = await create_pool(settings.replace(db_pool_min=0, db_pool_max=1))
    health = Readiness()
    await health.check_database(pool, settings.db_timeout)
    assert (sample("chatsvc_ready"), sample("chatsvc_db_up")) == (1, 1)
    health.draining = True
    assert (sample("chatsvc_ready"), sample("chatsvc_db_up")) == (0, 1)
    health.draining = False
    await pool.close()  # every probe now fails as when the database is gone
    await health.check_database(pool, settings.db_timeout)
    assert (sample("chatsvc_ready"), sample("chatsvc_db_up")) == (0, 0)


async def test_pool_bound_is_exported_with_the_pool_use(settings: Settings):
    pool = await create_pool(settings.replace(db_pool_min=1, db_pool_max=3))
    health = Readiness()
    watcher = asyncio.create_task(health.watch_database(pool, interval=60, timeout=settings.db_timeout))
    try:
        for _ in range(100):
            if REGISTRY.get_sample_value("chatsvc_db_pool_max_connections") == 3:
                break
            await asyncio.sleep(0.01)
        assert sample("chatsvc_db_pool_max_connections") == 3
        assert sample("chatsvc_db_pool_connections") == 1
    finally:
        watcher.cancel()
        await pool.close()


async def test_the_hash_queue_depth_counts_waiting_and_running_hashes(settings: Settings):
    passwords = Passwords(settings.replace(hash_threads=1))
    try:
        before = sample("chatsvc_password_hash_queue_depth")
        hashes = [asyncio.create_task(passwords.hash(f"password-{n}")) for n in range(3)]
        await asyncio.sleep(0)  # each task has queued its hash
        assert sample("chatsvc_password_hash_queue_depth") == before + 3
        await asyncio.gather(*hashes)
        assert sample("chatsvc_password_hash_queue_depth") == before
    finally:
        passwords.close()


async def test_hashes_refused_for_a_full_queue_are_counted(settings: Settings):
    passwords = Passwords(settings.replace(hash_threads=1, hash_queue=1))
    try:
        refused_before = sample("chatsvc_password_hash_rejected_total")
        outcomes = await asyncio.gather(*(passwords.hash(f"password-{n}") for n in range(5)),
                                        return_exceptions=True)
        refused = [outcome for outcome in outcomes if isinstance(outcome, HashQueueFull)]
        assert len(refused) == 3, outcomes  # one hashing, one waiting, three turned away
        assert sample("chatsvc_password_hash_rejected_total") == refused_before + 3
    finally:
        passwords.close()


async def test_the_fanout_lag_is_observed_for_each_new_message(
        client: httpx.AsyncClient, resources: Resources, alice: User, bob: User):
    # Observed where a stream the message concerns is held (a process holding none drops it).
    stream = resources.fanout.subscribe(bob.id, token_digest(bob.token), "127.0.0.1")
    await resources.fanout.starting_point(stream)
    before = sample("chatsvc_stream_fanout_lag_seconds_count")
    sum_before = sample("chatsvc_stream_fanout_lag_seconds_sum")
    started = time.monotonic()
    sent = await client.post("/messages", headers=alice.auth,
                             json={"recipient": bob.id, "content": {"type": "text", "text": "lag"}})
    assert sent.status_code == 201, sent.text
    deadline = time.monotonic() + 10
    for _ in range(1000):
        if sample("chatsvc_stream_fanout_lag_seconds_count") > before or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.01)
    assert sample("chatsvc_stream_fanout_lag_seconds_count") == before + 1
    # In seconds: no longer than the whole wait, however slow the machine.
    lag = sample("chatsvc_stream_fanout_lag_seconds_sum") - sum_before
    assert 0 <= lag <= time.monotonic() - started, lag
    stream.close()


def request_sample(name: str, **labels: str) -> float:
    metrics.REQUEST_TALLY.flush()  # as a scrape does first
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def ignore(message: Message) -> None:
    pass


def test_a_flush_adds_to_the_metrics_what_observing_each_request_would() -> None:
    """The tally's sums go into prometheus_client's own histogram parts: as its observe() would."""
    reference = Histogram("reference_seconds", "", registry=CollectorRegistry(),
                          buckets=metrics.REQUEST_SECONDS._upper_bounds)
    route = f"/tallied-{secrets.token_hex(4)}"
    # Bucket bounds themselves, values between, zero, and beyond the last finite bound; two flushes.
    batches = [0.0, 0.001, 0.0011, 0.0025, 0.3, 0.3], [10.0, 10.5, 0.0049, 7.0]
    for batch in batches:
        for seconds in batch:
            metrics.REQUEST_TALLY.observe(route, "GET", 200 if seconds < 1 else 504, seconds)
            reference.observe(seconds)
        metrics.REQUEST_TALLY.flush()
    bounds = [*("0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0"),
              *("2.5", "5.0", "10.0", "+Inf")]
    tallied = {le: REGISTRY.get_sample_value("chatsvc_http_request_duration_seconds_bucket",
                                             {"route": route, "method": "GET", "le": le}) for le in bounds}
    observed = {le: reference.collect()[0].samples[n].value for n, le in enumerate(bounds)}
    assert tallied == observed
    assert observed["+Inf"] == 10
    assert request_sample("chatsvc_http_request_duration_seconds_sum", route=route,
                          method="GET") == pytest.approx(sum(map(sum, batches)))
    assert request_sample("chatsvc_http_requests_total", route=route, method="GET", status="200") == 7
    assert request_sample("chatsvc_http_requests_total", route=route, method="GET", status="504") == 3


async def test_the_in_flight_gauge_counts_a_request_until_it_is_answered() -> None:
    during: list[float] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        during.append(request_sample("chatsvc_http_requests_in_flight"))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    before = request_sample("chatsvc_http_requests_in_flight")
    scope = {"type": "http", "method": "GET", "path": "/", "root_path": "", "headers": [], "state": {}}
    await Observe(app, log_requests=False)(scope, no_body, ignore)
    assert during == [before + 1]
    assert request_sample("chatsvc_http_requests_in_flight") == before


async def test_the_request_duration_ends_when_the_response_has_been_sent() -> None:
    """Work the app does after its last body message is no client's wait: it is not timed."""
    now = [1000.0]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        now[0] += 0.002  # producing the body
        await send({"type": "http.response.body", "body": b"ok"})
        now[0] += 30.0  # after the response: a background task, say

    route = f"/timed-{secrets.token_hex(4)}"
    observed = Observe(app, log_requests=False, routes=[Route(route, PlainTextResponse("ok"))],
                       clock=lambda: now[0])
    scope = {"type": "http", "method": "GET", "path": route, "root_path": "", "headers": [], "state": {}}
    await observed(scope, no_body, ignore)
    assert request_sample("chatsvc_http_request_duration_seconds_count", route=route, method="GET") == 1
    assert request_sample("chatsvc_http_request_duration_seconds_sum", route=route,
                          method="GET") == pytest.approx(0.002)


async def test_a_login_refused_by_the_rate_limiter_is_counted_under_its_route(resources: Resources) -> None:
    """The limiter answers before routing; its 429 is still POST /login's, not `unmatched`."""
    settings = resources.settings.replace(rate=0, auth_rate=1, auth_burst=1)
    app = build_app(dataclasses.replace(resources, settings=settings))
    transport = httpx.ASGITransport(app=app, client=(f"10.8.{secrets.randbelow(250)}.9", 4000))
    labels = {"route": "/login", "method": "POST", "status": "429"}
    before = request_sample("chatsvc_http_requests_total", **labels)
    timed = {"route": "/login", "method": "POST"}
    timed_before = request_sample("chatsvc_http_request_duration_seconds_count", **timed)
    async with httpx.AsyncClient(transport=transport, base_url="http://chatsvc") as client:
        answers = [await client.post("/login/", json={"username": "nobody", "password": "wrong password"})
                   for _ in range(2)]
    assert [answer.status_code for answer in answers] == [401, 429]
    assert request_sample("chatsvc_http_requests_total", **labels) == before + 1
    assert request_sample("chatsvc_http_request_duration_seconds_count", **timed) == timed_before + 2
