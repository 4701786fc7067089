"""The last resort: an exception no handler took becomes a logged 500 in the envelope."""

from __future__ import annotations

import logging

from starlette.types import Message, Receive, Scope, Send

from chatsvc.errors import ApiError, ErrorCode, error_response
from chatsvc.middleware.base import HttpMiddleware

log = logging.getLogger("chatsvc.errors")


class InternalErrors(HttpMiddleware):
    """An unexpected exception becomes a logged 500 in the envelope, inside the request-id layer."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
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
