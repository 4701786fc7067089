"""The pages people open: the chat client at `/`, the API viewer at `/docs`, and their assets."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from chatsvc.errors import ApiError, ErrorCode
from chatsvc.openapi import Operation, Reply, documented
from chatsvc.resources import resources_of
from chatsvc.web.assets import ASSET_MEDIA_TYPES, asset_table

# No inline script or style and no eval anywhere; the page may not be framed. Images of messages
# come from wherever their senders put them; videos play only from the privacy-enhanced hosts.
CLIENT_POLICY = "; ".join([
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' https: http:",
    "frame-src https://www.youtube-nocookie.com https://player.vimeo.com",
    "connect-src 'self'",
    "base-uri 'none'",
    # Forms are sent by the scripts; should one ever be submitted natively, nothing leaves.
    "form-action 'none'",
    "frame-ancestors 'none'",
])
# Swagger UI draws its icons from data: URLs in its stylesheet.
VIEWER_POLICY = "; ".join([
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
])
# The page without the client (`CHATSVC_WEB_CLIENT=false`) loads nothing at all.
PLAIN_POLICY = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

_HTML = {"type": "string"}


@documented(Operation(
    "The web client",
    {200: Reply("The browser chat client; with `CHATSVC_WEB_CLIENT=false`, a short page linking "
                "this API description.", _HTML, "text/html"),
     304: Reply("Unchanged since the `ETag` in `If-None-Match`.")},
))
async def root(request: Request) -> Response:
    """The browser chat client (or, with the client off, a short page linking the API description)."""
    if resources_of(request).settings.web_client:
        return asset_table().page(request, "index.html", CLIENT_POLICY)
    return asset_table().page(request, "about.html", PLAIN_POLICY)


@documented(Operation(
    "The API description, for people",
    {200: Reply("`/openapi.json` rendered by the packaged Swagger UI.", _HTML, "text/html"),
     304: Reply("Unchanged since the `ETag` in `If-None-Match`.")},
))
async def docs(request: Request) -> Response:
    """This API's description rendered for people, by a viewer shipped in the package."""
    return asset_table().page(request, "docs.html", VIEWER_POLICY)


@documented(Operation(
    "A file of the web client or the API viewer",
    {200: Reply("The file; cached for a year when `version` is the current one.", {"type": "string"},
                ASSET_MEDIA_TYPES),
     304: Reply("Unchanged since the `ETag` in `If-None-Match`."),
     404: "No such file."},
))
async def static_file(request: Request) -> Response:
    """A script, stylesheet or image of the web client or the API viewer, under a versioned URL."""
    params = request.path_params
    response = asset_table().asset(request, params["version"], params["name"])
    if response is None:
        raise ApiError(ErrorCode.NOT_FOUND, "no such file")
    return response
