"""Header limits: too many request headers or header bytes is 431, before any work."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from chatsvc.errors import ApiError, ErrorCode, error_response
from chatsvc.middleware.trailing_slash import strip_trailing_slash


class HeaderLimits:
    """Refuse a request with too many headers or header bytes (431), before any work.

    The server bounds the head only while it is incomplete; one that arrives in a single read
    is whole before it is measured, so the bytes are counted here too.

    With `strip_trailing_slash`, a request it lets through then has its trailing slash removed
    (trailing_slash.py): the public app's two looks at the request head in one layer.
    """

    def __init__(self, app: ASGIApp, *, max_headers: int, max_header_bytes: int,
                 strip_trailing_slash: bool = False) -> None:
        self.app = app
        self.max_headers = max_headers
        self.max_header_bytes = max_header_bytes
        self.strip_trailing_slash = strip_trailing_slash

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = scope["headers"]
            error = None
            if len(headers) > self.max_headers:
                error = f"a request may carry at most {self.max_headers} headers"
            elif _head_bytes(scope) > self.max_header_bytes:
                error = f"the request line and headers exceed {self.max_header_bytes} bytes"
            if error is not None:
                await error_response(ApiError(ErrorCode.HEADERS_TOO_LARGE, error))(scope, receive, send)
                return
            if self.strip_trailing_slash:
                strip_trailing_slash(scope)
        await self.app(scope, receive, send)


def _head_bytes(scope: Scope) -> int:
    """The size of the request line and headers as they were sent, near enough."""
    line = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"") + 16
    return line + sum(len(name) + len(value) + 4 for name, value in scope["headers"])
