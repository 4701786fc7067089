"""The servers under load, started by the live-server harness (chatsvc.testing): `chatsvc serve`
(Hypercorn) at production settings, uvicorn serving the same app, and the fan-out's pair."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from urllib.parse import parse_qs, urlsplit

import httpx

from chatsvc.bench.options import DATA, LOGS, BenchError, Options
from chatsvc.bench.procfs import cmdline, tree
from chatsvc.ha.pooler import PgBouncer
from chatsvc.testing import NO_RATE_LIMITS, QUIET_LOGS, SERVE, ServerProcess, free_port

# Production settings, except where a benchmark on one machine must differ (named in the report).
SHOWN_SETTINGS = {
    # wrk stands in for an ingress: each simulated client has its own X-Forwarded-For.
    "CHATSVC_TRUSTED_PROXIES": "127.0.0.1",
    "CHATSVC_DRAIN_DELAY": "0",
    # The profiles of the report come from the admin port's /debug/profile.
    "CHATSVC_DEBUG_ENDPOINTS": "true",
}
# The fan-out measures the streams, not logins or the limiters; all its streams come from here.
FANOUT_SETTINGS = {**NO_RATE_LIMITS, **QUIET_LOGS, "CHATSVC_DRAIN_DELAY": "0",
                   "CHATSVC_STREAM_MAX_PER_ADDRESS": "1000000"}
READY_TIMEOUT = 90  # a server starting while the previous run's load drains


class BenchServer(ServerProcess):
    """A harness server whose worker processes a run measures (CPU, memory)."""

    def __init__(
        self,
        name: str,
        dsn: str,
        workers: int,
        *,
        port: int | None = None,
        cheap_hashing: bool = True,
        argv: Sequence[str] = SERVE,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(dsn, LOGS / f"{name}.log", port=port, cheap_hashing=cheap_hashing, argv=argv)
        self.env.update(settings or {})
        self.name, self.expected_workers = name, workers

    def start(self, timeout: float = READY_TIMEOUT) -> BenchServer:
        """Once it answers and all its workers run: the first run must not meet one starting up."""
        try:
            super().start(timeout)
        except RuntimeError as error:
            raise BenchError(f"{self.name}: {error}") from None
        deadline = time.monotonic() + timeout
        while len(self.workers()) < self.expected_workers:
            if time.monotonic() > deadline:
                self.stop()
                raise BenchError(f"{self.name}: {self.expected_workers} workers did not all start")
            time.sleep(0.2)
        time.sleep(1)  # let every worker finish its start-up before the first run
        return self

    def __enter__(self) -> BenchServer:
        return self.start()

    def workers(self) -> list[int]:
        """The processes that serve: the multiprocessing children, or the process itself alone."""
        if self.process is None:
            return []
        pids = [pid for pid in self.descendants() if b"spawn_main" in cmdline(pid)]
        return pids or [self.process.pid]

    def tree(self) -> list[int]:
        return tree(self.process.pid) if self.process else []


def chatsvc_server(opts: Options, dsn: str, name: str = "hypercorn") -> BenchServer:
    settings = {"CHATSVC_WORKERS": str(opts.workers), **SHOWN_SETTINGS}
    return BenchServer(name, dsn, opts.workers, cheap_hashing=False, settings=settings)


def batched_server(opts: Options, dsn: str) -> BenchServer:
    """chatsvc at the same settings, announcing new messages at most once per opts.announce_window."""
    server = chatsvc_server(opts, dsn, name="batched")
    server.env["CHATSVC_STREAM_ANNOUNCE_WINDOW"] = f"{opts.announce_window:g}"
    return server


@contextlib.contextmanager
def pooled_server(opts: Options, dsn: str) -> Iterator[BenchServer]:
    """chatsvc at the same settings, its request pool through PgBouncer (deploy/ha/pgbouncer.ini)."""
    query = parse_qs(urlsplit(dsn).query)
    database = urlsplit(dsn).path.lstrip("/")
    with PgBouncer(DATA / "pgbouncer", query["host"][0], int(query["port"][0]), database) as pooler:
        server = chatsvc_server(opts, dsn, name="pooled")
        server.env["CHATSVC_POOLER_URL"] = pooler.url
        with server:
            yield server


def uvicorn_server(opts: Options, dsn: str) -> BenchServer:
    try:
        import uvicorn  # noqa: F401
    except ImportError:
        raise BenchError(
            "uvicorn is not installed: `make bench` installs it (pip install -e '.[bench]')"
        ) from None
    port = free_port()
    argv = uvicorn_argv(opts, port)
    return BenchServer(
        "uvicorn", dsn, opts.workers, port=port, cheap_hashing=False, argv=argv, settings=SHOWN_SETTINGS
    )


def fanout_server(dsn: str, name: str, streams: int, announce_window: float = 0) -> BenchServer:
    """One `chatsvc serve` process for `streams` streams: cheap password hashing, no rate limits."""
    settings = {
        **FANOUT_SETTINGS,
        "CHATSVC_STREAM_MAX_PER_PROCESS": str(streams),
        "CHATSVC_DB_POOL_MAX": "20",
        "CHATSVC_STREAM_ANNOUNCE_WINDOW": f"{announce_window:g}",
    }
    return BenchServer(name, dsn, 1, settings=settings)


def shown_settings(opts: Options) -> str:
    """The settings where the benchmark differs from production, as the report names them."""
    return " ".join(f"{k}={v}" for k, v in {"CHATSVC_WORKERS": opts.workers, **SHOWN_SETTINGS}.items())


def uvicorn_argv(opts: Options, port: int | str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "chatsvc.asgi:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(opts.workers),
        "--loop",
        "uvloop",
        "--http",
        "h11",
        "--no-access-log",
        "--no-proxy-headers",
        "--lifespan",
        "on",
        "--log-level",
        "warning",
    ]


def profile_of(server: BenchServer, seconds: int) -> tuple[int, str]:
    """One worker's profile over `seconds`, from the admin port's /debug/profile: status, text."""
    response = httpx.get(
        f"{server.admin_url}/debug/profile", params={"seconds": seconds}, timeout=seconds + 30
    )
    return response.status_code, response.text
