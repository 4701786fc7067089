"""The root page and the public readiness probe."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response

from chatsvc.errors import error_response, unavailable
from chatsvc.openapi import Operation, Reply, documented
from chatsvc.resources import resources_of

ROOT_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>chatsvc</title></head>
<body>
<h1>chatsvc</h1>
<p>A chat API: users, sessions and text, image and video messages.</p>
<ul>
<li><a href="/openapi.json">API description (OpenAPI)</a></li>
<li><a href="https://github.com/chatsvc/chatsvc#readme">README</a></li>
</ul>
</body>
</html>
"""


@documented(Operation(
    "A short HTML page naming the service",
    {200: Reply("Links to this API description and the README.", {"type": "string"}, "text/html")},
))
async def root(request: Request) -> Response:
    """A short HTML page naming the service and linking its API description and README."""
    return HTMLResponse(ROOT_PAGE)


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
