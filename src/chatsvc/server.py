"""Serving: hypercorn on the public and admin listeners, signals, and the drain sequence."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal

from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config as HypercornConfig

from chatsvc.admin import build_admin_app
from chatsvc.app import build_app
from chatsvc.config import Settings
from chatsvc.resources import open_resources

log = logging.getLogger("chatsvc.server")

DRAIN_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Drain:
    """The shutdown sequence of API.md, started by the first signal; a second exits at once."""

    def __init__(self, settings: Settings, health) -> None:
        self._settings = settings
        self._health = health
        self._task: asyncio.Task | None = None
        self.listeners_closed = asyncio.Event()

    def on_signal(self, signum: int) -> None:
        if self._task is not None:
            log.warning("second signal: exiting at once", extra={"signal": signum})
            os._exit(128 + signum)
        log.info("draining", extra={"signal": signum, "drain_delay": self._settings.drain_delay})
        self._task = asyncio.get_running_loop().create_task(self._drain(), name="drain")

    async def _drain(self) -> None:
        # Readiness fails at once; serving goes on while load balancers notice.
        self._health.draining = True
        await asyncio.sleep(self._settings.drain_delay)
        log.info("closing listeners", extra={"shutdown_timeout": self._settings.shutdown_timeout})
        self.listeners_closed.set()


def hypercorn_config(settings: Settings, port: int) -> HypercornConfig:
    config = HypercornConfig()
    config.bind = [f"{settings.host}:{port}"]
    config.graceful_timeout = settings.shutdown_timeout
    config.accesslog = None
    config.errorlog = logging.getLogger("chatsvc.hypercorn")
    return config


async def serve(settings: Settings) -> None:
    """Serve both listeners until a signal has drained them."""
    async with open_resources(settings) as resources:
        drain = Drain(settings, resources.health)
        loop = asyncio.get_running_loop()
        for signum in DRAIN_SIGNALS:
            loop.add_signal_handler(signum, drain.on_signal, signum)
        public = hypercorn_serve(build_app(resources), hypercorn_config(settings, settings.port),
                                 shutdown_trigger=drain.listeners_closed.wait)
        admin = hypercorn_serve(build_admin_app(resources.health),
                                hypercorn_config(settings, settings.admin_port),
                                shutdown_trigger=drain.listeners_closed.wait)
        log.info("serving", extra={"port": settings.port, "admin_port": settings.admin_port})
        await asyncio.gather(public, admin)
        for signum in DRAIN_SIGNALS:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signum)
    log.info("stopped")
