"""BENCHMARKS.md (and README's headline) from the measurements; the prose is in templates/report.md."""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from string import Template

from chatsvc.bench import tables
from chatsvc.bench.fanout import WARMUP, FanoutResult
from chatsvc.bench.importing import ImportResult
from chatsvc.bench.load import LUA_DIR
from chatsvc.bench.options import PRODUCTION, ROOT, SCENARIOS, Options, log
from chatsvc.bench.pgbench import CONVERSATION_KINDS, CONVERSATION_PAGE, USERS, script
from chatsvc.bench.routes import PROFILE_LINES, Results
from chatsvc.bench.scale import Growth
from chatsvc.bench.send_cost import SendCost
from chatsvc.bench.servers import shown_settings, uvicorn_argv
from chatsvc.bench.tables import mean, num, title

# How the run's PostgreSQL was set up, by BENCH_NOT_DURABLE.
POSTGRESQL = {
    False: "durable, as a deployment runs it (fsync, synchronous_commit and full_page_writes on)",
    True: "**NOT DURABLE** (BENCH_NOT_DURABLE=1: fsync, synchronous_commit and full_page_writes off, "
          "as a throwaway cluster; figures not comparable with a durable run)",
}
TEMPLATES = Path(__file__).resolve().parent / "templates" / "report.md"
BENCHMARKS = ROOT / "BENCHMARKS.md"
README = ROOT / "README.md"
# Sections a run keeps as they were unless it measures them: each between <!-- BEGIN/END name -->.
TUNING, SCALE, FANOUT, IMPORT, SEND = "TUNING", "SCALE", "FANOUT", "IMPORT", "SEND"


def render(block: str, **values: object) -> str:
    """A block of templates/report.md (`%% name` starts one), its $names filled in."""
    return Template(_blocks()[block]).substitute({k: str(v) for k, v in values.items()})


def write_report(results: Results, opts: Options) -> None:
    sections = {
        TUNING: preserved(opts.output, TUNING, "## Hot path: changes measured\n\n(none recorded yet)"),
        SCALE: preserved(opts.output, SCALE, "## Growth\n\n`make bench-scale` has not been run yet."),
        FANOUT: fanout_section(results.fanout) if results.fanout else preserved(opts.output, FANOUT, ""),
        IMPORT: preserved(opts.output, IMPORT, "## Moving in\n\n`make bench-import` has not been run yet."),
        SEND: preserved(opts.output, SEND,
                        "## What a send costs PostgreSQL\n\n`make bench-send` has not been run yet."),
    }
    text = report(results, opts) + "\n\n" + "\n\n".join(_marked(k, v) for k, v in sections.items()) + "\n"
    opts.output.write_text(text)
    log(f"wrote {opts.output}")
    if opts.output.resolve() == BENCHMARKS.resolve():  # not for a smoke run elsewhere
        update_readme(headline(results, opts))


def write_growth(growth: Growth, opts: Options) -> None:
    replace_section(opts.output, SCALE, growth_section(growth, opts))


def write_fanout(result: FanoutResult, opts: Options) -> None:
    replace_section(opts.output, FANOUT, fanout_section(result))


def write_send_cost(result: SendCost, opts: Options) -> None:
    replace_section(opts.output, SEND, render(
        "send",
        postgresql=result.postgresql,
        users=f"{result.users:,}",
        messages=f"{result.messages:,}",
        rounds=len(next(iter(result.runs.values()), [])),
        seconds=f"{result.seconds:g}",
        warmup=f"{result.warmup:g}",
        table=tables.send_cost(result),
    ))


def write_import(result: ImportResult, opts: Options) -> None:
    replace_section(opts.output, IMPORT, render(
        "import",
        messages=f"{result.messages:,}", users=f"{result.users:,}", imported=f"{result.imported:,}",
        skipped=f"{result.skipped:,}", seconds=f"{result.import_seconds:.1f}",
        rate=f"{result.rate:,.0f}", fill=f"{result.fill_seconds:.1f}", batch=f"{result.batch:,}",
        postgresql=result.postgresql, load=f"{result.load:.1f}", cores=os.cpu_count(),
    ))


def report(results: Results, opts: Options) -> str:
    """Everything but the sections kept between runs."""
    data = results.data
    assert data is not None, "results without a dataset"
    shared = {
        "started": results.started,
        "cores": results.machine.get("cores (nproc)"),
        "connections": opts.connections,
        "threads": opts.threads,
        "users": f"{data.users:,}",
        "pool_max": PRODUCTION.db_pool_max,
        "pool_total": PRODUCTION.db_pool_max * opts.workers,
        "lua_dir": _shown(LUA_DIR),
    }
    notes = target_notes(results, opts)
    profiles = [
        render("profile", title=SCENARIOS[k].title, text=text) for k, text in results.profiles.items()
    ]
    return render(
        "report",
        **shared,
        minutes=f"{results.elapsed / 60:.0f}",
        headline=headline(results, opts),
        targets=tables.targets(results),
        notes="\n" + render("notes", notes="\n".join(notes)) + "\n" if notes else "",
        machine=tables.machine(results),
        argon2_t=PRODUCTION.argon2_time_cost,
        argon2_m=PRODUCTION.argon2_memory_kib,
        argon2_p=PRODUCTION.argon2_parallelism,
        messages=f"{data.messages:,}",
        hot=f"{opts.conversations.hot:,}",
        hubs=opts.conversations.hubs,
        per_hub=f"{opts.conversations.per_hub:,}",
        pairs=opts.conversations.pairs,
        pair_messages=f"{opts.conversations.pair_messages:,}",
        back=f"{opts.conversations.back:,}",
        page=CONVERSATION_PAGE,
        counts=", ".join(f"{n:,} {kind}" for kind, n in data.counts.items()),
        per_inbox=data.messages // data.users,
        size=data.size,
        prefill=f"{data.seconds:.0f}",
        pool_min=PRODUCTION.db_pool_min,
        server_env=shown_settings(opts),
        warmup=f"{opts.warmup:g}",
        runs=opts.runs,
        seconds=f"{opts.seconds:g}",
        commands="\n".join(f"# {label}\n{command}" for label, command in results.commands.items()),
        routes=tables.routes(results),
        cpu_per_request=tables.cpu_per_request(results),
        postgresql=POSTGRESQL[bool(opts.not_durable)],
        pgbench=tables.pgbench(results),
        pgbench_users=USERS,
        post_script=script("post", 1, 1, data.users).rstrip(),
        get_script=script("get", 1, 1, data.users).rstrip(),
        uvicorn_command=" ".join(["uvicorn", *uvicorn_argv(opts, "<port>")[3:]]),
        uvicorn=tables.uvicorn(results),
        pooler=tables.pooler(results),
        announce_window=f"{opts.announce_window * 1000:g}",
        announce=tables.announce(results),
        paced_connections=opts.paced_connections,
        pace_ms=opts.pace_ms,
        storm_logins=opts.storm_logins,
        storm=tables.storm(results),
        profile_seconds=opts.profile_seconds,
        profile_lines=PROFILE_LINES,
        profiles="\n\n".join(profiles),
    )


def headline(results: Results, opts: Options) -> str:
    """The means of the runs, each run's ratios, the login storm and memory: also in README.md."""
    storm = memory = ""
    if results.storm:
        ratios = " / ".join(num(stormy.p99_ms / quiet.p99_ms, 2) for quiet, stormy, _ in results.storm)
        storm = "\n\n" + render("headline-storm", storm_logins=opts.storm_logins, ratios=ratios)
    pooler = ""
    if results.pooler:
        ratios = "; ".join(
            f"{title(key)} " + " / ".join(num(pooled.rate / direct.rate, 2) for direct, pooled in pairs)
            for key, pairs in results.pooler.items()
        )
        pooler = "\n\n" + render("headline-pooler", ratios=ratios)
    peaks = [r.peak_rss_mb for runs in results.routes.values() for r in runs if r.peak_rss_mb]
    if peaks:
        message_peaks = _message_peaks(results) or peaks
        memory = "\n" + render("headline-memory", messages=num(max(message_peaks)), logins=num(max(peaks)))
    return render(
        "headline",
        runs=opts.runs,
        seconds=f"{opts.seconds:g}",
        connections=opts.connections,
        cores=results.machine.get("cores (nproc)"),
        started=results.started,
        table=tables.headline(results),
        storm=storm,
        pooler=pooler,
        memory=memory,
    )


def target_notes(results: Results, opts: Options) -> list[str]:
    """What holds each target back, from the CPU each side spends per request."""
    notes = []
    cores = int(results.machine.get("cores (nproc)") or os.cpu_count() or 1)
    floor = mean(r.server_cpu for r in results.routes.get("check", []))
    for key, bound in ((k, b) for k, b in tables.PGBENCH_TARGETS.items() if k in results.pgbench):
        route, limit = results.routes[key], results.pgbench[key]
        app, pg, client = (mean(getattr(r, a) for r in route) for a in ("server_cpu", "pg_cpu", "client_cpu"))
        pg_alone, bench_client = mean(p.pg_cpu for p in limit), mean(p.client_cpu for p in limit)
        ratios = [r.rate / p.rate for r, p in zip(route, limit, strict=False)]
        predicted = (pg_alone + bench_client) / (app + pg + client)
        cpu = {
            "app": f"{app:.3f}",
            "pg": f"{pg:.3f}",
            "pg_alone": f"{pg_alone:.3f}",
            "predicted": f"{predicted:.2f}",
        }
        text = render(
            "note-route",
            title=SCENARIOS[key].title,
            measured=f"{mean(ratios):.2f}",
            cores=cores,
            client=f"{client:.3f}",
            bench_client=f"{bench_client:.3f}",
            **cpu,
        )
        if floor == floor:
            text += render("note-route-floor", floor=f"{floor:.3f}")
        if abs(predicted - mean(ratios)) > 0.05:
            text += render(
                "note-route-rough",
                connections=opts.connections,
                pool_total=PRODUCTION.db_pool_max * opts.workers,
                **cpu,
            )
        if key in CONVERSATION_KINDS and floor == floor:
            text += render("note-route-json", floor=f"{floor:.3f}", **cpu)
        if short := [(n, x) for n, x in enumerate(ratios, 1) if x < bound]:
            text += render(
                "note-route-short",
                bound=bound,
                short=", ".join(f"{n} ({x:.2f})" for n, x in short),
                route_low=num(min(r.rate for r in route)),
                route_high=num(max(r.rate for r in route)),
                limit_low=num(min(p.rate for p in limit)),
                limit_high=num(max(p.rate for p in limit)),
            )
        if short and predicted < bound:
            # The chatsvc CPU per request at which the CPU estimate reaches the bound.
            needed = max((pg_alone + bench_client) / bound - pg - client, 0)
            text += render("note-route-needed", bound=bound, needed=f"{needed:.3f}", **cpu)
            if needed < floor:  # below what a request costs before it reaches the handler
                ceiling = (pg_alone + bench_client) / (pg + client)
                text += render("note-route-unreachable", floor=f"{floor:.3f}", bound=bound, cores=cores,
                               ceiling=f"{ceiling:.2f}")
        notes.append(text + ".")
    if results.storm:
        ratios = [s.p99_ms / q.p99_ms for q, s, _ in results.storm]
        notes.append(
            render(
                "note-storm",
                low=f"{min(ratios):.2f}",
                high=f"{max(ratios):.2f}",
                hash_threads=PRODUCTION.hash_threads,
            )
        )
    peak = f"{max(_message_peaks(results) or [0]):.0f}"
    if login_peaks := [r.peak_rss_mb for r in results.routes.get("login", []) if r.peak_rss_mb]:
        argon2_mib = PRODUCTION.argon2_memory_kib // 1024
        notes.append(
            render(
                "note-memory-logins",
                peak=peak,
                login_peak=f"{max(login_peaks):.0f}",
                argon2_mib=argon2_mib,
                hash_threads=PRODUCTION.hash_threads,
                hash_mib=argon2_mib * PRODUCTION.hash_threads,
            )
        )
    elif _message_peaks(results):
        notes.append(render("note-memory", peak=peak))
    return notes


def growth_section(growth: Growth, opts: Options) -> str:
    small, large = growth.tables
    paced_p50 = mean(r.p50_ms for r in large.paced) / mean(r.p50_ms for r in small.paced)
    paced_p99 = mean(r.p99_ms for r in large.paced) / mean(r.p99_ms for r in small.paced)
    section = render(
        "growth",
        written=growth.written,
        machine=growth.machine,
        small=f"{small.messages:,}",
        large=f"{large.messages:,}",
        users=f"{opts.users:,}",
        per_user=f"{large.messages // opts.users:,}",
        paced_connections=opts.paced_connections,
        pace_ms=opts.pace_ms,
        connections=opts.connections,
        table=tables.growth(growth),
        p50=f"{paced_p50:.2f}",
        p99=f"{paced_p99:.2f}",
        rate=f"{mean(r.rate for r in large.loaded) / mean(r.rate for r in small.loaded):.2f}",
        verdict=tables.verdict(paced_p50 <= 1.5 and paced_p99 <= 1.5),
        commands="\n".join(growth.commands.values()),
    )
    shape = opts.scale_conversations
    return section.rstrip() + "\n\n" + render(
        "growth-conversations",
        hubs=shape.hubs, per_hub=f"{shape.per_hub:,}", pairs=shape.pairs,
        pair_messages=f"{shape.pair_messages:,}", back=f"{shape.back:,}", page=CONVERSATION_PAGE,
        added=f"{shape.hubs * shape.per_hub + shape.pairs * shape.pair_messages:,}",
        small=f"{small.messages:,}", large=f"{large.messages:,}",
        limit=tables.CONVERSATION_GROWTH_LIMIT, table=tables.conversation_growth(growth),
    ) + "\n"


def fanout_section(result: FanoutResult) -> str:
    ok = all(run.ok for run in result.runs)
    return render(
        "fanout",
        postgresql=result.postgresql,
        streams=result.streams,
        messages=result.messages,
        warmup=WARMUP,
        verdict=tables.verdict(ok) if ok else "**missed** (see the missing and duplicate columns)",
        table=tables.fanout(result),
    )


def preserved(path: Path, name: str, default: str) -> str:
    """Section `name` as the previous report (else the committed BENCHMARKS.md) has it."""
    for candidate in (path, BENCHMARKS):
        if (found := _section(candidate, name)) is not None:
            return found
    return default


def replace_section(path: Path, name: str, body: str) -> None:
    """Write section `name` of `path`, in place of the one there or at the end."""
    text = path.read_text() if path.exists() else "# chatsvc benchmarks\n"
    begin, end = _markers(name)
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + _marked(name, body) + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + _marked(name, body) + "\n"
    path.write_text(text)
    log(f"wrote the {name.lower()} section of {path}")


def update_readme(headline_text: str) -> None:
    """README.md's copy of the headline, between <!-- BEGIN/END BENCHMARKS -->."""
    text = README.read_text()
    begin, end = "<!-- BEGIN BENCHMARKS -->", "<!-- END BENCHMARKS -->"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        README.write_text(head + begin + "\n" + headline_text + "\n" + end + rest.split(end, 1)[1])
        log("updated the headline table in README.md")


def _message_peaks(results: Results) -> list[float]:
    return [
        r.peak_rss_mb for k, runs in results.routes.items() if k != "login" for r in runs if r.peak_rss_mb
    ]


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"


def _marked(name: str, body: str) -> str:
    begin, end = _markers(name)
    return f"{begin}\n{body}\n{end}"


def _section(path: Path, name: str) -> str | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    begin, end = _markers(name)
    if begin in text and end in text:
        return text.split(begin, 1)[1].split(end, 1)[0].strip("\n")
    return None


@functools.cache
def _blocks() -> dict[str, str]:
    parts = re.split(r"^%% (\S+)\n", TEMPLATES.read_text(), flags=re.MULTILINE)
    return {name: body.strip("\n") for name, body in zip(parts[1::2], parts[2::2], strict=True)}
