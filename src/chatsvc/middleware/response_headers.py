"""What every answer of a listener carries: its `X-Request-ID` and the security headers.

One layer for both (request_id.py, security_headers.py say what each adds): each was a
middleware of its own, with a closure per request and a copy of the header list per answer.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatsvc.middleware.base import HttpMiddleware
from chatsvc.middleware.request_id import assign_request_id, with_request_id
from chatsvc.middleware.security_headers import is_private, secured


class ResponseHeaders(HttpMiddleware):
    """`X-Request-ID` (echoed when sane, else made) and the security headers on every answer."""

    def __init__(self, app: ASGIApp, *, cors_answers_options: bool = False) -> None:
        super().__init__(app)
        self.cors_answers_options = cors_answers_options

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = assign_request_id(scope)
        private = is_private(scope)
        cors_answers_options = self.cors_answers_options

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = with_request_id(secured(message, private, cors_answers_options),
                                                     request_id)
            await send(message)

        await self.app(scope, receive, send_with_headers)
