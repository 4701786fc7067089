"""The root page and the public readiness probe."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response

from chatsvc.errors import error_response, unavailable

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


async def root(request: Request) -> Response:
    return HTMLResponse(ROOT_PAGE)


async def check(request: Request) -> Response:
    """`ok` while the database answers and the process is not draining, as the original."""
    health = request.app.state.health
    if health.ready:
        return PlainTextResponse("ok")
    return error_response(unavailable(f"not ready: {health.reason}"))
