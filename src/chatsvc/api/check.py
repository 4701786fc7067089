"""`GET /check`: the public readiness probe, as the original answered it."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from chatsvc.errors import error_response, unavailable
from chatsvc.openapi import Operation, Reply, documented
from chatsvc.resources import resources_of


@documented(Operation(
    "Readiness",
    {200: Reply("Ready: the body is exactly `ok`.", {"type": "string", "const": "ok"}, "text/plain"),
     503: "Not ready: the database does not answer, or the process is draining."},
    description="Reads a health state refreshed in the background: no database round trip per probe.",
))
async def check(request: Request) -> Response:
    """`ok` while the database answers and the process is not draining, as the original."""
    readiness = resources_of(request).readiness
    if readiness.ready:
        return PlainTextResponse("ok")
    return error_response(unavailable(f"not ready: {readiness.reason}"))
