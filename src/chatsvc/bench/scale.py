"""`make bench-scale`: GET /messages and the conversation routes with a small and a very large
messages table, side by side."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from dataclasses import dataclass, field

from chatsvc.bench import statements
from chatsvc.bench.conversations import SCALE
from chatsvc.bench.data import postmaster_pid, prefill, private_cluster, server_version
from chatsvc.bench.load import Load, Run
from chatsvc.bench.machine import describe_machine, machine_line
from chatsvc.bench.options import LOGS, Options, log
from chatsvc.bench.pgbench import find_pgbench
from chatsvc.bench.servers import BenchServer, chatsvc_server
from chatsvc.testing import DatabaseFactory

READERS = 100  # the users whose first page is read
# The conversation routes whose latency is compared too: lua/common.lua's request, and its title.
CONVERSATION_ROUTES = {
    "get_conversations": f"GET /conversations (50 of {SCALE.per_hub:,})",
    "get_conversation_newest": "GET /conversations/{peer}/messages (newest 50)",
    "get_conversation_back": f"GET /conversations/{{peer}}/messages (50, {SCALE.back:,} back)",
}


@dataclass
class Table:
    """One size of the messages table, and the runs against it."""

    messages: int
    prefill_seconds: float = 0.0
    size: str = ""
    paced: list[Run] = field(default_factory=list)  # latency at a fixed moderate load
    loaded: list[Run] = field(default_factory=list)  # throughput at saturation
    # Latency of each conversation route (by lua/common.lua request) at the same moderate load.
    conversations: dict[str, list[Run]] = field(default_factory=dict)


@dataclass
class Growth:
    tables: list[Table]  # small, large
    commands: dict[str, str]
    machine: str
    written: str


def run_scale(opts: Options) -> Growth:
    """Both tables side by side, a server on each, their runs alternating (the machine's load drifts)."""
    LOGS.mkdir(parents=True, exist_ok=True)
    names = {opts.scale_small: "bench_scale_small", opts.scale_large: "bench_scale_large"}
    tables = [Table(messages) for messages in names]
    loads: list[Load] = []
    with private_cluster() as (cluster, server_dsn), contextlib.ExitStack() as cleanup:
        databases = DatabaseFactory(server_dsn, prefix="bench_scale")
        cleanup.callback(lambda: asyncio.run(databases.drop_all()))
        servers = []
        for table, name in zip(tables, names.values(), strict=True):
            # Small: 100 readers with 100 messages each. Large: every user's inbox holds
            # messages / users, each message the users-th row after the previous one.
            recipients = READERS if table.messages <= READERS * 1000 else opts.users
            log(f"bench-scale: prefilling {table.messages:,} messages to {recipients:,} recipients")
            data = asyncio.run(
                prefill(databases, name, opts.users, table.messages, recipients, READERS,
                        opts.scale_conversations)
            )
            statements.install(data.dsn)  # Load resets and reads it around each run
            log(f"prefilled in {data.seconds:.0f} s ({data.size})")
            table.prefill_seconds, table.size = data.seconds, data.size
            loads.append(Load(opts, data, postmaster_pid(cluster)))
            cleanup.callback(loads[-1].stop_background)
            servers.append(chatsvc_server(opts, data.dsn, name=f"hypercorn-{name}"))
        for server in servers:
            cleanup.enter_context(server)
        for load in loads:
            load.servers = servers
        _measure(opts, tables, loads, servers)
        machine = describe_machine(loads[0].wrk_path, find_pgbench(cluster.bindir), "?")
        machine["PostgreSQL"] = asyncio.run(server_version(server_dsn))
    commands = {label: command for load in loads for label, command in load.commands.items()}
    return Growth(tables, commands, machine_line(machine), f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}")


def _measure(opts: Options, tables: list[Table], loads: list[Load], servers: list[BenchServer]) -> None:
    sides = list(zip(tables, loads, servers, strict=True))
    for _, load, server in sides:
        load.paced(server, measure=False)
        load.wrk("messages_get.lua", server, seconds=opts.warmup, measure=False)
    for n in range(1, opts.runs + 1):
        for table, load, server in sides:
            table.paced.append(load.paced(server, "scale-paced"))
        for table, load, server in sides:
            table.loaded.append(load.wrk("messages_get.lua", server, label="scale-loaded"))
        for request in CONVERSATION_ROUTES:
            for table, load, server in sides:
                run = load.paced(server, f"scale-{request}", request=request)
                table.conversations.setdefault(request, []).append(run)
        for table in tables:
            log(
                f"{table.messages:,} messages run {n}: paced p50 {table.paced[-1].p50_ms:.2f} ms "
                f"p99 {table.paced[-1].p99_ms:.2f} ms; saturated {table.loaded[-1].rate:,.0f} req/s"
            )
