"""Readiness kept in memory by a background task, so a probe never costs a database round trip."""

from __future__ import annotations

import asyncio
import logging

from chatsvc import metrics
from chatsvc.db import UNAVAILABLE_ERRORS, BoundedPool

log = logging.getLogger("chatsvc.health")  # the logger name operators already filter on


class Readiness:
    """Whether this process should receive traffic, and if not, why."""

    def __init__(self) -> None:
        self.database_ok = False
        self._draining = asyncio.Event()

    @property
    def draining(self) -> bool:
        return self._draining.is_set()

    @draining.setter
    def draining(self, value: bool) -> None:
        # An event, so that event streams end the moment the drain starts (docs/API.md, Shutdown).
        if value:
            self._draining.set()
        else:
            self._draining.clear()
        self.publish()

    async def wait_draining(self) -> None:
        """Return once the drain has started."""
        await self._draining.wait()

    @property
    def ready(self) -> bool:
        return self.database_ok and not self.draining

    @property
    def reason(self) -> str | None:
        """Why the process is not ready: `draining` wins over `database`."""
        if self.draining:
            return "draining"
        if not self.database_ok:
            return "database"
        return None

    async def check_database(self, pool: BoundedPool, timeout: float) -> None:
        """One probe of the database, recording the result and logging each change."""
        try:
            async with pool.acquire(timeout=timeout) as connection:
                await connection.fetchval("SELECT 1", timeout=timeout)
            ok = True
        except UNAVAILABLE_ERRORS as error:
            ok = False
            if self.database_ok:
                log.warning("database unreachable", extra={"error": type(error).__name__})
        if ok and not self.database_ok:
            log.info("database reachable")
        self.database_ok = ok
        self.publish()

    def publish(self) -> None:
        """Show the state as metrics: a pager watches them, not the probes kubelet sends."""
        metrics.READY.set(self.ready)
        metrics.DATABASE_UP.set(self.database_ok)

    async def watch_database(self, pool: BoundedPool, interval: float, timeout: float) -> None:
        """Probe the database every `interval` seconds until cancelled."""
        while True:
            await self.check_database(pool, min(timeout, interval))
            metrics.POOL_SIZE.set(pool.get_size())
            metrics.POOL_IDLE.set(pool.get_idle_size())
            metrics.POOL_MAX.set(pool.get_max_size())
            await asyncio.sleep(interval)
