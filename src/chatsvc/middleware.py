"""Pure ASGI middleware: request ids, the last-resort 500, header count, trailing slashes."""

from __future__ import annotations

import logging
import re
import secrets

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatsvc.errors import ApiError, error_response

log = logging.getLogger("chatsvc.errors")

_SANE_REQUEST_ID = re.compile(rb"[\x21-\x7e]{1,128}")


class RequestId:
    """Echo a sane `X-Request-ID`, or make one, and put it on every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = next((value for name, value in scope["headers"]
                           if name == b"x-request-id"), None)
        if request_id is None or not _SANE_REQUEST_ID.fullmatch(request_id):
            request_id = secrets.token_hex(16).encode()
        scope.setdefault("state", {})["request_id"] = request_id.decode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(n, v) for n, v in message.get("headers", ()) if n != b"x-request-id"]
                headers.append((b"x-request-id", request_id))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_id)


class InternalErrors:
    """An unexpected exception becomes a logged 500 in the envelope, inside the request-id layer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        response_started = False

        async def send_tracked(message: Message) -> None:
            nonlocal response_started
            response_started |= message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_tracked)
        except Exception:
            log.exception("unhandled error", extra={"request_id": scope["state"].get("request_id")})
            if response_started:
                raise  # too late for an envelope: the server drops the connection
            await error_response(ApiError(500, "internal", "internal server error"))(scope, receive, send)


class HeaderCount:
    """Refuse a request with more headers than `CHATSVC_MAX_HEADERS` (431), before any work."""

    def __init__(self, app: ASGIApp, *, max_headers: int) -> None:
        self.app = app
        self.max_headers = max_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and len(scope["headers"]) > self.max_headers:
            error = ApiError(431, "headers_too_large",
                             f"a request may carry at most {self.max_headers} headers")
            await error_response(error)(scope, receive, send)
            return
        await self.app(scope, receive, send)


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
