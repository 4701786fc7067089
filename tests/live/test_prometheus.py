"""Prometheus scraping a live chatsvc: what operators will graph and alert on, read back after a known load.

Debian's `prometheus` runs on a free port with a generated configuration: a 1 s scrape of the admin
listener of a `chatsvc serve` with 2 workers, and the shipped rule file (deploy/prometheus). The test
sends a load it counts itself (sign-ups, logins, wrong passwords until the login limiter refuses,
messages, listings, an event stream), then reads it back through Prometheus's HTTP query API: the
request counts and rates per route, the p99 latency per route, the pool's use against PostgreSQL's
own count, the rate-limit and login counts. The rules evaluate without error on the live data, every
metric a rule or the Grafana dashboard names is exported, and every panel's query returns data.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from chatsvc import metrics
from chatsvc.testing import (
    DatabaseFactory,
    ServerProcess,
    require_program,
)
from tests.live.prometheus_load import (
    AUTH_BURST,
    DASHBOARD,
    GRAFANA_VARIABLES,
    JOB,
    METRIC_NAME,
    POOL_MAX,
    RULES,
    USERS,
    WORKERS,
    Load,
    Prometheus,
    Sent,
    seen_by,
    send_load,
    warm_up,
)

# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
async def database(databases: DatabaseFactory) -> str:
    return await databases.create(migrated=True)


@pytest.fixture(scope="module")
def server(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("prometheus-serve") / "serve.log"
    with ServerProcess(database, log, CHATSVC_WORKERS=str(WORKERS), CHATSVC_DB_POOL_MAX=str(POOL_MAX),
                       CHATSVC_HEALTH_INTERVAL="0.25", CHATSVC_RATE="0", CHATSVC_AUTH_RATE="1",
                       CHATSVC_AUTH_BURST=str(AUTH_BURST), CHATSVC_LOG_LEVEL="warning",
                       CHATSVC_DRAIN_DELAY="0",
                       # Every 429 of /login here is the address limiter's, not the account's.
                       CHATSVC_LOGIN_FAILURES="1000000") as started:
        yield started


@pytest.fixture(scope="module")
def prometheus(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    require_program("promtool", "prometheus")
    with Prometheus(tmp_path_factory.mktemp("prometheus"), server.admin_port) as running:
        yield running


@pytest.fixture(scope="module")
async def load(server: ServerProcess, prometheus: Prometheus) -> Sent:
    await asyncio.to_thread(prometheus.wait_for, f'up{{job="{JOB}"}}', {JOB: 1.0}, "job")
    total, measured = Load(), Load()
    users = await warm_up(server, total)
    warmed_up = time.time()
    await asyncio.to_thread(seen_by, prometheus, total)
    # The window starts at a scrape after the warm-up and before the load: it holds the warm-up's
    # counts, and nothing older. Found by its timestamp: on a busy machine a scrape comes late or
    # times out, so counting on one each second is not enough.
    base = await asyncio.to_thread(prometheus.last_scrape_after, warmed_up)
    started = time.time()
    await send_load(server, users, measured)
    total.answers.update(measured.answers)
    total.refused.update(measured.refused)
    await asyncio.to_thread(seen_by, prometheus, total)
    # It ends at the newest scrape, which holds the whole load: with a sample at each edge,
    # rate() extrapolates by next to nothing.
    end = await asyncio.to_thread(prometheus.last_scrape_after, started) + 0.01
    assert base < started, (base, started)
    return Sent(total, measured, window=end - base + 0.01, end=end)


# --------------------------------------------------------------------------- what Prometheus reads

def test_request_counts_and_rates_per_route_match_the_load(prometheus: Prometheus, load: Sent):
    expected = {key: float(n) for key, n in load.total.answers.items()}
    counted = prometheus.values(
        f'sum by (route, method, status) (chatsvc_http_requests_total{{job="{JOB}"}})',
        "route", "method", "status")
    # The harness's readiness polls of /check are the server's, not the test's to count.
    assert counted.pop(("/check", "GET", "200"), 0) >= 1
    # The limiter answers before routing; its 429s are counted under the route they were sent to.
    assert counted == expected
    # Per route over the measured part: exactly (first to last sample), and as rate() sees it.
    routed = {route: float(load.measured.count(route) - load.measured.count(route, "429"))
              for route, _, _ in load.measured.answers}
    selector = f'chatsvc_http_requests_total{{job="{JOB}", status!="429"}}[{load.range}]'
    grown = prometheus.values(f"sum by (route) (max_over_time({selector}) - min_over_time({selector}))",
                              "route", at=load.end)
    assert {route: n for route, n in grown.items() if n} == routed
    rates = prometheus.values(f"sum by (route) (rate({selector}))", "route", at=load.end)
    # rate() is the increase between the first and last samples over the time between them (a
    # sample at each edge of the window: the extrapolation to the edges adds as much as it divides).
    sampled = load.window - 0.02
    for route, count in routed.items():
        assert rates[route] * sampled == pytest.approx(count, rel=0.01), (route, rates[route], count, sampled)


def test_p99_latency_per_route_comes_from_the_histogram_of_the_load(prometheus: Prometheus, load: Sent):
    histogram = f'chatsvc_http_request_duration_seconds_bucket{{job="{JOB}"}}[{load.range}]'
    p99 = prometheus.values(f"histogram_quantile(0.99, sum by (route, le) (rate({histogram})))", "route",
                            at=load.end)
    # The histogram holds exactly the measured requests, each under its route (the login limiter's
    # 429s, answered before routing, included).
    routed = f'job="{JOB}", route!~"/check|unmatched"'
    counted = f"chatsvc_http_request_duration_seconds_count{{{routed}}}[{load.range}]"
    grown = prometheus.values(f"sum by (route) (max_over_time({counted}) - min_over_time({counted}))",
                              "route", at=load.end)
    assert sum(grown.values()) == load.measured.count()
    largest_bound = metrics.REQUEST_SECONDS._upper_bounds[-2]  # the last finite one
    for route in {route for route, _, status in load.measured.answers if status != "429"}:
        assert 0 < p99[route] <= largest_bound, (route, p99[route])


async def test_pool_use_matches_postgresql_and_the_configured_bound(prometheus: Prometheus, load: Sent,
                                                                    database: str):
    connection = await asyncpg.connect(database)
    try:
        open_in_postgresql = await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = 'chatsvc'")
    finally:
        await connection.close()
    assert open_in_postgresql >= WORKERS
    await asyncio.to_thread(prometheus.wait_for, f'chatsvc_db_pool_connections{{job="{JOB}"}}',
                            {JOB: float(open_in_postgresql)}, "job")
    assert prometheus.values("chatsvc_db_pool_max_connections", "job") == {JOB: float(WORKERS * POOL_MAX)}
    in_use = prometheus.values("chatsvc_db_pool_connections - chatsvc_db_pool_idle_connections", "job")
    assert 0 <= in_use[JOB] <= open_in_postgresql
    assert prometheus.values("instance:chatsvc_db_pool:utilisation", "job")[JOB] <= 1


def test_rate_limit_login_and_message_counts_match_the_load(prometheus: Prometheus, load: Sent):
    total = load.total
    assert sum(total.refused.values()) == total.count("/login", "429")
    assert prometheus.values("sum by (limiter) (chatsvc_rate_limited_total)", "limiter") == {
        limiter: float(n) for limiter, n in total.refused.items()}
    logins = {"success": USERS, "failure": total.count("/login", "401"),
              "throttled": total.refused["account"]}
    assert prometheus.values("sum by (result) (chatsvc_logins_total)", "result") == {
        result: float(n) for result, n in logins.items() if n}
    assert prometheus.values("sum by (content_type) (chatsvc_messages_created_total)", "content_type") == {
        "text": float(total.count("/messages", "201"))}
    assert prometheus.values("sum by (reason) (chatsvc_streams_ended_total)", "reason") == {
        "client": float(total.count("/messages/stream"))}
    assert prometheus.values("chatsvc_ready", "job") == {JOB: 1.0}


# --------------------------------------------------------------------------- rules and dashboard

def rule_groups() -> list[dict[str, Any]]:
    return yaml.safe_load(RULES.read_text())["groups"]


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL with Grafana's variables filled in) for every target of every panel."""
    queries = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, f"{panel['title']}: a variable the test does not know: {expr}"
            queries.append((panel["title"], expr))
    return queries


def test_every_rule_evaluates_on_the_live_data_and_each_recording_has_a_value(prometheus: Prometheus,
                                                                             load: Sent):
    shipped = {rule.get("record") or rule["alert"] for group in rule_groups() for rule in group["rules"]}
    deadline = time.monotonic() + 60  # only a hang: rules run every second
    while True:
        groups = httpx.get(prometheus.url + "/api/v1/rules", timeout=10).json()["data"]["groups"]
        loaded = {rule["name"]: rule for group in groups for rule in group["rules"]}
        pending = [name for name, rule in loaded.items() if rule.get("lastEvaluation", "").startswith("0001")]
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert set(loaded) == shipped
    assert {name: rule["health"] for name, rule in loaded.items()} == dict.fromkeys(shipped, "ok"), \
        {name: rule.get("lastError") for name, rule in loaded.items() if rule["health"] != "ok"}
    for group in rule_groups():
        for rule in group["rules"]:
            if "record" in rule:
                assert prometheus.query(rule["record"]), f"{rule['record']} has no value"
    firing = prometheus.query('ALERTS{alertstate="firing"}')
    assert firing == [], f"alerts firing on a healthy service: {firing}"


def test_every_metric_the_rules_and_the_dashboard_name_is_exported(server: ServerProcess, load: Sent):
    exported = set()
    text = httpx.get(server.admin_url + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        exported |= {family.name, *(sample.name for sample in family.samples)}
    named = {name for group in rule_groups() for rule in group["rules"]
             for name in METRIC_NAME.findall(rule["expr"])}
    named |= {name for _, expr in dashboard_queries() for name in METRIC_NAME.findall(expr)}
    assert named, "no metric found in the rules"
    assert named - exported == set(), f"named by a rule or panel, but not in /metrics: {named - exported}"


def test_every_dashboard_query_returns_data(prometheus: Prometheus, load: Sent):
    queries = dashboard_queries()
    assert len(queries) >= 15
    empty = [(title, expr) for title, expr in queries if not prometheus.query(expr)]
    assert empty == [], f"panels without data: {empty}"
    jobs = httpx.get(prometheus.url + "/api/v1/label/job/values",
                     params={"match[]": "chatsvc_build_info"}, timeout=10).json()["data"]
    assert jobs == [JOB], "the dashboard's $job variable lists label_values(chatsvc_build_info, job)"
