"""The last resort: an exception no handler took becomes a logged 500 in the envelope."""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatsvc.errors import ApiError, ErrorCode, error_response

log = logging.getLogger("chatsvc.errors")


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
            await error_response(ApiError(ErrorCode.INTERNAL, "internal server error"))(scope, receive, send)
