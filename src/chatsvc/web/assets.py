"""The files the browser loads, held in memory with their ETags under one versioned URL prefix.

Every asset URL carries the digest of all the files (`/static/<version>/app.js`), so a URL names
exactly one content and may be cached for a year; a new release changes the prefix. JavaScript
modules import each other by relative paths, which therefore stay inside one version.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response

# The browser client's own files.
CLIENT_FILES = resources.files("chatsvc.web") / "static"
# The API viewer of `/docs`: the two files of the packaged Swagger UI that its base layout needs
# (no top bar, so no field that would load another document from elsewhere).
VIEWER_FILES = ("swagger-ui-bundle.js", "swagger-ui.css")

MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
ASSET_MEDIA_TYPES = ("image/svg+xml", "text/css", "text/javascript")
# Pages are revalidated on every load (a cheap 304); the assets they name never change.
PAGE_CACHE = "no-cache"
ASSET_CACHE = "public, max-age=31536000, immutable"
# The placeholder in a page for the versioned prefix of the assets.
VERSION_PLACEHOLDER = b"{{static}}"


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


class AssetTable:
    """Named assets, their version prefix, and the HTML pages that refer to them."""

    def __init__(self, files: Mapping[str, bytes]) -> None:
        digest = hashlib.sha256()
        for name in sorted(files):
            digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
        self.version = digest.hexdigest()[:16]
        self.prefix = f"/static/{self.version}/"
        self.assets = {name: _asset(name, body) for name, body in files.items()
                       if not name.endswith(".html")}
        self.pages = {name: _asset(name, body.replace(VERSION_PLACEHOLDER, self.prefix.encode()))
                      for name, body in files.items() if name.endswith(".html")}

    def page(self, request: Request, name: str, policy: str) -> Response:
        """An HTML page, under `policy` (its Content-Security-Policy)."""
        return conditional(request, self.pages[name], PAGE_CACHE,
                           {"Content-Security-Policy": policy})

    def asset(self, request: Request, version: str, name: str) -> Response | None:
        """The asset `name`, or None when there is none; cached for a year when `version` is current.

        An old version's URL (a page loaded before a rolling update) gets today's file, revalidated
        each time, so that no browser keeps the newer body under the older name.
        """
        asset = self.assets.get(name)
        if asset is None:
            return None
        cache_control = ASSET_CACHE if version == self.version else PAGE_CACHE
        return conditional(request, asset, cache_control)


def conditional(request: Request, asset: Asset, cache_control: str,
                extra_headers: Mapping[str, str] | None = None) -> Response:
    """`asset`, or `304 Not Modified` when the request's `If-None-Match` names its ETag."""
    headers = {"ETag": asset.etag, "Cache-Control": cache_control, **(extra_headers or {})}
    if _matches(request.headers.get("if-none-match", ""), asset.etag):
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


@cache
def asset_table() -> AssetTable:
    """The packaged client's and viewer's files, read once per process."""
    files = {path.name: path.read_bytes() for path in _client_files(CLIENT_FILES.iterdir())}
    files.update((name, (_viewer_directory() / name).read_bytes()) for name in VIEWER_FILES)
    return AssetTable(files)


def _client_files(paths: Iterable[Traversable]) -> Iterator[Traversable]:
    return (path for path in paths if path.is_file() and Path(path.name).suffix in MEDIA_TYPES)


def _viewer_directory() -> Path:
    # Imported here: the viewer is needed only once a page or asset is asked for.
    import swagger_ui_bundle

    return Path(swagger_ui_bundle.swagger_ui_path)


def _asset(name: str, body: bytes) -> Asset:
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    return Asset(body, MEDIA_TYPES[Path(name).suffix], etag)


def _matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 weak comparison, as `If-None-Match` asks: `W/` prefixes are ignored."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    candidates = (tag.strip().removeprefix("W/") for tag in if_none_match.split(","))
    return etag in candidates
