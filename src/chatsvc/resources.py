"""The long-lived parts a process shares between its apps: settings, pool, hasher, health, fan-out."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from chatsvc.config import Settings
from chatsvc.db import BoundedPool, create_pool
from chatsvc.fanout import Fanout
from chatsvc.health import Health
from chatsvc.passwords import Passwords


@dataclass(slots=True)
class Resources:
    settings: Settings
    pool: BoundedPool
    passwords: Passwords
    health: Health
    fanout: Fanout


@contextlib.asynccontextmanager
async def open_resources(settings: Settings) -> AsyncIterator[Resources]:
    """Open the pool, start the health watcher and the stream listener; close them on exit."""
    pool = await create_pool(settings)
    passwords = Passwords(settings)
    health = Health()
    await health.check_database(pool, settings.db_timeout)
    watcher = asyncio.create_task(
        health.watch_database(pool, settings.health_interval, settings.db_timeout),
        name="health-watcher")
    fanout = Fanout(settings)
    await fanout.start()
    try:
        yield Resources(settings, pool, passwords, health, fanout)
    finally:
        await fanout.close()
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        passwords.close()
        await pool.close()
