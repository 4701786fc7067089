"""What tests/live/test_prometheus.py drives: a load it counts itself, and Debian's `prometheus` scraping
a live server, read back through its HTTP query API."""

from __future__ import annotations

import asyncio
import math
import re
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from chatsvc.testing import (
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


def seen_by(prometheus: Prometheus, load: Load) -> None:
    prometheus.wait_for('sum(chatsvc_http_requests_total{route!="/check"})', {(): float(load.count())})
