"""The asyncpg pool: creation, per-connection settings, and what counts as the database being down."""

from __future__ import annotations

import asyncio

import asyncpg

from chatsvc.config import Settings

# Raised when the database cannot be reached or answered too slowly: the client
# gets 503 `unavailable`, never a 500, and can retry.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.QueryCanceledError,
    asyncpg.exceptions.TooManyConnectionsError,
)


async def create_pool(settings: Settings) -> asyncpg.Pool:
    """A pool whose every wait is bounded by `CHATSVC_DB_TIMEOUT`."""
    return await asyncpg.create_pool(
        settings.database_url,
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
        timeout=settings.db_timeout,
        command_timeout=settings.db_timeout,
        server_settings={
            "application_name": "chatsvc",
            # The server gives up too, so a statement cut off by the client does
            # not keep running and holding locks.
            "statement_timeout": str(int(settings.db_timeout * 1000)),
            "idle_in_transaction_session_timeout": str(int(settings.db_timeout * 5000)),
            "timezone": "UTC",
        },
    )
