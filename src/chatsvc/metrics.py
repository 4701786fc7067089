"""Prometheus metrics of chatsvc, defined once, and the scrape that sees every worker process."""

from __future__ import annotations

import asyncio
import os
import platform
from bisect import bisect_left

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client import REGISTRY as PROCESS_REGISTRY

from chatsvc import __version__

# Set by `chatsvc serve` before any worker starts (and so before this module is
# imported there): every worker then writes its samples to files in that
# directory and a scrape of any one worker reads them all.
MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Label values come from fixed sets only, so that no client input can add a time series: the
# route template (or this), the method among HTTP's (else OTHER_METHOD), the status code.
UNMATCHED_ROUTE = "unmatched"
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
OTHER_METHOD = "other"

REQUESTS = Counter(
    "chatsvc_http_requests_total", "HTTP requests answered, by route template, method and status.",
    ["route", "method", "status"])
REQUEST_SECONDS = Histogram(
    "chatsvc_http_request_duration_seconds", "Time from request to the end of the response.",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
IN_FLIGHT = Gauge("chatsvc_http_requests_in_flight", "Requests being served now.",
                  multiprocess_mode="livesum")
POOL_SIZE = Gauge("chatsvc_db_pool_connections", "Open database connections.",
                  multiprocess_mode="livesum")
POOL_IDLE = Gauge("chatsvc_db_pool_idle_connections", "Open database connections not in use.",
                  multiprocess_mode="livesum")
POOL_MAX = Gauge("chatsvc_db_pool_max_connections",
                 "The bound on open database connections (CHATSVC_DB_POOL_MAX per process).",
                 multiprocess_mode="livesum")
# Readiness as /check answers it; over worker processes the least ready one counts.
READY = Gauge("chatsvc_ready", "1 while /check answers 200 (database reachable, not draining), else 0.",
              multiprocess_mode="livemin")
DATABASE_UP = Gauge("chatsvc_db_up", "1 while the last database probe (every CHATSVC_HEALTH_INTERVAL) "
                    "succeeded, else 0.", multiprocess_mode="livemin")
RATE_LIMITED = Counter("chatsvc_rate_limited_total",
                       "Requests refused with 429, by limiter: general, auth (per address), account.",
                       ["limiter"])
LOGINS = Counter("chatsvc_logins_total", "Login attempts by result.", ["result"])
MESSAGES_CREATED = Counter(
    "chatsvc_messages_created_total", "Messages stored, by content type.", ["content_type"])
PASSWORD_HASH_SECONDS = Histogram(
    "chatsvc_password_hash_seconds", "Time to hash or verify one password.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0))
PASSWORD_HASH_QUEUE = Gauge("chatsvc_password_hash_queue_depth",
                            "Password hashes and verifications waiting for a hash thread or running on one.",
                            multiprocess_mode="livesum")
PASSWORD_HASH_REJECTED = Counter(
    "chatsvc_password_hash_rejected_total",
    "Sign-ups and logins answered 503 at once because the password-hash queue was full.")
STREAMS_OPEN = Gauge("chatsvc_streams_open", "Event streams (GET /messages/stream) open now.",
                     multiprocess_mode="livesum")
STREAM_EVENTS = Counter("chatsvc_stream_events_total", "Messages sent on event streams.")
STREAMS_ENDED = Counter(
    "chatsvc_streams_ended_total",
    "Event streams ended, by reason: client, slow (cut), shutdown (drain), revoked (session), error.",
    ["reason"])
STREAM_FANOUT_LAG = Histogram(
    "chatsvc_stream_fanout_lag_seconds",
    "From a new message's notification reaching this process to its streams being woken "
    "(the wait for older transactions to settle); only for messages a stream held by this "
    "process concerns.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
STREAM_LISTENER_RECONNECTS = Counter(
    "chatsvc_stream_listener_reconnects_total", "Times the LISTEN connection was lost and remade.")
BUILD_INFO = Gauge("chatsvc_build_info", "Always 1; the labels say what is running.",
                   ["version", "python"], multiprocess_mode="max")
BUILD_INFO.labels(version=__version__, python=platform.python_version()).set(1)


class RequestTally:
    """This process's requests since the last flush, in plain memory, written out by `flush()`.

    In multiprocess mode each prometheus_client update is a locked write to a memory-mapped
    file; counting, timing and the in-flight gauge cost five of them per request. Here a
    request costs a few dict updates instead, and `flush()` writes the sums: every
    CHATSVC_METRICS_FLUSH_INTERVAL, before this process answers a scrape, and when it stops.
    """

    def __init__(self) -> None:
        self.in_flight = 0  # read by the in-flight gauge at each flush
        self._counts: dict[tuple[str, str, int], int] = {}
        # (route, method) -> [sum of seconds, then a count per bucket as prometheus_client has them]
        self._timings: dict[tuple[str, str], list[float]] = {}
        self._bounds = REQUEST_SECONDS._upper_bounds  # ascending, the last one +Inf

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request and time it, by route template, method label and status."""
        counts = self._counts
        key = (route, method, status)
        counts[key] = counts.get(key, 0) + 1
        timing = self._timings.get((route, method))
        if timing is None:
            timing = self._timings[(route, method)] = [0.0] * (len(self._bounds) + 1)
        timing[0] += seconds
        # Histogram.observe's bucket: the first whose bound is at least `seconds`.
        timing[1 + bisect_left(self._bounds, seconds)] += 1

    def flush(self) -> None:
        """Add what was counted since the last flush to the metrics; set the in-flight gauge."""
        counts, self._counts = self._counts, {}
        timings, self._timings = self._timings, {}
        for (route, method, status), count in counts.items():
            REQUESTS.labels(route, method, str(status)).inc(count)
        for (route, method), timing in timings.items():
            # Histogram.observe adds to the sum and to one bucket (buckets are made cumulative
            # when collected); there is no public call that adds n observations at once.
            child = REQUEST_SECONDS.labels(route, method)
            child._sum.inc(timing[0])
            for bucket, observed in zip(child._buckets, timing[1:], strict=True):
                if observed:
                    bucket.inc(observed)
        IN_FLIGHT.set(self.in_flight)


# Requests are counted only in the event loop's thread (the Observe middleware, the flushes), so
# the tally needs no lock.
REQUEST_TALLY = RequestTally()


async def flush_requests_forever(interval: float) -> None:
    """Flush this process's request tally every `interval` seconds, so other workers' scrapes see it."""
    while True:
        await asyncio.sleep(interval)
        REQUEST_TALLY.flush()


def scrape() -> tuple[bytes, str]:
    """The Prometheus text of this process, or of the whole worker group when there is one."""
    REQUEST_TALLY.flush()  # exact for this process; other workers' are at most their flush interval late
    directory = os.environ.get(MULTIPROCESS_DIR_ENV)
    if not directory:
        return generate_latest(PROCESS_REGISTRY), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)
    # Process metrics cannot be summed across processes: these are the answering worker's.
    text = generate_latest(registry) + _process_metrics()
    return text, CONTENT_TYPE_LATEST


def worker_exited(pid: int) -> None:
    """Drop a dead worker's live gauges so they stop counting toward the group."""
    if os.environ.get(MULTIPROCESS_DIR_ENV):
        multiprocess.mark_process_dead(pid)


def _process_metrics() -> bytes:
    from prometheus_client import ProcessCollector

    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    return generate_latest(registry)
