"""Fixtures: a real PostgreSQL (private, or DATABASE_URL), the real app, users that log in."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from starlette.applications import Starlette

from chatsvc.app import build_app
from chatsvc.config import Settings
from chatsvc.openapi import build_document
from chatsvc.resources import Resources, open_resources
from chatsvc.testing import (
    CHEAP_HASHING,
    NO_RATE_LIMITS,
    DatabaseFactory,
    User,
    postgres_server,
    sign_up_and_log_in,
)
from tests import PROJECT_ROOT
from tests.openapi_checks import client_of

# The in-process app's settings: cheap hashing (the suite hashes hundreds of passwords), no limits.
TEST_SETTINGS = {
    **CHEAP_HASHING,
    **NO_RATE_LIMITS,
    "CHATSVC_LOG_LEVEL": "warning",
}


@pytest.fixture(scope="session")
def server_dsn() -> Iterator[str]:
    """A PostgreSQL server: DATABASE_URL's when set, else a private cluster under `.data/`."""
    with postgres_server(PROJECT_ROOT / ".data" / "test") as dsn:
        yield dsn


@pytest.fixture(scope="session")
async def databases(server_dsn: str) -> AsyncIterator[DatabaseFactory]:
    """Makes throwaway databases on the server, dropped when the session ends."""
    factory = DatabaseFactory(server_dsn)
    yield factory
    await factory.drop_all()


@pytest.fixture(scope="session")
async def database_url(databases: DatabaseFactory) -> str:
    """One migrated database for the in-process tests; each test makes its own users."""
    return await databases.create(migrated=True)


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return Settings.from_env({**TEST_SETTINGS, "DATABASE_URL": database_url})


@pytest.fixture(scope="session")
async def resources(settings: Settings) -> AsyncIterator[Resources]:
    async with open_resources(settings) as opened:
        yield opened


@pytest.fixture(scope="session")
async def db(resources: Resources) -> asyncpg.Pool:
    """Direct access to the suite's database, for arranging and checking rows."""
    return resources.pool


@pytest.fixture
async def client(resources: Resources) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_app(resources))
    async with httpx.AsyncClient(transport=transport, base_url="http://chatsvc") as client:
        yield client


@pytest.fixture
def new_user(client: httpx.AsyncClient):
    """`await new_user()`: a fresh signed-up, logged-in user."""

    async def make(username: str | None = None) -> User:
        return await sign_up_and_log_in(client, username)

    return make


@pytest.fixture
async def alice(new_user) -> User:
    return await new_user()


@pytest.fixture
async def bob(new_user) -> User:
    return await new_user()


@pytest.fixture
async def carol(new_user) -> User:
    return await new_user()


# --- an app of its own and its OpenAPI document (tests/test_openapi*.py) ------------------------

@pytest.fixture
async def app(resources: Resources) -> Starlette:
    return build_app(resources)


@pytest.fixture
async def api(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with client_of(app) as client:
        yield client


@pytest.fixture
def document(app: Starlette, settings: Settings) -> dict[str, Any]:
    return build_document(app.routes, settings)
