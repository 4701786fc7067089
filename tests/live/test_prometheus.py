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
import math
import re
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
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
    User,
    client_for,
    free_port,
    require_program,
)
from tests import PROJECT_ROOT

RULES = PROJECT_ROOT / "deploy" / "prometheus" / "chatsvc-rules.yaml"
DASHBOARD = PROJECT_ROOT / "deploy" / "grafana" / "chatsvc.json"
JOB = "chatsvc"
WORKERS = 2
POOL_MAX = 4
AUTH_BURST = 12  # per worker; the setup's sign-ups and logins stay under it
WRONG_LOGINS = 40
USERS = 4
MESSAGES_PER_USER = 5
LISTINGS_PER_USER = 5
# Grafana's variables, as a dashboard user would pick them.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$job": JOB, "$instance": ".+"}
# A metric name, not part of a recording rule's `level:metric:operations`.
METRIC_NAME = re.compile(r"(?<![\w:])(chatsvc_\w+)(?![\w:])")

PROMETHEUS_CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - {rules}
scrape_configs:
  - job_name: {job}
    static_configs:
      - targets: ["127.0.0.1:{admin_port}"]
"""


# --------------------------------------------------------------------------- the load

@dataclass
class Load:
    """What the test sent and what it was answered, counted on the client's side."""

    answers: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # route, method, status
    slowest: dict[str, float] = field(default_factory=dict)  # route: seconds
    refused: Counter[str] = field(default_factory=Counter)  # 429s by limiter, as their messages say

    async def send(self, client: httpx.AsyncClient, route: str, method: str, path: str,
                   **options: Any) -> httpx.Response:
        started = time.perf_counter()
        response = await client.request(method, path, **options)
        self.note(route, method, response.status_code, time.perf_counter() - started)
        if response.status_code == 429:
            # The per-address login limiter, or the failed-login throttle of one account.
            self.refused["account" if "account" in response.json()["error"]["message"] else "auth"] += 1
        return response

    def note(self, route: str, method: str, status: int, seconds: float) -> None:
        self.answers[route, method, str(status)] += 1
        self.slowest[route] = max(self.slowest.get(route, 0.0), seconds)

    def count(self, route: str | None = None, status: str | None = None) -> int:
        return sum(n for (r, _, s), n in self.answers.items()
                   if (route is None or r == route) and (status is None or s == status))


async def warm_up(server: ServerProcess, load: Sent) -> list[User]:
    """Users, and one request of each kind the load sends, so that every series it grows exists.

    A counter's first sample is its baseline: what happened before it, rate() cannot see.
    """
    async with client_for(server) as client:
        users: list[User] = []
        for _ in range(USERS):
            name, password = f"prom-{len(users)}-{time.monotonic_ns()}", "correct horse battery"
            created = await load.send(client, "/users", "POST", "/users",
                                      json={"username": name, "password": password})
            login = await load.send(client, "/login", "POST", "/login",
                                    json={"username": name, "password": password})
            assert created.status_code == 201 and login.status_code == 200, login.text
            users.append(User(created.json()["id"], name, password, login.json()["token"]))
        await send_messages(client, load, users, rounds=1)
        await stream_one_message(client, load, users[0], users[1])
        wrong = await load.send(client, "/login", "POST", "/login",
                                json={"username": users[0].username, "password": "wrong password"})
        assert wrong.status_code == 401, wrong.text
    return users


async def send_load(server: ServerProcess, users: list[User], load: Sent) -> None:
    """Messages, listings, a stream, and wrong passwords until the login limiter refuses."""
    async with client_for(server) as client:
        await send_messages(client, load, users, rounds=MESSAGES_PER_USER)
        await stream_one_message(client, load, users[0], users[1])
        for _ in range(WRONG_LOGINS):
            await load.send(client, "/login", "POST", "/login",
                            json={"username": users[0].username, "password": "wrong password"})
    assert load.count("/login", "429") > 0 and load.count("/login", "401") > 0, load.answers


async def send_messages(client: httpx.AsyncClient, load: Sent, users: list[User], rounds: int) -> None:
    """Each user sends `rounds` messages to the next and lists its own `rounds` times."""
    for _ in range(rounds):
        for sender, recipient in zip(users, users[1:] + users[:1], strict=True):
            sent = await load.send(client, "/messages", "POST", "/messages", headers=sender.auth, json={
                "recipient": recipient.id, "content": {"type": "text", "text": "load"}})
            assert sent.status_code == 201, sent.text
            listed = await load.send(client, "/messages", "GET", "/messages", headers=sender.auth,
                                     params={"recipient": sender.id, "start": 0})
            assert listed.status_code == 200, listed.text


async def stream_one_message(client: httpx.AsyncClient, load: Sent, reader: User, writer: User) -> None:
    """Open reader's event stream (past the messages so far), send it one, read its event, leave."""
    newest = await load.send(client, "/messages", "GET", "/messages", headers=reader.auth,
                             params={"recipient": reader.id, "start": 0})
    since = max((m["id"] for m in newest.json()["messages"]), default=0)
    started = time.perf_counter()
    async with client.stream("GET", "/messages/stream", headers=reader.auth,
                             params={"since": since}) as stream:
        assert stream.status_code == 200
        sent = await load.send(client, "/messages", "POST", "/messages", headers=writer.auth, json={
            "recipient": reader.id, "content": {"type": "text", "text": "streamed"}})
        assert sent.status_code == 201, sent.text
        async with asyncio.timeout(10):
            async for line in stream.aiter_lines():
                if line.startswith("event: message"):
                    break
    load.note("/messages/stream", "GET", 200, time.perf_counter() - started)


# --------------------------------------------------------------------------- Prometheus

class Prometheus:
    """Debian's prometheus on a free loopback port, its data in a temporary directory."""

    def __init__(self, directory: Path, admin_port: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = directory / "prometheus.yml"
        self.config.write_text(PROMETHEUS_CONFIG.format(rules=RULES, job=JOB, admin_port=admin_port))
        self.log_path = directory / "prometheus.log"
        self.argv = [require_program("prometheus", "prometheus"), f"--config.file={self.config}",
                     f"--storage.tsdb.path={directory / 'data'}",
                     f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"]
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Prometheus:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"prometheus exited:\n{self.log_path.read_text()[-3000:]}"
            try:
                if httpx.get(self.url + "/-/ready", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.__exit__()
        pytest.fail(f"prometheus was not ready in 60 s:\n{self.log_path.read_text()[-3000:]}")

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """The instant vector (or scalar, as one sample) `expr` evaluates to now, or at time `at`."""
        params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
        answer = httpx.get(self.url + "/api/v1/query", params=params, timeout=10).json()
        assert answer["status"] == "success", (expr, answer)
        data = answer["data"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def values(self, expr: str, *labels: str, at: float | None = None) -> dict[Any, float]:
        """{label value(s): sample value} of `expr`'s result."""
        result = {}
        for sample in self.query(expr, at):
            key = tuple(sample["metric"].get(label, "") for label in labels)
            result[key[0] if len(key) == 1 else key] = float(sample["value"][1])
        return result

    def last_scrape_after(self, moment: float, bound: float = 60) -> float:
        """The time of the newest successful scrape of chatsvc that started after `moment`."""
        deadline = time.monotonic() + bound
        while True:
            answer = httpx.get(self.url + "/api/v1/query", params={"query": f'up{{job="{JOB}"}}[60s]'},
                               timeout=10).json()
            scrapes = [float(at) for series in answer["data"]["result"] for at, up in series["values"]
                       if up == "1" and float(at) > moment]
            if scrapes or time.monotonic() > deadline:
                assert scrapes, f"no scrape of chatsvc in {bound} s after {moment}"
                return max(scrapes)
            time.sleep(0.2)

    def wait_for(self, expr: str, expected: Any, *labels: str, bound: float = 60) -> dict[Any, float]:
        """Query until `expr` gives `expected` (new scrapes and rule runs arrive every second)."""
        deadline = time.monotonic() + bound
        while True:
            got = self.values(expr, *labels)
            if got == expected or time.monotonic() > deadline:
                assert got == expected, f"{expr}: Prometheus has {got}, expected {expected}"
                return got
            time.sleep(0.2)


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


@dataclass
class Sent:
    """The whole load (`total`), and the part sent after Prometheus had seen the warm-up (`measured`):
    the range `window` (seconds) before the time `end` holds it all, after samples of the warm-up."""

    total: Load
    measured: Load
    window: float
    end: float

    @property
    def range(self) -> str:
        """The window as a PromQL range, rounded up to the millisecond."""
        return f"{math.ceil(self.window * 1000)}ms"


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


def seen_by(prometheus: Prometheus, load: Load) -> None:
    prometheus.wait_for('sum(chatsvc_http_requests_total{route!="/check"})', {(): float(load.count())})


# --------------------------------------------------------------------------- what Prometheus reads

def test_request_counts_and_rates_per_route_match_the_load(prometheus: Prometheus, load: Sent):
    expected = {key: float(n) for key, n in load.total.answers.items()}
    counted = prometheus.values(
        f'sum by (route, method, status) (chatsvc_http_requests_total{{job="{JOB}"}})',
        "route", "method", "status")
    # The harness's readiness polls of /check are the server's, not the test's to count.
    assert counted.pop(("/check", "GET", "200"), 0) >= 1
    # The limiter answers before routing: its 429s are counted, under the route label it gives.
    refused = {key: n for key, n in counted.items() if key[2] == "429"}
    assert sum(refused.values()) == load.total.count(status="429")
    assert {key: n for key, n in counted.items() if key[2] != "429"} == \
        {key: n for key, n in expected.items() if key[2] != "429"}
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
    # The histogram holds exactly the measured requests that reached a route (the login limiter
    # answers its 429s before routing: they are timed under "unmatched").
    routed = f'job="{JOB}", route!~"/check|unmatched"'
    counted = f"chatsvc_http_request_duration_seconds_count{{{routed}}}[{load.range}]"
    grown = prometheus.values(f"sum by (route) (max_over_time({counted}) - min_over_time({counted}))",
                              "route", at=load.end)
    assert sum(grown.values()) == load.measured.count() - load.measured.refused["auth"]
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
