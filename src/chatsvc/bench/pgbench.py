"""The limit: pgbench running the very SQL a route runs, on the same data, as the routes' yardstick."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from chatsvc import queries
from chatsvc.bench.conversations import Conversations
from chatsvc.bench.load import Load, Meter, Run
from chatsvc.bench.options import DATA, LOGS, PRODUCTION, ROOT, BenchError
from chatsvc.bench.procfs import await_exits, tree
from chatsvc.schemas import MAX_ID

# pgbench runs at most 128 scripts; each of these stands for one user (its own session token).
USERS = 100
# The statements' parameters as pgbench variables (tok<n>: the n-th script's token hash). The
# absent idempotency key and sender are NULL literals: a pgbench variable cannot be NULL.
_AUTH = {2: ":idle", 3: ":touch"}
_POST = {**_AUTH, 4: ":recipient", 5: ":content", 6: "NULL", 7: "NULL"}
_GET = {**_AUTH, 4: ":me", 5: ":start", 6: ":limit"}
# The conversation routes' SQL, run by the callers of the dataset's conversations.
CONVERSATION_KINDS = ("conversations", "conversation", "conversation_back")
CONVERSATION_PAGE = 50  # what the conversation scenarios ask for, as a client would
# pgbench spreads each connection over its many scripts, each a prepared statement of its own, so
# most of its executions would fall among a statement's first five, which PostgreSQL plans afresh
# every time (custom plans); chatsvc's connections run each statement thousands of times on the
# cached generic plan. Measured on the conversation listing: 1.46 ms a call with custom plans
# against 0.51 to 0.57 ms with the generic one. pgbench is made to run the plan chatsvc runs.
PGOPTIONS = "-c plan_cache_mode=force_generic_plan"
_LITERAL = re.compile(r"'(?:[^']|'')*'")
_COLON_NAME = re.compile(r":(?=[A-Za-z_])")


class Pgbench:
    """pgbench against the dataset of `load`, sharing its settling, logs and shown commands."""

    def __init__(self, load: Load, bindir: Path) -> None:
        self.load, self.path = load, find_pgbench(bindir)

    def run(self, kind: str, *, seconds: float | None = None, label: str = "",
            send: str = queries.messages.SEND_MESSAGE) -> Run:
        """The SQL of route `kind` (post, get, login, or a conversation kind) from as many clients
        as wrk uses; for post, `send` in place of SEND_MESSAGE when given (chatsvc.bench.send_cost)."""
        opts, data = self.load.opts, self.load.data
        seconds = opts.seconds if seconds is None else seconds
        if kind in CONVERSATION_KINDS:
            if data.conversations is None:
                raise BenchError(f"pgbench {kind}: the dataset holds no conversations")
            files, defines = conversation_scripts(kind, data.conversations, data.tokens, DATA / "pgbench")
        else:
            files, defines = write_scripts(kind, data.users, data.readers, data.tokens, DATA / "pgbench",
                                           send)
        prefix = LOGS / f"pgbench-{kind}-{label or 'warmup'}"
        for stale in LOGS.glob(prefix.name + ".*"):
            stale.unlink()
        argv = [
            self.path,
            "-n",
            "-M",
            "prepared",
            "-c",
            str(opts.connections),
            "-j",
            str(opts.threads),
            "-T",
            str(max(1, round(seconds))),
            "-l",
            "--log-prefix",
            str(prefix),
            *(arg for path in files for arg in ("-f", f"{path}@1")),
            *(arg for name, value in defines.items() for arg in ("-D", f"{name}={value}")),
            data.dsn,
        ]
        if label:
            self.load.commands.setdefault(f"pgbench {kind}", shown_command(argv, files, defines))
        self.load.settle()
        backends = set(tree(self.load.pg_pid))
        with Meter(None, self.load.pg_pid, data.dsn) as meter:
            proc = subprocess.run(
                argv, capture_output=True, text=True, timeout=seconds + 120, check=False, cwd=LOGS,
                env={**os.environ, "PGOPTIONS": PGOPTIONS},
            )
            await_exits(self.load.pg_pid, backends)
        with (LOGS / f"pgbench-{kind}.log").open("a") as saved:
            saved.write(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            raise BenchError(f"pgbench {kind} failed:\n{proc.stderr[-2000:]}")
        return meter.fill(parse(proc.stdout, prefix))


def script(kind: str, n: int, uid: int, users: int, send: str = queries.messages.SEND_MESSAGE) -> str:
    """The n-th script of route `kind`, played by user `uid`: exactly the SQL the route runs (for
    post, `send`: SEND_MESSAGE unless a variant of it is measured)."""
    token = {1: f":tok{n}"}
    if kind == "post":
        return f"\\set recipient random(1, {users})\n" + pgbench_sql(send, token | _POST)
    if kind == "get":
        return f"\\set me {uid}\n" + pgbench_sql(queries.messages.LIST_MESSAGES, token | _GET)
    if kind == "login":
        # The bench names are their own login key under both rules (lower-case ASCII).
        name = f":uname{n}"
        begin = {1: name, 2: name, 3: name, 4: name, 5: ":window"}
        new_session = {1: "sha256(random()::text::bytea)", 2: ":me", 3: ":lifetime", 4: "NULL"}
        return (
            f"\\set me {uid}\n"
            + pgbench_sql(queries.login_failures.BEGIN_LOGIN, begin)
            + pgbench_sql(queries.sessions.CREATE_SESSION, new_session)
            + pgbench_sql(queries.login_failures.LOGIN_SUCCEEDED, {1: "'#' || :me"})
        )
    raise ValueError(kind)


def pgbench_sql(sql: str, parameters: dict[int, str]) -> str:
    """A route's statement with each `$n` replaced by a pgbench variable (or a literal).

    pgbench takes every `:name` for a variable, even inside a string literal (`'HH24:MI:SS'`), so
    such a literal is split after the colon (`'HH24:' || 'MI:' || 'SS'`): constants the planner
    folds back into the same string.
    """
    sql = _LITERAL.sub(lambda m: _COLON_NAME.sub(":' || '", m.group(0)), sql.strip())
    return re.sub(r"\$(\d+)", lambda m: parameters[int(m.group(1))], sql) + ";\n"


def write_scripts(
    kind: str, users: int, readers: int, tokens: dict[int, str], directory: Path,
    send: str = queries.messages.SEND_MESSAGE,
) -> tuple[list[Path], dict[str, str]]:
    """One script per sampled user (its own token), and the variables they share."""
    directory.mkdir(parents=True, exist_ok=True)
    step = max(1, readers // USERS)
    uids = list(range(1, readers + 1, step))[:USERS]
    defines = {
        "idle": f"{PRODUCTION.session_idle_timeout:g}",
        "touch": f"{PRODUCTION.session_touch_interval:g}",
        "lifetime": f"{PRODUCTION.session_lifetime:g}",
        "window": f"{PRODUCTION.login_failure_window:g}",
        "start": "0",
        "limit": "100",  # the page size, as the route passes it (the statement fetches one more)
        "content": json.dumps(
            {"type": "text", "text": "on my way, see you in ten minutes"}, separators=(",", ":")
        ),
    }
    files = []
    for n, uid in enumerate(uids, start=1):
        defines[f"tok{n}"] = "\\x" + hashlib.sha256(tokens[uid].encode()).hexdigest()
        defines[f"uname{n}"] = f"bench-user-{uid}"
        path = directory / f"{kind}-{n:03d}.sql"
        path.write_text(script(kind, n, uid, users, send))
        files.append(path)
    return files, defines


def conversation_scripts(
    kind: str, conversations: Conversations, tokens: dict[int, str], directory: Path
) -> tuple[list[Path], dict[str, str]]:
    """One script per hub (GET /conversations) or per long conversation (its newest page, or the
    page far back), each with the caller's own token: exactly the SQL the route runs."""
    directory.mkdir(parents=True, exist_ok=True)
    defines = {
        "idle": f"{PRODUCTION.session_idle_timeout:g}",
        "touch": f"{PRODUCTION.session_touch_interval:g}",
        "page": str(CONVERSATION_PAGE),
    }
    if kind == "conversations":
        callers = [(uid, 0, 0) for uid in range(1, conversations.hubs + 1)]
    else:
        callers = list(conversations.pairs)
    files = []
    for n, (uid, peer, before) in enumerate(callers[:USERS], start=1):
        defines[f"tok{n}"] = "\\x" + hashlib.sha256(tokens[uid].encode()).hexdigest()
        token = {1: f":tok{n}", **_AUTH}
        if kind == "conversations":
            body = pgbench_sql(queries.conversations.LIST_CONVERSATIONS,
                               {**token, 4: str(MAX_ID), 5: ":page"})
        else:
            # As the route passes them: the newest page, or ids up to `before` - 1.
            bound = MAX_ID if kind == "conversation" else before - 1
            body = pgbench_sql(queries.conversations.OLDER_MESSAGES,
                               {**token, 4: str(peer), 5: str(bound), 6: ":page"})
        path = directory / f"{kind}-{n:03d}.sql"
        path.write_text(body)
        files.append(path)
    return files, defines


def find_pgbench(bindir: Path) -> str:
    candidates = [
        bindir / "pgbench",
        shutil.which("pgbench"),
        *sorted(Path("/usr/lib/postgresql").glob("*/bin/pgbench"), reverse=True),
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return str(candidate)
    raise BenchError(
        "pgbench is not installed: install PostgreSQL's client tools "
        "(Debian: `apt-get install postgresql-contrib` or `postgresql`) and run again."
    )


def shown_command(argv: list[str], files: list[Path], defines: dict[str, str]) -> str:
    """The command for the report: the first and last script, the variables that are not tokens."""
    options = argv[1 : argv.index("-l")]
    first, last = (str(path.relative_to(ROOT)) for path in (files[0], files[-1]))
    variables = " ".join(
        f"-D {k}={v!r}" if k == "content" else f"-D {k}={v}"
        for k, v in defines.items()
        if not k.startswith(("tok", "uname"))
    )
    return (
        f"PGOPTIONS='{PGOPTIONS}' pgbench {' '.join(options)} -l -f {first}@1 ... -f {last}@1 "
        f"-D tok1=\\x<sha256 of user 1's token> ... {variables} '<bench database URL>'"
    )


def parse(output: str, prefix: Path) -> Run:
    """Counts from pgbench's summary; latencies from its per-transaction logs (`-l`)."""
    processed = re.search(r"number of transactions actually processed: (\d+)", output)
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", output)
    if not processed or not tps:
        raise BenchError(f"pgbench printed no summary:\n{output[-2000:]}")
    failed = re.search(r"number of failed transactions: (\d+)", output)
    latencies = sorted(
        int(line.split()[2])
        for path in LOGS.glob(prefix.name + ".*")
        for line in path.read_text().splitlines()
        if line.strip()
    )

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] / 1000 if latencies else 0.0

    count, rate = int(processed.group(1)), float(tps.group(1))
    return Run(
        requests=count,
        seconds=count / rate if rate else 0.0,
        p50_ms=pct(0.50),
        p99_ms=pct(0.99),
        max_ms=(latencies[-1] / 1000 if latencies else 0.0),
        non_2xx=int(failed.group(1)) if failed else 0,
    )
