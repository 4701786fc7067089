"""Every setting of chatsvc, typed and validated once at start."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Callable, Mapping
from typing import Any


class ConfigError(Exception):
    """A setting has a value chatsvc cannot use; the message names it and what it accepts."""


def _bounded(kind: type[int] | type[float], low: float, high: float) -> Callable[[str], Any]:
    """A parser for an integer or number between `low` and `high`, inclusive."""
    accepts = f"an integer from {low} to {high}" if kind is int else f"a number from {low:g} to {high:g}"

    def parse(raw: str) -> Any:
        try:
            value = kind(raw.strip())
        except ValueError:
            raise ValueError(accepts) from None
        if not low <= value <= high:
            raise ValueError(accepts)
        return value

    return parse


def _integer(low: int, high: int) -> Callable[[str], int]:
    return _bounded(int, low, high)


def _number(low: float, high: float) -> Callable[[str], float]:
    return _bounded(float, low, high)


def _boolean(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError("true or false (also 1/0, yes/no, on/off)")


def _choice(*options: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in options:
            raise ValueError("one of " + ", ".join(options))
        return value

    return parse


def _text(raw: str) -> str:
    return raw.strip()


def _database_url(raw: str) -> str:
    value = raw.strip()
    if value and not value.startswith(("postgres://", "postgresql://")):
        raise ValueError("a postgresql:// URL")
    return value


def _origins(raw: str) -> tuple[str, ...]:
    origins = tuple(part.strip() for part in raw.split(",") if part.strip())
    if not origins:
        raise ValueError("a comma-separated list of origins, or *")
    return origins


def _networks(raw: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    networks = []
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError("a comma-separated list of IP addresses or CIDR networks") from None
    return tuple(networks)


def _setting(env: str, default: str, parse: Callable[[str], Any], meaning: str) -> Any:
    return dataclasses.field(metadata={"env": env, "default": default, "parse": parse,
                                       "meaning": meaning})


@dataclasses.dataclass(frozen=True, slots=True)
class SessionPolicy:
    """How long a session lives: absolutely, and unused; how often its idle clock is written."""

    lifetime: float
    idle_timeout: float
    touch_interval: float


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """The whole configuration; build it with `Settings.from_env()`."""

    database_url: str = _setting(
        "DATABASE_URL", "", _database_url,
        "PostgreSQL URL. Unset: `make run` and the tests start a private cluster under `.data/`.")
    pooler_url: str = _setting(
        "CHATSVC_POOLER_URL", "", _database_url,
        "PgBouncer URL (transaction pooling) for the request pool, which then uses no server-side "
        "prepared statements. The stream's `LISTEN` connection and `chatsvc migrate` keep "
        "`DATABASE_URL`, around the pooler. Unset: the pool connects to `DATABASE_URL`.")
    host: str = _setting("CHATSVC_HOST", "0.0.0.0", _text, "Address the public listener binds to.")  # noqa: S104
    port: int = _setting("CHATSVC_PORT", "8080", _integer(0, 65535), "Public API port.")
    admin_port: int = _setting(
        "CHATSVC_ADMIN_PORT", "8081", _integer(0, 65535),
        "Admin port: probes, metrics, debug. Never route it from the internet.")
    admin_host: str = _setting(
        "CHATSVC_ADMIN_HOST", "0.0.0.0", _text,  # noqa: S104 (kubelet and Prometheus use the pod address)
        "Address the admin listener binds to; `127.0.0.1` keeps it to the machine.")
    debug_endpoints: bool = _setting(
        "CHATSVC_DEBUG_ENDPOINTS", "false", _boolean,
        "Serve `/debug/*` (task dump, profiler, memory tracing) on the admin listener.")
    h2c: bool = _setting("CHATSVC_H2C", "false", _boolean,
                         "Serve cleartext HTTP/2 (h2c upgrade and prior knowledge) too.")
    workers: int = _setting("CHATSVC_WORKERS", "1", _integer(1, 256),
                            "Worker processes sharing the listening sockets.")
    log_level: str = _setting("CHATSVC_LOG_LEVEL", "info",
                              _choice("debug", "info", "warning", "error"), "Log level.")
    access_log: bool = _setting("CHATSVC_ACCESS_LOG", "true", _boolean,
                                "One JSON line per request.")
    db_pool_min: int = _setting("CHATSVC_DB_POOL_MIN", "2", _integer(0, 1000),
                                "Connections each process keeps open.")
    db_pool_max: int = _setting("CHATSVC_DB_POOL_MAX", "10", _integer(1, 1000),
                                "Most connections each process opens.")
    db_timeout: float = _setting(
        "CHATSVC_DB_TIMEOUT", "2", _number(0.05, 120),
        "Seconds to wait for a connection or a statement before answering 503.")
    health_interval: float = _setting(
        "CHATSVC_HEALTH_INTERVAL", "2", _number(0.05, 300),
        "Seconds between background database health checks behind `/check`, and between each "
        "stream listener's periodic looks: a message no chatsvc process announced (written with "
        "psql or by the importer) reaches streams within two of these.")
    metrics_flush_interval: float = _setting(
        "CHATSVC_METRICS_FLUSH_INTERVAL", "1", _number(0.01, 60),
        "Seconds between each process's writes of its request counts, latencies and in-flight "
        "gauge to the metrics: with several workers a scrape sees the other workers' requests "
        "at most this late (the answering worker's at once).")
    max_body_bytes: int = _setting("CHATSVC_MAX_BODY_BYTES", "65536", _integer(64, 64 << 20),
                                   "Largest request body; larger is 413.")
    max_header_bytes: int = _setting(
        "CHATSVC_MAX_HEADER_BYTES", "16384", _integer(1024, 1 << 20),
        "Largest request line plus headers; larger closes the connection with 431/400.")
    max_headers: int = _setting("CHATSVC_MAX_HEADERS", "100", _integer(8, 10_000),
                                "Most request headers; more is 431.")
    keep_alive_timeout: float = _setting(
        "CHATSVC_KEEP_ALIVE_TIMEOUT", "5", _number(0.1, 3600),
        "Seconds an idle connection stays open; also the deadline for a request's headers.")
    read_timeout: float = _setting(
        "CHATSVC_READ_TIMEOUT", "10", _number(1, 3600),
        "Seconds a request body may take to arrive; slower is 408.")
    max_text_chars: int = _setting("CHATSVC_MAX_TEXT_CHARS", "10000", _integer(1, 1_000_000),
                                   "Longest text message, in characters.")
    session_lifetime: float = _setting(
        "CHATSVC_SESSION_LIFETIME", "43200", _number(1, 366 * 86400),
        "Absolute session lifetime, seconds.")
    session_idle_timeout: float = _setting(
        "CHATSVC_SESSION_IDLE_TIMEOUT", "10800", _number(1, 366 * 86400),
        "A session unused this many seconds expires.")
    session_touch_interval: float = _setting(
        "CHATSVC_SESSION_TOUCH_INTERVAL", "60", _number(0, 3600),
        "The idle clock is written at most this often per session, seconds.")
    session_cleanup_interval: float = _setting(
        "CHATSVC_SESSION_CLEANUP_INTERVAL", "300", _number(0.05, 86400),
        "Seconds between deletions of expired sessions (one replica at a time, in batches).")
    session_cleanup_batch: int = _setting(
        "CHATSVC_SESSION_CLEANUP_BATCH", "1000", _integer(1, 100_000),
        "Expired sessions deleted per statement.")
    session_user_agent_chars: int = _setting(
        "CHATSVC_SESSION_USER_AGENT_CHARS", "256", _integer(0, 8192),
        "The User-Agent recorded with a session (`GET /sessions`) is cut to this many characters.")
    sessions_listed: int = _setting(
        "CHATSVC_SESSIONS_LISTED", "100", _integer(1, 10_000),
        "`GET /sessions` lists at most this many sessions: the presented one and the newest others.")
    argon2_time_cost: int = _setting("CHATSVC_ARGON2_TIME_COST", "2", _integer(1, 100),
                                     "argon2id iterations.")
    argon2_memory_kib: int = _setting("CHATSVC_ARGON2_MEMORY_KIB", "19456",
                                      _integer(8, 4 << 20), "argon2id memory, KiB.")
    argon2_parallelism: int = _setting("CHATSVC_ARGON2_PARALLELISM", "1", _integer(1, 64),
                                       "argon2id lanes.")
    hash_queue: int = _setting(
        "CHATSVC_HASH_QUEUE", "32", _integer(0, 100_000),
        "Password hashes that may wait for a thread; past it a login, sign-up or password change is "
        "503 with `Retry-After` at once.")
    hash_threads: int = _setting(
        "CHATSVC_HASH_THREADS", "2", _integer(1, 256),
        "Threads hashing passwords, so logins never stall the event loop.")
    web_client: bool = _setting(
        "CHATSVC_WEB_CLIENT", "true", _boolean,
        "Serve the browser client at `/`; false: a short page linking the API description instead.")
    cors_origins: tuple[str, ...] = _setting("CHATSVC_CORS_ORIGINS", "*", _origins,
                                             "Allowed CORS origins, comma-separated.")
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = _setting(
        "CHATSVC_TRUSTED_PROXIES", "", _networks,
        "Addresses/CIDRs whose `X-Forwarded-For` is believed.")
    rate: float = _setting("CHATSVC_RATE", "500", _number(0, 1e9),
                           "Requests/s per client, average; 0 turns the limiter off.")
    burst: int = _setting("CHATSVC_BURST", "100", _integer(1, 1_000_000),
                          "Requests per client in a burst.")
    rate_limit_max_clients: int = _setting(
        "CHATSVC_RATE_LIMIT_MAX_CLIENTS", "100000", _integer(100, 100_000_000),
        "Most clients with a rate-limit bucket in memory; the least recently seen go first.")
    auth_rate: float = _setting(
        "CHATSVC_AUTH_RATE", "10", _number(0, 1e9),
        "Logins and sign-ups per minute per address; 0 turns it off.")
    auth_burst: int = _setting("CHATSVC_AUTH_BURST", "10", _integer(1, 1_000_000),
                               "Logins and sign-ups in a burst.")
    login_failures: int = _setting(
        "CHATSVC_LOGIN_FAILURES", "10", _integer(1, 1_000_000),
        "Failed logins of one account within the window after which its logins are 429 "
        "(every replica counts together).")
    login_failure_window: float = _setting(
        "CHATSVC_LOGIN_FAILURE_WINDOW", "900", _number(1, 86400),
        "Seconds over which failed logins of one account are counted.")
    drain_delay: float = _setting(
        "CHATSVC_DRAIN_DELAY", "5", _number(0, 3600),
        "Seconds of serving with `/check` at 503 after SIGTERM.")
    shutdown_timeout: float = _setting(
        "CHATSVC_SHUTDOWN_TIMEOUT", "20", _number(0, 3600),
        "Seconds in-flight requests get to finish once listeners close.")
    stream_heartbeat: float = _setting(
        "CHATSVC_STREAM_HEARTBEAT", "15", _number(0.05, 3600),
        "Seconds of silence after which an event stream sends a `: keep-alive` comment.")
    stream_buffer: int = _setting(
        "CHATSVC_STREAM_BUFFER", "64", _integer(1, 100_000),
        "Events an event stream holds for a slow client; a client that leaves it full for a second "
        "is disconnected (it resumes with `Last-Event-ID`).")
    stream_max_per_user: int = _setting(
        "CHATSVC_STREAM_MAX_PER_USER", "5", _integer(1, 10_000),
        "Event streams one user may hold open on each process; more is 429.")
    stream_max_per_address: int = _setting(
        "CHATSVC_STREAM_MAX_PER_ADDRESS", "20", _integer(1, 1_000_000),
        "Event streams one client address (an IPv6 /64) may hold open on each process; more is 429.")
    stream_max_per_process: int = _setting(
        "CHATSVC_STREAM_MAX_PER_PROCESS", "1000", _integer(1, 1_000_000),
        "Event streams each process holds open at most; more is 429.")
    stream_announce_window: float = _setting(
        "CHATSVC_STREAM_ANNOUNCE_WINDOW", "0", _number(0, 1),
        "Seconds a process waits after announcing new messages (one `NOTIFY` statement, a "
        "transaction of its own) before it announces the next ones: a larger window gathers more "
        "messages per statement, saving database CPU at high send rates, and delays live "
        "delivery by up to that much (BENCHMARKS.md measures both). 0: announce as soon as the "
        "previous announcement is done.")
    stream_session_check: float = _setting(
        "CHATSVC_STREAM_SESSION_CHECK", "60", _number(0.05, 86400),
        "Seconds between checks that an event stream's session is still valid; a stream whose "
        "session was revoked or expired ends.")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate every setting, reporting all bad values at once."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        problems: list[str] = []
        for field in dataclasses.fields(cls):
            meta = field.metadata
            raw = environ.get(meta["env"], meta["default"])
            try:
                values[field.name] = meta["parse"](raw)
            except ValueError as error:
                problems.append(f"{meta['env']}={raw!r}: expected {error}")
        if not problems and values["db_pool_min"] > values["db_pool_max"]:
            problems.append("CHATSVC_DB_POOL_MIN must not exceed CHATSVC_DB_POOL_MAX")
        if problems:
            raise ConfigError("invalid configuration: " + "; ".join(problems))
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        """A copy with some settings changed (tests, benchmarks)."""
        return dataclasses.replace(self, **changes)


def describe() -> list[tuple[str, str, str]]:
    """(name, default, meaning) for every setting, in declaration order, for the README."""
    return [(f.metadata["env"], f.metadata["default"], f.metadata["meaning"])
            for f in dataclasses.fields(Settings)]
