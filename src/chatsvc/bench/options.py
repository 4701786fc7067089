"""What a benchmark run measures and how long: the options, the scenarios, where files go."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatsvc.bench.conversations import BENCH, SCALE, SMOKE, SMOKE_SCALE, Shape
from chatsvc.config import Settings


def _project_root() -> Path:
    """The checkout this package runs from (an editable install), else the current directory."""
    checkout = Path(__file__).resolve().parents[3]
    return checkout if (checkout / "pyproject.toml").is_file() else Path.cwd()


ROOT = _project_root()
DATA = ROOT / ".data" / "bench"  # the private PostgreSQL, the wrk data files, the logs
LOGS = DATA / "logs"
RESULTS = DATA / "results.pickle"  # the last run's measurements, for --report-only
PRODUCTION = Settings.from_env({})  # every setting at its default: what production runs


class BenchError(Exception):
    """Something the operator must fix; printed without a traceback, exit status 2."""


def log(message: str) -> None:
    print(f"bench [{time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    script: str  # the wrk script in lua/
    pgbench: str | None = None  # which route's SQL pgbench runs for the comparison
    profiled: bool = False


SCENARIOS = {
    s.key: s
    for s in (
        Scenario("check", "GET /check", "check.lua", profiled=True),
        Scenario("post", "POST /messages", "messages_post.lua", pgbench="post", profiled=True),
        Scenario("get", "GET /messages (100 per page)", "messages_get.lua", pgbench="get", profiled=True),
        Scenario("login", "POST /login", "login.lua", pgbench="login"),
        Scenario("conversations", "GET /conversations (50 of 1,000)", "conversations_get.lua",
                 pgbench="conversations"),
        Scenario("conversation", "GET /conversations/{peer}/messages (newest 50)", "conversation_newest.lua",
                 pgbench="conversation"),
        Scenario("conversation_back", "GET /conversations/{peer}/messages (50, 10,000 back)",
                 "conversation_back.lua", pgbench="conversation_back"),
        Scenario("mix", "90% GET / 10% POST /messages", "mix.lua", profiled=True),
    )
}
UVICORN_SCENARIOS = ("check", "post", "get")
# Routes measured directly and through PgBouncer (transaction pooling): the pooler's cost.
POOLER_SCENARIOS = ("post", "get")
# Routes measured with each new message announced at once and in batches (the announce window).
ANNOUNCE_SCENARIOS = ("post",)


@dataclass
class Options:
    """Every field can be set from the environment as BENCH_<FIELD> (BENCH_SECONDS=5)."""

    seconds: float = 15  # each measured run
    warmup: float = 5
    runs: int = 2
    connections: int = 32
    threads: int = 2
    users: int = 5000
    messages: int = 1_000_000  # prefilled
    storm_logins: int = 20
    paced_connections: int = 8
    pace_ms: int = 20
    profile_seconds: int = 5
    scale_small: int = 10_000
    scale_large: int = 10_000_000
    conversations: Shape = BENCH  # added to the prefilled messages
    scale_conversations: Shape = SCALE  # added to both of bench-scale's tables
    fanout_streams: int = 100
    fanout_messages: int = 2000  # posted in each fan-out run
    fanout_concurrency: tuple[int, ...] = (1, 8)  # concurrent posters, one run each
    # CHATSVC_STREAM_ANNOUNCE_WINDOW of the batched-announcement runs: POST /messages against a
    # server announcing at once, and the fan-out with the posting process announcing so.
    announce_window: float = 0.005
    send_messages: int = 300_000  # prefilled for make bench-send
    send_rounds: int = 4  # each a run of every variant of the send, in turn, each round starting one later
    scenarios: tuple[str, ...] = tuple(SCENARIOS)
    # 1: PostgreSQL with fsync, synchronous_commit and full_page_writes off, labelled in the report.
    not_durable: int = 0
    output: Path = ROOT / "BENCHMARKS.md"
    workers: int = dataclasses.field(default_factory=lambda: os.cpu_count() or 1)

    @classmethod
    def smoke(cls) -> Options:
        """A run of a minute or two that goes through every part, written beside the data."""
        return cls(
            seconds=2,
            warmup=1,
            runs=1,
            connections=8,
            users=1000,
            messages=20_000,
            storm_logins=4,
            profile_seconds=1,
            conversations=SMOKE,
            scale_conversations=SMOKE_SCALE,
            scale_small=2000,
            scale_large=20_000,
            fanout_streams=20,
            fanout_messages=300,
            send_messages=20_000,
            send_rounds=1,
            output=DATA / "smoke.md",
        )

    def with_env(self, environ: Mapping[str, str]) -> Options:
        """These options with each BENCH_<FIELD> set in `environ` in place of the field's value."""
        changes: dict[str, Any] = {}
        for option in dataclasses.fields(self):
            raw = environ.get(f"BENCH_{option.name.upper()}", "")
            if option.name != "workers" and raw:
                changes[option.name] = _parse(option.name, raw, getattr(self, option.name))
        return dataclasses.replace(self, **changes)


def _parse(name: str, raw: str, current: object) -> object:
    variable = f"BENCH_{name.upper()}"
    if isinstance(current, Path):
        return Path(raw)
    if name == "scenarios":
        keys = tuple(key for key in raw.split(",") if key)
        if unknown := [key for key in keys if key not in SCENARIOS]:
            raise BenchError(f"{variable}: no scenario {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
        return keys
    whole = isinstance(current, int | tuple)
    try:
        numbers = [int(part) if whole else float(part) for part in raw.split(",")]
    except ValueError:
        kind = "a whole number" if whole else "a number"
        raise BenchError(f"{variable} must be {kind}, not {raw!r}") from None
    if not all(0 < n < 1e9 for n in numbers) or (len(numbers) > 1 and not isinstance(current, tuple)):
        raise BenchError(f"{variable} must be above 0 and below 10^9, not {raw!r}")
    return tuple(numbers) if isinstance(current, tuple) else numbers[0]
