"""The request body an early answer left unread, drained while that answer goes out."""

from __future__ import annotations

import asyncio

from starlette.types import Message, Receive, Scope, Send

from chatsvc.middleware.base import HttpMiddleware


class DrainUnreadBody(HttpMiddleware):
    """Read and drop an unread request body while the final response is sent.

    An early answer (401, 413, 429) leaves body chunks queued for the app; hypercorn 0.18 then
    waits forever to queue the disconnect behind them, and the connection is neither read nor
    closed. Draining while the last message goes out lets it close as `Connection: close` says.
    """

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if _has_no_body(scope):
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


def _has_no_body(scope: Scope) -> bool:
    """An HTTP/1 request with neither `Content-Length` nor `Transfer-Encoding` has no body
    (RFC 9112 6.3), and one with `Content-Length: 0` an empty one: the server queues only the end
    of the request, which never fills its queue, so there is nothing to drain. (An HTTP/2 request
    may send data without declaring a length: it is always drained.)"""
    if not scope.get("http_version", "1.1").startswith("1"):
        return False
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return False
    return True


def _last_request_message(message: Message) -> bool:
    return message["type"] == "http.disconnect" or not message.get("more_body", False)
