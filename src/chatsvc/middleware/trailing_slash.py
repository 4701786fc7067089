"""Trailing slashes: `/messages/` is `/messages`, as the original answered (no redirect)."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send


class TrailingSlash:
    """`/messages/` is `/messages`, answered in place as the original did (no redirect)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            strip_trailing_slash(scope)
        await self.app(scope, receive, send)


def strip_trailing_slash(scope: Scope) -> None:
    path = scope.get("path", "")
    if len(path) > 1 and path.endswith("/"):
        # In place: outer middleware reads the matched route from this same scope.
        scope["path"] = path.rstrip("/") or "/"
