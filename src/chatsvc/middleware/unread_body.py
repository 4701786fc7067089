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
