"""What one send costs PostgreSQL, part by part (`make bench-send`).

pgbench runs SEND_MESSAGE as shipped and with one part of it taken away: the conversation
bookkeeping, or an index the send keeps up. The variants take turns, round after round, on the same
data, so the machine's drift touches them alike; the difference from the statement as shipped is
what that part costs. Nothing here changes the service: it tells what a change to the schema or
the statement could save before anyone makes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from chatsvc import queries
from chatsvc.bench import statements
from chatsvc.bench.data import postmaster_pid, prefill, private_cluster, server_version
from chatsvc.bench.load import Load, Run
from chatsvc.bench.oneshot import fetch
from chatsvc.bench.options import Options, log
from chatsvc.bench.pgbench import Pgbench
from chatsvc.testing import DatabaseFactory

# The conversations upsert of SEND_MESSAGE (issue 13's bookkeeping), up to the closing SELECT.
_BOOKKEEPING = re.compile(r", counted AS \(.*?\n\)\n(?=SELECT caller\.user_id AS caller)", re.DOTALL)


def without_bookkeeping(send: str) -> str:
    """`send` without its conversations upsert: the message is stored, no conversation moves."""
    stripped, found = _BOOKKEEPING.subn("\n", send)
    if found != 1:
        raise ValueError("SEND_MESSAGE no longer has its conversations upsert where expected")
    return stripped


@dataclass(frozen=True)
class Variant:
    label: str
    statement: str
    dropped_indexes: tuple[str, ...] = ()  # dropped for the variant's run, then made again


def variants() -> list[Variant]:
    shipped = queries.messages.SEND_MESSAGE
    return [
        Variant("as shipped", shipped),
        Variant("without the conversation bookkeeping", without_bookkeeping(shipped)),
        Variant("without the index messages_recipient_sender_id", shipped,
                ("messages_recipient_sender_id",)),
        Variant("without the conversations' two recency indexes", shipped,
                ("conversations_low_recent", "conversations_high_recent")),
    ]


@dataclass
class SendCost:
    postgresql: str
    messages: int
    users: int
    seconds: float
    warmup: float
    runs: dict[str, list[Run]] = field(default_factory=dict)  # variant label -> a run per round


def run_send_cost(opts: Options) -> SendCost:
    with private_cluster(durable=not opts.not_durable) as (cluster, server_dsn):
        databases = DatabaseFactory(server_dsn, prefix="bench_send")
        try:
            log(f"send cost: prefilling {opts.users:,} users, {opts.send_messages:,} messages")
            data = asyncio.run(
                prefill(databases, "bench_send", opts.users, opts.send_messages, 0, opts.users))
            statements.install(data.dsn)
            pgbench = Pgbench(Load(opts, data, postmaster_pid(cluster)), cluster.bindir)
            result = SendCost(asyncio.run(server_version(data.dsn)), opts.send_messages, opts.users,
                              opts.seconds, opts.warmup)
            measured = variants()
            for round_ in range(1, opts.send_rounds + 1):
                # Each round starts one variant later: the tables grow as the rounds go, and no
                # variant should always run when they are largest.
                start = (round_ - 1) % len(measured)
                for variant in measured[start:] + measured[:start]:
                    with _indexes_dropped(data.dsn, variant.dropped_indexes):
                        # The writes of an index just built again are flushed, and the pages the
                        # statement touches first written whole, before the measured run.
                        fetch(data.dsn, "CHECKPOINT")
                        pgbench.run("post", send=variant.statement, seconds=opts.warmup)
                        run = pgbench.run("post", send=variant.statement, label=f"send-{round_}")
                    result.runs.setdefault(variant.label, []).append(run)
                    log(f"send cost, round {round_}, {variant.label}: {run.rate:,.0f} tps, "
                        f"PostgreSQL {run.pg_cpu:.3f} ms of CPU per send")
            return result
        finally:
            asyncio.run(databases.drop_all())


@contextlib.contextmanager
def _indexes_dropped(dsn: str, names: tuple[str, ...]) -> Iterator[None]:
    """The indexes `names` gone for the duration, then built again from their own definitions."""
    if not names:
        yield
        return
    definitions = fetch(dsn, "SELECT indexdef FROM pg_indexes WHERE indexname = ANY($1)", list(names))
    if len(definitions) != len(names):
        raise ValueError(f"not every one of the indexes {names} exists")
    fetch(dsn, "DROP INDEX " + ", ".join(f'"{name}"' for name in names))
    try:
        yield
    finally:
        for (definition,) in definitions:
            fetch(dsn, definition)
