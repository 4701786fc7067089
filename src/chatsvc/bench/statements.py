"""pg_stat_statements around each measured run: how many statements a request sends and what each
costs the database on average, beside the process CPU time procfs measures."""

from __future__ import annotations

from chatsvc.bench.oneshot import fetch

PRELOAD = {"shared_preload_libraries": "pg_stat_statements", "pg_stat_statements.track": "top"}
SHOWN = 3  # the statements of a run that cost most in total

_TOP = """
SELECT calls, total_exec_time / calls AS mean_ms, regexp_replace(query, '\\s+', ' ', 'g') AS query
FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND calls > 0
  AND query NOT LIKE '%pg_stat_statements%'
ORDER BY total_exec_time DESC
LIMIT $1
"""


def install(dsn: str) -> None:
    fetch(dsn, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")


def reset(dsn: str) -> None:
    fetch(dsn, "SELECT pg_stat_statements_reset()")


def top(dsn: str, requests: int) -> tuple[tuple[float, float, str], ...]:
    """(calls per request, mean execution ms, the statement's start) of the costliest statements
    since the last reset."""
    rows = fetch(dsn, _TOP, SHOWN)
    per = 1 / requests if requests else 0.0
    return tuple((row["calls"] * per, row["mean_ms"], name_of(row["query"])) for row in rows)


# pg_stat_statements shows a statement with its literals replaced by $n, so it is named by a phrase
# only that statement of chatsvc.queries holds; any other by its first words.
NAMES = (
    ("INSERT INTO conversations AS c", "SEND_MESSAGE"),
    ("row_number() OVER (ORDER BY id) AS n", "LIST_MESSAGES"),
    ("ORDER BY recipient_id, id LIMIT $4", "STREAM_PAGE"),
    ("pg_current_snapshot()", "MESSAGES_HORIZON"),
    ("FROM pg_locks x", "MESSAGE_WRITERS"),
)


def name_of(query: str) -> str:
    for phrase, name in NAMES:
        if phrase in query:
            return name
    # Past the session CTE most route statements open with (sessions.CALLER), to what differs.
    return "… " + query.split("EXISTS (SELECT FROM caller) )", 1)[1].strip()[:60] if (
        "EXISTS (SELECT FROM caller) )" in query) else query.strip()[:60]
