"""The request as it arrives: header limits, the body left unread by an early answer, trailing slashes."""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatsvc.errors import ApiError, ErrorCode, error_response


class HeaderLimits:
    """Refuse a request with too many headers or header bytes (431), before any work.

    The server bounds the head only while it is incomplete; one that arrives in a single read
    is whole before it is measured, so the bytes are counted here too.
    """

    def __init__(self, app: ASGIApp, *, max_headers: int, max_header_bytes: int) -> None:
        self.app = app
        self.max_headers = max_headers
        self.max_header_bytes = max_header_bytes

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
        await self.app(scope, receive, send)


def _head_bytes(scope: Scope) -> int:
    """The size of the request line and headers as they were sent, near enough."""
    line = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"") + 16
    return line + sum(len(name) + len(value) + 4 for name, value in scope["headers"])


class DrainUnreadBody:
    """Read and drop an unread request body while the final response is sent.

    An early answer (401, 413, 429) leaves body chunks queued for the app; hypercorn 0.18 then
    waits forever to queue the disconnect behind them, and the connection is neither read nor
    closed. Draining while the last message goes out lets it close as `Connection: close` says.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_read = False

        async def tracking_receive() -> Message:
            nonlocal body_read
            message = await receive()
            body_read |= _last_request_message(message)
            return message

        async def discard_body() -> None:
            while not _last_request_message(await receive()):
                pass

        async def send_draining(message: Message) -> None:
            if body_read or message["type"] != "http.response.body" or message.get("more_body"):
                await send(message)
                return
            drainer = asyncio.create_task(discard_body())
            try:
                await send(message)
            finally:
                drainer.cancel()

        await self.app(scope, tracking_receive, send_draining)


def _last_request_message(message: Message) -> bool:
    return message["type"] == "http.disconnect" or not message.get("more_body", False)


class TrailingSlash:
    """`/messages/` is `/messages`, answered in place as the original did (no redirect)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and len(path) > 1 and path.endswith("/"):
            # In place: outer middleware reads the matched route from this same scope.
            scope["path"] = path.rstrip("/") or "/"
        await self.app(scope, receive, send)
