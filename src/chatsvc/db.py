"""The asyncpg pool: creation, per-connection settings, and what counts as the database being down."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg

from chatsvc.config import Settings

# Raised when the database cannot be reached or answered too slowly: the client
# gets 503 `unavailable`, never a 500, and can retry.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.InterfaceError,
    # A connection whose statement the server ended (a fast shutdown's FATAL) can go back to the
    # pool before asyncpg has seen it close: the next statement on it fails this way.
    asyncpg.exceptions.InternalClientError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.QueryCanceledError,
    asyncpg.exceptions.TooManyConnectionsError,
    # A node that stopped being the primary: in the moment before its restart closes our
    # connections (PostgreSQL cannot demote without one), a write there fails this way.
    asyncpg.exceptions.ReadOnlySQLTransactionError,
)
# Opening a connection failed before anything was sent: refused (no server listens), the server
# is starting or stopping, no host of a multi-host URL is a primary (yet), or PgBouncer turned the
# login away because it cannot reach a server at the moment ("server login has been failing").
NO_SERVER_YET_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TargetServerAttributeNotMatched,
    asyncpg.exceptions.ProtocolViolationError,
)
CONNECT_RETRY_MIN_SECONDS = 0.02
CONNECT_RETRY_MAX_SECONDS = 0.25
# asyncpg's default: every query of the service fits.
DEFAULT_STATEMENT_CACHE_SIZE = 100

if TYPE_CHECKING:  # asyncpg's classes are generic in its stubs only
    # A pooled connection, as `BoundedPool.acquire()` lends it.
    Connection: TypeAlias = asyncpg.pool.PoolConnectionProxy[asyncpg.Record]


class BoundedPool:
    """The asyncpg pool, with the wait for a free connection bounded like every other wait.

    asyncpg's own `Pool.fetch` and friends wait for a connection without a limit, so when slow
    statements hold every connection, requests queue far past `CHATSVC_DB_TIMEOUT`.
    """

    def __init__(self, pool: asyncpg.Pool, acquire_timeout: float) -> None:
        self._pool = pool
        self._acquire_timeout = acquire_timeout

    def acquire(self, *, timeout: float | None = None) -> _Acquire:
        return _Acquire(self._pool, self._acquire_timeout if timeout is None else timeout)

    async def execute(self, query: str, *args: Any) -> str:
        async with self.acquire() as connection:
            return await connection.execute(query, *args)

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        async with self.acquire() as connection:
            return await connection.fetch(query, *args)

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        async with self.acquire() as connection:
            return await connection.fetchrow(query, *args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        async with self.acquire() as connection:
            return await connection.fetchval(query, *args)

    def get_size(self) -> int:
        return self._pool.get_size()

    def get_idle_size(self) -> int:
        return self._pool.get_idle_size()

    def get_max_size(self) -> int:
        return self._pool.get_max_size()

    async def close(self) -> None:
        await self._pool.close()


class _Acquire:
    """`async with pool.acquire()`: waits, within its timeout, for a database that accepts connections.

    During a failover or switchover no node accepts writes for a second or two: the old primary
    refuses connections, the one being promoted is still read-only. Nothing has been sent then, so
    trying again is safe, and a request that arrives in that gap is answered late instead of 503.
    """

    __slots__ = ("_connection", "_pool", "_timeout")

    def __init__(self, pool: asyncpg.Pool, timeout: float) -> None:
        self._pool = pool
        self._timeout = timeout
        self._connection: Connection | None = None

    async def __aenter__(self) -> Connection:
        if self._pool.get_idle_size():
            # An idle connection is handed over without waiting, so the bounded wait (a timer
            # and a wrapper per request, 3 % of a request's instructions) is only paid when
            # every connection is busy.
            self._connection = await self._pool.acquire()
            return self._connection
        deadline = time.monotonic() + self._timeout
        delay = CONNECT_RETRY_MIN_SECONDS
        while True:
            try:
                self._connection = await self._pool.acquire(timeout=max(deadline - time.monotonic(), 0))
                return self._connection
            except TimeoutError:
                raise  # the whole wait is used up (TimeoutError is an OSError)
            except NO_SERVER_YET_ERRORS:
                if time.monotonic() + delay >= deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(2 * delay, CONNECT_RETRY_MAX_SECONDS)

    async def __aexit__(self, *exc_info: object) -> None:
        if self._connection is not None:
            await self._pool.release(self._connection)


async def create_pool(settings: Settings) -> BoundedPool:
    """A pool whose every wait is bounded by `CHATSVC_DB_TIMEOUT`, through the pooler if one is set."""
    session = {"application_name": "chatsvc", "timezone": "UTC"}
    if not settings.pooler_url:
        # The server gives up too, so a statement cut off by the client does not keep running and
        # holding locks. PgBouncer refuses these at startup: behind it, its connect_query sets them.
        session["statement_timeout"] = str(int(settings.db_timeout * 1000))
        session["idle_in_transaction_session_timeout"] = str(int(settings.db_timeout * 5000))
    pool = await asyncpg.create_pool(
        settings.pooler_url or settings.database_url,
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
        timeout=settings.db_timeout,
        command_timeout=settings.db_timeout,
        # In transaction pooling, consecutive transactions may run on different server connections,
        # where a statement prepared on another one does not exist: prepare unnamed, every time.
        statement_cache_size=0 if settings.pooler_url else DEFAULT_STATEMENT_CACHE_SIZE,
        reset=_keep_session,
        server_settings=session,
    )
    return BoundedPool(pool, settings.db_timeout)


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Release a connection without asyncpg's reset query, which costs a round trip per request.

    asyncpg still rolls back an open transaction and drops Python-side listeners first. Nothing
    else a request does outlives it on a pooled connection: no SET, LISTEN, cursor or advisory
    lock (the stream listener and the migrations use connections of their own).
    """
