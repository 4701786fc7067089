"""Serving the web client and the API viewer: versioned assets, ETags, caching, the page's CSP.

What the client does in a browser is tested in tests/test_browser_*.py; this is the HTTP side,
in process, plus checks on the shipped files that no browser run could prove for every line.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from importlib import resources

import httpx
import pytest

from chatsvc.app import build_app
from chatsvc.resources import Resources
from chatsvc.testing import assert_error, media_type
from chatsvc.web.assets import ASSET_CACHE, VIEWER_FILES, asset_table

STATIC = resources.files("chatsvc.web") / "static"
SCRIPTS = sorted(path.name for path in STATIC.iterdir() if path.name.endswith(".js"))


class Links(HTMLParser):
    """What an HTML page loads, and anything inline that a strict CSP would block."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[str] = []
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "script":
            self._in_script = True
            if not attributes.get("src"):
                self.inline.append("<script> without src")
        if tag == "style":
            self.inline.append("<style>")
        if "style" in attributes:
            self.inline.append(f"style= on <{tag}>")
        self.inline.extend(f"{name}= on <{tag}>" for name in attributes if name.startswith("on"))
        if tag in ("script", "img") and attributes.get("src"):
            self.loads.append(attributes["src"] or "")
        if tag == "link" and attributes.get("href"):
            self.loads.append(attributes["href"] or "")

    def handle_endtag(self, tag: str) -> None:
        self._in_script = self._in_script and tag != "script"

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append("inline script text")


def links_of(html: str) -> Links:
    parser = Links()
    parser.feed(html)
    return parser


@pytest.fixture
async def client_off(resources: Resources) -> AsyncIterator[httpx.AsyncClient]:
    """The app with CHATSVC_WEB_CLIENT=false."""
    app = build_app(dataclasses.replace(resources, settings=resources.settings.replace(web_client=False)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://chatsvc") as client:
        yield client


@pytest.mark.parametrize("path", ["/", "/docs"])
async def test_each_page_loads_only_versioned_files_of_its_own_and_nothing_inline(
    client: httpx.AsyncClient, path: str
) -> None:
    page = await client.get(path)

    assert page.status_code == 200
    assert media_type(page) == "text/html"
    found = links_of(page.text)
    assert found.inline == []
    prefix = asset_table().prefix
    assert found.loads and all(url.startswith(prefix) for url in found.loads), found.loads
    for url in found.loads:
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert asset.headers["cache-control"] == ASSET_CACHE
        assert asset.headers["etag"]


@pytest.mark.parametrize(("path", "connects"), [("/", "connect-src 'self'"), ("/docs", "connect-src 'self'")])
async def test_pages_carry_a_strict_content_security_policy(
    client: httpx.AsyncClient, path: str, connects: str
) -> None:
    policy = (await client.get(path)).headers["content-security-policy"]
    directives = {part.split()[0]: part.split()[1:] for part in policy.split(";") if part.strip()}

    assert directives["default-src"] == ["'none'"]
    assert directives["script-src"] == ["'self'"]
    assert directives["style-src"] == ["'self'"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert directives["base-uri"] == ["'none'"]
    assert connects in policy
    assert "unsafe" not in policy  # no 'unsafe-inline', no 'unsafe-eval'


async def test_the_page_and_an_asset_answer_304_to_their_etag(client: httpx.AsyncClient) -> None:
    for url in ["/", asset_table().prefix + "main.js", asset_table().prefix + "swagger-ui-bundle.js"]:
        first = await client.get(url)
        etag = first.headers["etag"]

        again = await client.get(url, headers={"If-None-Match": etag})
        weak = await client.get(url, headers={"If-None-Match": f'"other", W/{etag}'})
        changed = await client.get(url, headers={"If-None-Match": '"something-else"'})

        assert (again.status_code, again.content, again.headers["etag"]) == (304, b"", etag), url
        assert weak.status_code == 304, url
        assert changed.status_code == 200 and changed.content == first.content, url


async def test_pages_are_revalidated_and_versioned_assets_cached_for_a_year(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/")
    script = await client.get(asset_table().prefix + "main.js")

    assert page.headers["cache-control"] == "no-cache"
    assert script.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert media_type(script) == "text/javascript"
    assert media_type(await client.get(asset_table().prefix + "app.css")) == "text/css"


async def test_an_old_versions_url_gets_todays_file_revalidated_not_cached_for_a_year(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/static/0123456789abcdef/main.js")

    assert response.status_code == 200
    assert response.content == (await client.get(asset_table().prefix + "main.js")).content
    assert response.headers["cache-control"] == "no-cache"


@pytest.mark.parametrize("name", ["nope.js", "index.html", "..%2Fassets.py", "__init__.py", "swagger-ui.js"])
async def test_a_file_that_is_not_an_asset_is_404(client: httpx.AsyncClient, name: str) -> None:
    assert_error(await client.get(asset_table().prefix + name), 404, "not_found")


async def test_the_version_names_the_content_of_every_file() -> None:
    table = asset_table()
    files = {name: asset.body for name, asset in table.assets.items()}
    files.update((name, page.body) for name, page in table.pages.items())
    changed = type(table)({**files, "app.css": files["app.css"] + b"\n"})

    assert changed.version != table.version
    assert set(VIEWER_FILES) <= set(table.assets)


async def test_with_the_client_off_the_root_is_a_short_page_linking_the_api_description(
    client_off: httpx.AsyncClient,
) -> None:
    page = await client_off.get("/")

    assert page.status_code == 200
    assert media_type(page) == "text/html"
    assert 'href="/docs"' in page.text and 'href="/openapi.json"' in page.text
    assert "<script" not in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert (await client_off.get("/docs")).status_code == 200


# Anything that turns a string into code or markup: a message or a name must never reach one.
UNSAFE_SINKS = re.compile(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|"
                          r"setTimeout\(\s*['\"`]|setAttribute\(\s*['\"]style|\.srcdoc\b")


@pytest.mark.parametrize("name", [name for name in SCRIPTS if name not in VIEWER_FILES])
def test_the_client_scripts_use_no_html_or_code_sink(name: str) -> None:
    source = (STATIC / name).read_text()

    assert not UNSAFE_SINKS.search(source), UNSAFE_SINKS.search(source)


def test_every_external_link_the_client_makes_opens_without_opener_or_referrer() -> None:
    dom = (STATIC / "dom.js").read_text()
    others = [name for name in SCRIPTS
              if name != "dom.js" and 'target: "_blank"' in (STATIC / name).read_text()]

    assert 'rel: "noopener noreferrer"' in dom
    assert others == [], "open links with dom.externalLink, which sets rel"
