"""The public app as a plain ASGI callable, for other servers: `uvicorn chatsvc.asgi:app`.

`chatsvc serve` remains the way to run chatsvc: it adds the admin listener, worker
supervision and the drain of docs/API.md. Under another server, that server's own
shutdown applies and `/check` does not turn 503 before it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping

from starlette.types import ASGIApp, Receive, Scope, Send

from chatsvc.config import Settings


class LifespanApp:
    """Opens the pool and the hasher at lifespan startup, serves HTTP with them, closes them at shutdown."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = environ
        self._app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if self._app is None:
            raise RuntimeError("chatsvc.asgi: the server did not run the lifespan startup")
        await self._app(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        from chatsvc.app import build_app
        from chatsvc.logs import configure_logging
        from chatsvc.resources import open_resources

        await receive()  # lifespan.startup
        resources = contextlib.AsyncExitStack()
        try:
            settings = Settings.from_env(self._environ)
            if not settings.database_url:
                raise RuntimeError("DATABASE_URL is not set (expected a postgresql:// URL)")
            if not logging.getLogger().handlers:  # the server configured its own loggers only
                configure_logging(settings)
            self._app = build_app(await resources.enter_async_context(open_resources(settings)))
        except Exception as error:
            await resources.aclose()
            await send({"type": "lifespan.startup.failed", "message": f"chatsvc: {error}"})
            return
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        self._app = None
        await resources.aclose()
        await send({"type": "lifespan.shutdown.complete"})


app = LifespanApp()
