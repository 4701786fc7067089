"""Starlette's CORS, with a refused preflight answered in the error envelope like every answer."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from chatsvc.errors import ApiError, ErrorCode, error_response


class Cors(CORSMiddleware):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or any(name == b"origin" for name, _ in scope["headers"]):
            await super().__call__(scope, receive, send)
            return

        # No Origin: not a CORS request (most are not: curl, apps, servers). Starlette's only
        # change to the answer is `Vary: Origin`; added here without its per-request Headers,
        # partial and MutableHeaders.
        async def send_with_vary(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = vary_origin(message.get("headers", ()))
            await send(message)

        await self.app(scope, receive, send_with_vary)

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        # Starlette says which part was refused in plain text ("Disallowed CORS origin, method").
        reason = bytes(response.body).decode("utf-8", "replace").strip()
        headers = {name: value for name, value in response.headers.items()
                   if name.lower() not in ("content-length", "content-type")}
        return error_response(ApiError(ErrorCode.INVALID_REQUEST,
                                       f"CORS preflight refused: {reason[:200]}", headers))


def vary_origin(headers: list[tuple[bytes, bytes]] | tuple[()]) -> list[tuple[bytes, bytes]]:
    """`headers` with `Origin` added to `Vary` as Starlette's CORS sets it: the values of every
    `Vary` joined into the first one, the others dropped, appended when there was none."""
    varies = [value for name, value in headers if name == b"vary"]
    joined = b", ".join([*varies, b"Origin"])
    if not varies:
        return [*headers, (b"vary", joined)]
    result: list[tuple[bytes, bytes]] = []
    placed = False
    for name, value in headers:
        if name != b"vary":
            result.append((name, value))
        elif not placed:
            result.append((b"vary", joined))
            placed = True
    return result
