"""`python -m chatsvc.bench`: run the benchmark and write BENCHMARKS.md (see the package's docstring)."""

from __future__ import annotations

import argparse
import os
import pickle
import signal
import sys

from chatsvc.bench import __doc__ as about
from chatsvc.bench.data import private_cluster
from chatsvc.bench.fanout import run_fanout
from chatsvc.bench.importing import run_import_bench
from chatsvc.bench.options import RESULTS, ROOT, BenchError, Options
from chatsvc.bench.report import write_fanout, write_growth, write_import, write_report, write_send_cost
from chatsvc.bench.routes import run_bench
from chatsvc.bench.scale import run_scale
from chatsvc.bench.send_cost import run_send_cost

# The import section: an original's database of a million messages, one user per hundred.
IMPORT_MESSAGES = 1_000_000
IMPORT_SMOKE_MESSAGES = 20_000


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    try:
        opts = _options(args)
        if args.scale:
            write_growth(run_scale(opts), opts)
        elif args.fanout_only:
            with private_cluster(durable=not opts.not_durable) as (_, server_dsn):
                write_fanout(run_fanout(server_dsn, opts), opts)
        elif args.send_only:
            write_send_cost(run_send_cost(opts), opts)
        elif args.import_only:
            messages = args.import_messages or (IMPORT_SMOKE_MESSAGES if args.smoke else IMPORT_MESSAGES)
            with private_cluster() as (_, server_dsn):
                write_import(run_import_bench(server_dsn, max(messages // 100, 2), messages), opts)
        elif args.report_only:
            if not RESULTS.exists():
                raise BenchError(f"no results in {RESULTS}: run the benchmark first")
            with RESULTS.open("rb") as saved:
                write_report(pickle.load(saved), opts)  # noqa: S301 (our own file)
        else:
            results = run_bench(opts)
            with RESULTS.open("wb") as kept:
                pickle.dump(results, kept)
            write_report(results, opts)
    except BenchError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted; everything it started has been stopped", file=sys.stderr)
        return 130
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m chatsvc.bench",
        description=(about or "").split("\n\n")[0],
        epilog="Every option of the run can also be set as BENCH_<NAME> (see chatsvc/bench/options.py).",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--scale", action="store_true", help="only the growth section (make bench-scale)")
    mode.add_argument("--fanout-only", action="store_true", help="only the fan-out section")
    mode.add_argument("--send-only", action="store_true",
                      help="only the section on what a send costs PostgreSQL, part by part (make bench-send)")
    mode.add_argument("--import-only", action="store_true",
                      help="only the import section (make bench-import): chatsvc import-original's time")
    mode.add_argument(
        "--report-only",
        action="store_true",
        help=f"write the report again from the last run's results ({RESULTS.relative_to(ROOT)})",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="short runs on small data, written to .data/bench/smoke.md: every part in a minute or two",
    )
    fanout = parser.add_argument_group("fan-out section")
    fanout.add_argument("--streams", type=int, help="streams held open on process B (100)")
    fanout.add_argument("--messages", type=int, help="messages posted in each fan-out run (2000)")
    fanout.add_argument("--concurrency", help="concurrent posters, comma-separated, a run each (1,8)")
    parser.add_argument("--import-messages", type=int,
                        help=f"messages in the import section's original database ({IMPORT_MESSAGES:,})")
    return parser


def _options(args: argparse.Namespace) -> Options:
    opts = (Options.smoke() if args.smoke else Options()).with_env(os.environ)
    flags = {
        "BENCH_FANOUT_STREAMS": args.streams,
        "BENCH_FANOUT_MESSAGES": args.messages,
        "BENCH_FANOUT_CONCURRENCY": args.concurrency,
    }
    return opts.with_env({name: str(value) for name, value in flags.items() if value is not None})


if __name__ == "__main__":
    sys.exit(main())
