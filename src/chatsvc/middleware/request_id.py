"""Request ids: echo a sane `X-Request-ID` or make one, on every response of both listeners."""

from __future__ import annotations

import re
import secrets

from starlette.types import Message, Receive, Scope, Send

from chatsvc.middleware.base import HttpMiddleware

_SANE_REQUEST_ID = re.compile(rb"[\x21-\x7e]{1,128}")


class RequestId(HttpMiddleware):
    """Echo a sane `X-Request-ID`, or make one, and put it on every response."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
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
