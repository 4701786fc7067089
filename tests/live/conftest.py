"""Fixtures for tests against real `chatsvc serve` processes (see chatsvc.testing)."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from chatsvc.testing import DatabaseFactory, ServerProcess

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
