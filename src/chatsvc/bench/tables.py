"""The report's tables: one Markdown table writer, and what goes in each table."""

# ruff: noqa: RUF001 (the tables write multiplication and division signs)
from __future__ import annotations

import functools
import operator
import statistics
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from chatsvc.bench.options import SCENARIOS
from chatsvc.bench.scale import CONVERSATION_ROUTES

# Each route's throughput as a share of pgbench running its SQL: at least this.
PGBENCH_TARGETS = {
    "post": 0.5, "get": 0.5, "conversations": 0.7, "conversation": 0.7, "conversation_back": 0.7,
}
# The conversation routes' latency on the large table may be at most this many times the small's.
CONVERSATION_GROWTH_LIMIT = 1.3

if TYPE_CHECKING:
    from chatsvc.bench.fanout import FanoutResult
    from chatsvc.bench.load import Run
    from chatsvc.bench.routes import Results
    from chatsvc.bench.scale import Growth
    from chatsvc.bench.send_cost import SendCost


def table(header: str, rows: Iterable[Sequence[object]], align: str = "lr") -> str:
    """A Markdown table of columns named in `header` ("a | b"); `align` has an l or r for each of
    the first columns, and its last letter goes for the rest (default: the first left, the rest right)."""
    columns = header.split(" | ")
    sides = align.ljust(len(columns), align[-1])
    rule = "|".join("---" if side == "l" else "--:" for side in sides)
    lines = [f"| {header} |", f"|{rule}|"]
    lines += [f"| {' | '.join(str(cell) for cell in row)} |" for row in rows]
    return "\n".join(lines)


def mean(values: Iterable[float | None]) -> float:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else float("nan")


def num(value: float | None, digits: int = 0) -> str:
    if value is None or value != value:
        return "–"
    return f"{value:,.{digits}f}"


def ratio(value: float) -> str:
    """Two decimals, or four for the tiny ratio of login to its SQL."""
    return num(value, 2) if value >= 0.1 or value != value else f"{value:.4f}"


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def title(key: str) -> str:
    return SCENARIOS[key].title


def headline(results: Results) -> str:
    """Each route's means, and each run's ratio to pgbench and to uvicorn."""
    rows = []
    for key, runs in results.routes.items():
        limit = results.pgbench.get(key, [])
        to_pgbench = " / ".join(ratio(r.rate / p.rate) for r, p in zip(runs, limit, strict=False))
        to_uvicorn = " / ".join(num(h.rate / u.rate, 2) for h, u in results.uvicorn.get(key, []))
        rows.append(
            [
                title(key),
                num(mean(r.rate for r in runs)),
                num(mean(r.p99_ms for r in runs), 1),
                num(mean(r.server_cpu for r in runs), 3),
                num(mean(p.rate for p in limit)) if limit else "–",
                to_pgbench or "–",
                to_uvicorn or "–",
            ]
        )
    header = (
        "route | chatsvc req/s | p99 ms | CPU s / 1000 req | pgbench tps, same SQL | "
        "route ÷ pgbench | Hypercorn ÷ uvicorn"
    )
    return table(header, rows)


def routes(results: Results) -> str:
    header = (
        "scenario | run | req/s | p50 ms | p99 ms | max ms | non-2xx | socket errors | "
        "chatsvc CPU s/1000 | of which kernel | PostgreSQL CPU s/1000 | wrk CPU s/1000 | "
        "peak RSS/worker MB"
    )
    rows = [
        [
            *_measured(key, n, r),
            r.socket_errors,
            num(r.server_cpu, 3),
            num(r.server_sys, 3),
            num(r.pg_cpu, 3),
            num(r.client_cpu, 3),
            num(r.peak_rss_mb),
        ]
        for key, runs in results.routes.items()
        for n, r in enumerate(runs, start=1)
    ]
    return table(header, rows)


def cpu_per_request(results: Results) -> str:
    """Each scenario's CPU per request in ms (app and PostgreSQL, from process CPU time, means of
    the runs), beside pg_stat_statements' statements per request and mean time of each, and the
    same for pgbench running the route's SQL."""
    header = (
        "scenario | app CPU ms/req | PostgreSQL CPU ms/req | statements (calls/req × mean ms) | "
        "pgbench: PostgreSQL CPU ms/tx | pgbench statements (calls/tx × mean ms)"
    )
    rows = []
    for key, runs in results.routes.items():
        limit = results.pgbench.get(key, [])
        rows.append([
            title(key),
            num(mean(r.server_cpu for r in runs), 3),
            num(mean(r.pg_cpu for r in runs), 3),
            _statements(runs[-1]) if runs else "–",
            num(mean(p.pg_cpu for p in limit), 3) if limit else "–",
            _statements(limit[-1]) if limit else "–",
        ])
    return table(header, rows)


def _statements(run: Run) -> str:
    """The run's costliest statements as "name calls-per-request x mean ms"."""
    shown = [f"{name} {calls:.2f} × {ms:.3f} ms" for calls, ms, name in getattr(run, "statements", ())]
    return "; ".join(shown).replace("|", "\\|") or "–"


def pgbench(results: Results) -> str:
    header = (
        "SQL of | run | tps | p50 ms | p99 ms | max ms | failed | PostgreSQL CPU s/1000 | "
        "pgbench CPU s/1000 | route req/s, same run | route ÷ pgbench"
    )
    rows = [
        [
            *_measured(key, n, p),
            num(p.pg_cpu, 3),
            num(p.client_cpu, 3),
            num(r.rate),
            ratio(r.rate / p.rate),
        ]
        for key, runs in results.pgbench.items()
        for n, (p, r) in enumerate(zip(runs, results.routes[key], strict=False), start=1)
    ]
    return table(header, rows)


def uvicorn(results: Results) -> str:
    return _pairs(results.uvicorn, "Hypercorn", "uvicorn", rss=True)


def pooler(results: Results) -> str:
    """Runs through PgBouncer against direct ones; the pairs are kept (direct, PgBouncer)."""
    pairs = {key: [(pooled, direct) for direct, pooled in runs] for key, runs in results.pooler.items()}
    return _pairs(pairs, "PgBouncer", "direct")


def announce(results: Results) -> str:
    """POST /messages announced at once against in batches, a row per pair of alternating runs."""
    header = (
        "route | run | req/s at once | req/s in batches | batches ÷ at once | "
        "app CPU ms/req at once / in batches | PostgreSQL CPU ms/req at once / in batches | "
        "p99 ms at once / in batches"
    )
    rows = [
        [
            title(key),
            n,
            num(at_once.rate),
            num(batched.rate),
            num(batched.rate / at_once.rate, 2),
            f"{num(at_once.server_cpu, 3)} / {num(batched.server_cpu, 3)}",
            f"{num(at_once.pg_cpu, 3)} / {num(batched.pg_cpu, 3)}",
            f"{num(at_once.p99_ms, 2)} / {num(batched.p99_ms, 2)}",
        ]
        for key, runs in results.announce.items()
        for n, (at_once, batched) in enumerate(runs, start=1)
    ]
    return table(header, rows)


def send_cost(result: SendCost) -> str:
    """A row per variant: PostgreSQL CPU per send in each round, their mean, and the difference."""
    means = {label: sum(run.pg_cpu or 0.0 for run in runs) / len(runs) for label, runs in result.runs.items()}
    shipped = next(iter(means.values()), float("nan"))
    header = "variant | PostgreSQL CPU ms/send, each round | mean | − as shipped | tps, mean"
    rows = [
        [
            label,
            " / ".join(num(run.pg_cpu, 3) for run in runs),
            num(means[label], 3),
            "–" if n == 0 else f"{means[label] - shipped:+.3f}",
            num(sum(run.rate for run in runs) / len(runs)),
        ]
        for n, (label, runs) in enumerate(result.runs.items())
    ]
    return table(header, rows, align="lrrrr")


def _pairs(pairs: dict[str, list[tuple[Run, Run]]], first: str, second: str, rss: bool = False) -> str:
    """Alternating runs of two servers, a row per pair: rates, their ratio, p99, CPU (and RSS)."""
    header = (
        f"route | run | {first} req/s | {second} req/s | {first} ÷ {second} | "
        f"{first} p99 ms | {second} p99 ms | {first} CPU s/1000 | {second} CPU s/1000"
        + (f" | {first} / {second} peak RSS MB" if rss else "")
    )
    rows = [
        [
            title(key),
            n,
            num(a.rate),
            num(b.rate),
            num(a.rate / b.rate, 2),
            num(a.p99_ms, 2),
            num(b.p99_ms, 2),
            num(a.server_cpu, 3),
            num(b.server_cpu, 3),
            *([f"{num(a.peak_rss_mb)} / {num(b.peak_rss_mb)}"] if rss else []),
        ]
        for key, runs in pairs.items()
        for n, (a, b) in enumerate(runs, start=1)
    ]
    return table(header, rows)


def storm(results: Results) -> str:
    header = (
        "run | GET req/s alone | GET p50 / p99 ms alone | GET req/s in storm | "
        "GET p50 / p99 ms in storm | p99 ratio | logins/s | login p50 / p99 ms | login non-2xx | "
        "peak RSS/worker MB"
    )
    rows = [
        [
            n,
            num(quiet.rate),
            _p50_p99(quiet, 2),
            num(stormy.rate),
            _p50_p99(stormy, 2),
            num(stormy.p99_ms / quiet.p99_ms, 2),
            num(logins.rate, 1),
            _p50_p99(logins, 0),
            logins.non_2xx,
            num(stormy.peak_rss_mb),
        ]
        for n, (quiet, stormy, logins) in enumerate(results.storm, start=1)
    ]
    return table(header, rows, align="r")


def targets(results: Results) -> str:
    """Each target's value in each run, and whether every run met it."""
    rows: list[list[str]] = []

    def row(name: str, values: list[float], met: Callable[[float], bool], shown: str, why: str = "") -> None:
        ok = bool(values) and all(met(v) for v in values)
        rows.append([name, *(shown.format(v) for v in values), f"{verdict(ok)}{why}"])

    for key, bound in PGBENCH_TARGETS.items():
        if key in results.pgbench:
            ratios = [
                r.rate / p.rate for r, p in zip(results.routes[key], results.pgbench[key], strict=False)
            ]
            short = ", ".join(f"{(bound - x) / bound:.0%} short" for x in ratios if x < bound)
            row(
                f"{title(key)} ≥ {bound} × pgbench (same SQL)",
                ratios,
                functools.partial(operator.le, bound),
                "{:.2f}",
                f" ({short})" if short else "",
            )
    if results.storm:
        ratios = [s.p99_ms / q.p99_ms for q, s, _ in results.storm]
        over = ", ".join(f"{x / 2:.1f} × the bound" for x in ratios if x > 2)
        row(
            "GET /messages p99 in a login storm ≤ 2 × without",
            ratios,
            lambda x: x <= 2,
            "× {:.2f}",
            f" ({over})" if over else "",
        )
    message_runs = [runs for key, runs in results.routes.items() if key != "login"]
    if message_runs:
        per_run = [
            max((runs[i].peak_rss_mb or 0) for runs in message_runs if len(runs) > i)
            for i in range(max(len(r) for r in message_runs))
        ]
        row("peak RSS per worker ≤ 100 MB (message routes)", per_run, lambda x: x <= 100, "{:.0f} MB")
    logins = [r.peak_rss_mb or 0 for r in results.routes.get("login", [])]
    if not logins and results.storm:
        logins = [max((s.peak_rss_mb or 0) for _, s, _ in results.storm)]
    if logins:
        row("peak RSS per worker ≤ 100 MB (during logins)", logins, lambda x: x <= 100, "{:.0f} MB")
    runs = max((len(r) - 2 for r in rows), default=0)  # a row: the target, its values, the verdict
    rows = [[*r[:-1], *(["–"] * (runs + 2 - len(r))), r[-1]] for r in rows]
    header = " | ".join(["target", *(f"run {n}" for n in range(1, runs + 1)), "verdict"])
    return table(header, rows, align="l" + "r" * runs + "l")


def machine(results: Results) -> str:
    return table(" | ", results.machine.items(), align="l")


def growth(result: Growth) -> str:
    header = (
        "messages | prefill s | database | run | paced p50 ms | paced p99 ms | saturated req/s | "
        "saturated p99 ms"
    )
    rows = [
        [
            f"{t.messages:,}",
            f"{t.prefill_seconds:.0f}",
            t.size,
            n,
            num(p.p50_ms, 2),
            num(p.p99_ms, 2),
            num(s.rate),
            num(s.p99_ms, 2),
        ]
        for t in result.tables
        for n, (p, s) in enumerate(zip(t.paced, t.loaded, strict=False), start=1)
    ]
    return table(header, rows, align="r")


def conversation_growth(result: Growth) -> str:
    """Each conversation route's paced latency on the large table over the small one."""
    small, large = result.tables
    rows = []
    for request, title in CONVERSATION_ROUTES.items():
        before, after = small.conversations.get(request, []), large.conversations.get(request, [])
        if not before or not after:
            continue
        p50 = mean(r.p50_ms for r in after) / mean(r.p50_ms for r in before)
        p99 = mean(r.p99_ms for r in after) / mean(r.p99_ms for r in before)
        rows.append([
            title,
            f"{num(mean(r.p50_ms for r in before), 2)} / {num(mean(r.p99_ms for r in before), 2)}",
            f"{num(mean(r.p50_ms for r in after), 2)} / {num(mean(r.p99_ms for r in after), 2)}",
            f"{p50:.2f} / {p99:.2f}",
            verdict(p50 <= CONVERSATION_GROWTH_LIMIT and p99 <= CONVERSATION_GROWTH_LIMIT),
        ])
    header = (f"route | {small.messages:,} messages: p50 / p99 ms | {large.messages:,}: p50 / p99 ms | "
              f"large ÷ small | ≤ {CONVERSATION_GROWTH_LIMIT} ×")
    return table(header, rows, align="lrrrl")


def fanout(result: FanoutResult) -> str:
    header = (
        "posters | announce window ms | messages/s | received | missing | duplicates | "
        "201 → event p50 / p99 / max ms | POST → event p50 / p99 / max ms"
    )
    rows = [
        [
            run.concurrency,
            num(run.announce_window * 1000, 0),
            num(run.messages / run.seconds),
            run.received,
            run.missing,
            run.duplicates,
            " / ".join(num(v, 2) for v in (run.from_201.p50_ms, run.from_201.p99_ms, run.from_201.max_ms)),
            " / ".join(num(v, 2) for v in (run.from_post.p50_ms, run.from_post.p99_ms, run.from_post.max_ms)),
        ]
        for run in result.runs
    ]
    return table(header, rows, align="r")


def _measured(key: str, n: int, run: Run) -> list[object]:
    """The cells that start a row of the routes and of pgbench: what, which run, rate, latency, failed."""
    return [
        title(key),
        n,
        num(run.rate),
        num(run.p50_ms, 2),
        num(run.p99_ms, 2),
        num(run.max_ms, 1),
        run.non_2xx,
    ]


def _p50_p99(run: Run, digits: int) -> str:
    return f"{num(run.p50_ms, digits)} / {num(run.p99_ms, digits)}"
