"""The ASGI entry for other servers (`uvicorn chatsvc.asgi:app`)."""

from __future__ import annotations

import asyncio

import httpx

from chatsvc.asgi import LifespanApp
from tests.conftest import TEST_SETTINGS


async def test_serves_check_once_its_lifespan_has_started(database_url: str) -> None:
    app = LifespanApp({**TEST_SETTINGS, "DATABASE_URL": database_url})
    to_app: asyncio.Queue[dict] = asyncio.Queue()
    from_app: asyncio.Queue[dict] = asyncio.Queue()
    lifespan = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}}, to_app.get, from_app.put)
    )
    await to_app.put({"type": "lifespan.startup"})
    assert (await from_app.get())["type"] == "lifespan.startup.complete"

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://chatsvc") as client:
        response = await client.get("/check")
    assert (response.status_code, response.text) == (200, "ok")

    await to_app.put({"type": "lifespan.shutdown"})
    assert (await from_app.get())["type"] == "lifespan.shutdown.complete"
    await lifespan
