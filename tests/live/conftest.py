"""Fixtures for tests against real `chatsvc serve` processes (see chatsvc.testing)."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from chatsvc.testing import DatabaseFactory, ServerProcess, serving

if TYPE_CHECKING:  # Playwright is imported by the browser tests only
    from playwright.async_api import Browser

    from tests.live.browser import People

Launch = Callable[..., Awaitable[ServerProcess]]


@pytest.fixture
def server_settings() -> dict[str, str]:
    """The CHATSVC_* settings of every server `launch` starts; a module overrides it."""
    return {}


@pytest.fixture
async def launch(databases: DatabaseFactory, server_settings: dict[str, str],
                 tmp_path: Path) -> AsyncIterator[Launch]:
    """`await launch(**settings)`: a started server, stopped after the test.

    On a fresh migrated database, or on `database_url=` when given.
    """
    numbers = itertools.count()
    with contextlib.ExitStack() as servers:

        async def start(database_url: str | None = None, **settings: str) -> ServerProcess:
            url = database_url or await databases.create(migrated=True)
            server = ServerProcess(url, tmp_path / f"serve-{next(numbers)}.log",
                                   **{**server_settings, **settings})
            servers.callback(server.stop)
            return server.start()

        yield start


# --- the web client's browser tests (tests/live/test_browser_*.py, tools in browser.py) --------

@pytest.fixture(scope="module")
async def web_server(databases: DatabaseFactory, request: pytest.FixtureRequest,
                     tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ServerProcess]:
    """One server for a whole browser test module (with the module's `WEB_SERVER_SETTINGS`)."""
    settings = getattr(request.module, "WEB_SERVER_SETTINGS", {})
    log = tmp_path_factory.mktemp("web-server") / "server.log"
    async with serving(databases, log, **settings) as server:
        yield server


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    """Headless Debian Chromium, one per module."""
    from tests.live.browser import chromium

    async with chromium() as opened:
        yield opened


@pytest.fixture
async def people(browser: Browser, web_server: ServerProcess) -> AsyncIterator[People]:
    """The people of one test; each page is checked for CSP violations and uncaught errors at the end."""
    from tests.live.browser import People

    made = People(browser, web_server)
    yield made
    await made.check_and_leave()
