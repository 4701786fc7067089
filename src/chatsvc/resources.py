"""The long-lived parts a process shares between its apps, and the one way a handler reaches them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from starlette.requests import HTTPConnection

from chatsvc.config import SessionPolicy, Settings
from chatsvc.db import BoundedPool, create_pool
from chatsvc.fanout import Fanout
from chatsvc.middleware.ratelimit import KnownTokens
from chatsvc.passwords import Passwords
from chatsvc.readiness import Readiness
from chatsvc.session_cleanup import clean_up_sessions_forever


@dataclass(slots=True)
class Resources:
    """Settings, pool, hasher, readiness, fan-out, and the tokens the rate limiter may key by."""

    settings: Settings
    pool: BoundedPool
    passwords: Passwords
    readiness: Readiness
    fanout: Fanout
    known_tokens: KnownTokens = field(default_factory=KnownTokens)
    # Derived from `settings` once, so that every statement that checks a token gets one value.
    session_policy: SessionPolicy = field(init=False)

    def __post_init__(self) -> None:
        settings = self.settings
        self.session_policy = SessionPolicy(settings.session_lifetime, settings.session_idle_timeout,
                                            settings.session_touch_interval)


def resources_of(connection: HTTPConnection) -> Resources:
    """The resources of the app serving `connection` (attached by `build_app`/`build_admin_app`)."""
    resources: Resources = connection.app.state.resources
    return resources


@contextlib.asynccontextmanager
async def open_resources(settings: Settings) -> AsyncIterator[Resources]:
    """Open the pool, start the readiness watcher and the stream listener; close them on exit."""
    pool = await create_pool(settings)
    passwords = Passwords(settings)
    readiness = Readiness()
    await readiness.check_database(pool, settings.db_timeout)
    watcher = asyncio.create_task(
        readiness.watch_database(pool, settings.health_interval, settings.db_timeout),
        name="health-watcher")
    fanout = Fanout(settings)
    await fanout.start()
    cleanup = asyncio.create_task(
        clean_up_sessions_forever(pool, settings.session_cleanup_interval, settings.session_cleanup_batch,
                                  settings.login_failure_window),
        name="session-cleanup")
    try:
        yield Resources(settings, pool, passwords, readiness, fanout)
    finally:
        await fanout.close()
        for task in (watcher, cleanup):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        passwords.close()
        await pool.close()
