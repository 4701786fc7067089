"""`make bench`: every route under wrk, its SQL under pgbench, Hypercorn against uvicorn, a login
storm, profiles and the stream fan-out, all on one prefilled database."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from chatsvc.bench import statements
from chatsvc.bench.data import Dataset, postmaster_pid, prefill, private_cluster, server_version
from chatsvc.bench.fanout import FanoutResult, run_fanout
from chatsvc.bench.load import Load, Run
from chatsvc.bench.machine import describe_machine
from chatsvc.bench.options import (
    ANNOUNCE_SCENARIOS,
    LOGS,
    POOLER_SCENARIOS,
    SCENARIOS,
    UVICORN_SCENARIOS,
    Options,
    Scenario,
    log,
)
from chatsvc.bench.pgbench import Pgbench
from chatsvc.bench.servers import (
    BenchServer,
    batched_server,
    chatsvc_server,
    pooled_server,
    profile_of,
    uvicorn_server,
)
from chatsvc.testing import DatabaseFactory

PROFILE_LINES = 15  # of each profile, in the report


@dataclass
class Results:
    machine: dict[str, str] = field(default_factory=dict)
    data: Dataset | None = None
    routes: dict[str, list[Run]] = field(default_factory=dict)
    pgbench: dict[str, list[Run]] = field(default_factory=dict)
    uvicorn: dict[str, list[tuple[Run, Run]]] = field(default_factory=dict)  # (hypercorn, uvicorn)
    pooler: dict[str, list[tuple[Run, Run]]] = field(default_factory=dict)  # (direct, via PgBouncer)
    # (announcing at once, in batches: opts.announce_window)
    announce: dict[str, list[tuple[Run, Run]]] = field(default_factory=dict)
    storm: list[tuple[Run, Run, Run]] = field(default_factory=list)  # (quiet GET, GET in storm, logins)
    profiles: dict[str, str] = field(default_factory=dict)
    commands: dict[str, str] = field(default_factory=dict)
    fanout: FanoutResult | None = None
    started: str = ""
    elapsed: float = 0.0


def run_bench(opts: Options) -> Results:
    results = Results(started=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"))
    began = time.monotonic()
    LOGS.mkdir(parents=True, exist_ok=True)
    for old in LOGS.iterdir():
        old.unlink()
    with private_cluster(durable=not opts.not_durable) as (cluster, server_dsn):
        with contextlib.ExitStack() as cleanup:  # the servers and the data go before the fan-out
            databases = DatabaseFactory(server_dsn, prefix="bench")
            cleanup.callback(lambda: asyncio.run(databases.drop_all()))
            log(f"prefilling: {opts.users:,} users, {opts.messages:,} messages")
            data = asyncio.run(
                prefill(databases, "bench", opts.users, opts.messages, 0, opts.users, opts.conversations)
            )
            results.data = data
            statements.install(data.dsn)
            log(f"prefilled in {data.seconds:.0f} s ({data.size})")
            load = Load(opts, data, postmaster_pid(cluster))
            cleanup.callback(load.stop_background)
            pgbench = Pgbench(load, cluster.bindir)
            postgresql = asyncio.run(server_version(data.dsn))
            results.machine = describe_machine(load.wrk_path, pgbench.path, postgresql)
            hyper = cleanup.enter_context(chatsvc_server(opts, data.dsn))
            load.servers = [hyper]
            log(f"chatsvc serve: {opts.workers} workers on {hyper.url}")
            for key in opts.scenarios:
                measure_route(SCENARIOS[key], load, pgbench, hyper, results)
            if "get" in opts.scenarios:
                log_in_storm(opts, load, hyper, results)
            comparisons = (
                (uvicorn_server(opts, data.dsn), "uvicorn", UVICORN_SCENARIOS, results.uvicorn),
                (pooled_server(opts, data.dsn), "chatsvc serve through PgBouncer", POOLER_SCENARIOS,
                 results.pooler),
                (batched_server(opts, data.dsn),
                 f"chatsvc serve announcing at most every {opts.announce_window * 1000:g} ms",
                 ANNOUNCE_SCENARIOS, results.announce),
            )
            for starting, what, keys, into in comparisons:
                # One other server at a time beside chatsvc, their runs alternating.
                other = cleanup.enter_context(starting)
                load.servers = [hyper, other]
                log(f"{what}: {opts.workers} workers on {other.url}")
                for key in (k for k in keys if k in opts.scenarios):
                    alternating(SCENARIOS[key], load, hyper, other, into)
                other.stop()
            results.commands = load.commands
        results.fanout = run_fanout(server_dsn, opts)
    results.elapsed = time.monotonic() - began
    return results


def measure_route(
    scenario: Scenario, load: Load, pgbench: Pgbench, server: BenchServer, results: Results
) -> None:
    """A warm-up, then the measured runs, each followed by pgbench on the same SQL; a profile."""
    opts, key = load.opts, scenario.key
    log(f"{scenario.title}: warm-up {opts.warmup:g} s")
    load.wrk(scenario.script, server, seconds=opts.warmup, measure=False)
    if scenario.pgbench:
        pgbench.run(scenario.pgbench, seconds=opts.warmup)
    for n in range(1, opts.runs + 1):
        run = load.wrk(scenario.script, server, label=key)
        results.routes.setdefault(key, []).append(run)
        log(
            f"{scenario.title} run {n}: {run.rate:,.0f} req/s, p99 {run.p99_ms:.1f} ms, "
            f"non-2xx {run.non_2xx}, CPU {run.server_cpu:.2f} s/1000, peak RSS {run.peak_rss_mb:.0f} MB"
        )
        if scenario.pgbench:
            limit = pgbench.run(scenario.pgbench, label=f"run{n}")
            results.pgbench.setdefault(key, []).append(limit)
            log(f"  pgbench {scenario.pgbench} run {n}: {limit.rate:,.0f} tps, p99 {limit.p99_ms:.1f} ms")
    if scenario.profiled:
        log(f"{scenario.title}: profiling one worker for {opts.profile_seconds} s")
        results.profiles[key] = profile(load, scenario, server, opts.profile_seconds)


def alternating(
    scenario: Scenario,
    load: Load,
    ours: BenchServer,
    other: BenchServer,
    into: dict[str, list[tuple[Run, Run]]],
) -> None:
    """Both servers up at once, their runs alternating: the machine's drift touches both alike."""
    for server in (ours, other):
        load.wrk(scenario.script, server, seconds=load.opts.warmup, measure=False)
    for n in range(1, load.opts.runs + 1):
        pair = (
            load.wrk(scenario.script, ours, label=f"{scenario.key}-{ours.name}-vs-{other.name}"),
            load.wrk(scenario.script, other, label=f"{scenario.key}-{other.name}"),
        )
        into.setdefault(scenario.key, []).append(pair)
        log(
            f"{scenario.title} run {n}: {ours.name} {pair[0].rate:,.0f} req/s, "
            f"{other.name} {pair[1].rate:,.0f} req/s"
        )


def log_in_storm(opts: Options, load: Load, server: BenchServer, results: Results) -> None:
    """GET /messages at a fixed moderate load, alone and while clients log in continuously."""
    log(
        f"login storm: GET /messages paced ({opts.paced_connections} connections, {opts.pace_ms} ms "
        f"apart) alone and with {opts.storm_logins} concurrent logins"
    )
    load.paced(server, measure=False)
    for n in range(1, opts.runs + 1):
        quiet = load.paced(server, "storm-quiet")
        storm = load.wrk_in_background(
            "login.lua", server, opts.seconds + 4, opts.storm_logins, "storm-logins"
        )
        time.sleep(2)  # the storm is at full strength before the measurement starts
        stormy = load.paced(server, "storm-get", settle=False)
        logins = load.finish(storm, "storm-logins")
        results.storm.append((quiet, stormy, logins))
        log(
            f"login storm run {n}: GET p99 {quiet.p99_ms:.1f} ms alone, {stormy.p99_ms:.1f} ms in the "
            f"storm ({logins.rate:.0f} logins/s)"
        )


def profile(load: Load, scenario: Scenario, server: BenchServer, seconds: int) -> str:
    """One worker under cProfile (the admin port's /debug/profile) while wrk runs the scenario."""
    label = f"profile-{scenario.key}"
    proc = load.wrk_in_background(scenario.script, server, seconds + 3, load.opts.connections, label)
    time.sleep(1)
    status, text = profile_of(server, seconds)
    load.finish(proc, label)
    if status != 200:
        return f"(profile failed: {status} {text[:200]})"
    return top_of_profile(text)


def top_of_profile(text: str) -> str:
    """The header and the first lines of the `by own time` table, with paths shortened."""
    lines = text.split("by own time ===", 1)[-1].splitlines()
    calls = next((line.strip() for line in lines if "function calls" in line), "")
    header = next((i for i, line in enumerate(lines) if line.strip().startswith("ncalls")), None)
    if header is None:
        return text[:3000]
    shortened = "\n".join(line for line in lines[header : header + 1 + PROFILE_LINES] if line.strip())
    for prefix in sorted({str(Path(p)) + "/" for p in sys.path if p}, key=len, reverse=True):
        shortened = shortened.replace(prefix, "")
    return f"{calls}\n{shortened}"
