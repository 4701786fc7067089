"""The admin listener of a real `chatsvc serve`: its own bind address, debug routes only when
enabled and no GET with a side effect, and metrics no client input can grow."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import httpx
import pytest

from chatsvc.testing import NO_RATE_LIMITS, QUIET_LOGS, DatabaseFactory, ServerProcess, serving
from tests.live.conftest import Launch

ADMIN_HOST = "127.0.0.2"  # another loopback address: only the admin listener binds it
INVENTED = 400  # each would add a counter and a histogram (over 1 kB) if it made a series


@pytest.fixture(scope="module")
async def server(databases: DatabaseFactory, tmp_path_factory: pytest.TempPathFactory
                 ) -> AsyncIterator[ServerProcess]:
    # The rate limiter on, so that refused requests are counted too.
    settings = {**QUIET_LOGS, "CHATSVC_ADMIN_HOST": ADMIN_HOST, "CHATSVC_RATE": "5", "CHATSVC_BURST": "20"}
    async with serving(databases, tmp_path_factory.mktemp("admin") / "serve.log", **settings) as server:
        yield server


def admin_url(server: ServerProcess) -> str:
    return f"http://{ADMIN_HOST}:{server.admin_port}"


async def test_the_admin_listener_binds_its_own_address(server: ServerProcess) -> None:
    async with httpx.AsyncClient(timeout=5) as client:
        assert (await client.get(admin_url(server) + "/healthz")).status_code == 200
        assert (await client.get(server.url + "/check")).status_code == 200
        with pytest.raises(httpx.ConnectError):
            await client.get(server.admin_url + "/healthz")  # 127.0.0.1: not bound there


async def test_debug_routes_are_absent_by_default(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=admin_url(server), timeout=5) as client:
        for method, path in [("GET", "/debug/tasks"), ("GET", "/debug/memory"), ("POST", "/debug/memory"),
                             ("GET", "/debug/profile?seconds=1")]:
            response = await client.request(method, path)
            assert response.status_code == 404, (method, path, response.text)


async def test_no_get_starts_memory_tracing(launch: Launch) -> None:
    debugging = await launch(**NO_RATE_LIMITS, CHATSVC_DEBUG_ENDPOINTS="true")
    async with httpx.AsyncClient(base_url=debugging.admin_url, timeout=30) as client:
        # What an <img src=".../debug/memory"> on any web page would send, twice.
        for _ in range(2):
            assert (await client.get("/debug/memory")).status_code == 409
        assert (await client.post("/debug/memory")).status_code == 200
        report = await client.get("/debug/memory")
        assert report.status_code == 200 and report.text.startswith("traced memory:"), report.text
        assert (await client.delete("/debug/memory")).status_code == 200
        assert (await client.get("/debug/memory")).status_code == 409
        assert (await client.get("/debug/tasks")).status_code == 200


async def metrics_size(server: ServerProcess) -> int:
    async with httpx.AsyncClient(timeout=5) as client:
        return len((await client.get(admin_url(server) + "/metrics")).content)


async def test_invented_methods_and_paths_add_no_time_series(server: ServerProcess) -> None:
    limits = httpx.Limits(max_connections=8)
    async with httpx.AsyncClient(base_url=server.url, timeout=10, limits=limits) as client:

        async def invent(count: int) -> list[int]:
            return [(await client.request(f"X{secrets.token_hex(6).upper()}",
                                          f"/{secrets.token_hex(8)}/{n}")).status_code for n in range(count)]

        # Every series these requests can touch, once: 404 and, past the burst, 429.
        warm_up = [status for batch in await asyncio.gather(*(invent(10) for _ in range(4)))
                   for status in batch]
        assert {404, 429} <= set(warm_up), warm_up
        before = await metrics_size(server)
        statuses = [status for batch in await asyncio.gather(*(invent(INVENTED // 8) for _ in range(8)))
                    for status in batch]
        after = await metrics_size(server)
    assert 429 in statuses and 404 in statuses, sorted(set(statuses))
    # Counters and sums grow by a few digits; a new series for each request would add over 400 kB.
    assert after - before < 2000, (before, after)
