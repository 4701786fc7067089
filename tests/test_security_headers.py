"""docs/API.md's "Security headers and caching" on both listeners, and the CORS refusal in the envelope."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from chatsvc.admin import build_admin_app
from chatsvc.resources import Resources
from chatsvc.testing import User, assert_error


@pytest.fixture
async def admin(resources: Resources) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_admin_app(resources))
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
        yield client


async def test_every_answer_of_both_listeners_is_nosniff(
        client: httpx.AsyncClient, admin: httpx.AsyncClient, alice: User) -> None:
    answers = [await client.get("/check"), await client.get("/nowhere"), await client.get("/openapi.json"),
               await client.post("/login", json={"username": "nobody", "password": "wrong guess"}),
               await client.get("/messages", params={"recipient": alice.id}, headers=alice.auth),
               await admin.get("/healthz"), await admin.get("/metrics"), await admin.get("/nowhere")]
    for answer in answers:
        assert answer.headers["x-content-type-options"] == "nosniff", answer.request.url


async def test_login_and_authenticated_answers_are_not_stored(client: httpx.AsyncClient, alice: User) -> None:
    logged_in = await client.post("/login", json={"username": alice.username, "password": alice.password})
    refused = await client.post("/login", json={"username": alice.username, "password": "wrong guess"})
    listing = await client.get("/messages", params={"recipient": alice.id}, headers=alice.auth)
    unauthorized = await client.get("/messages", params={"recipient": alice.id},
                                    headers={"Authorization": "Bearer not-a-token"})
    for answer in (logged_in, refused, listing, unauthorized):
        assert answer.headers["cache-control"] == "no-store", answer.request.url
    assert "no-store" not in (await client.get("/check")).headers.get("cache-control", "")


@pytest.mark.parametrize("path", ["/", "/docs"])
async def test_html_pages_may_not_be_framed(client: httpx.AsyncClient, path: str) -> None:
    page = await client.get(path)
    assert page.headers["content-type"].startswith("text/html")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


async def test_a_refused_preflight_is_the_error_envelope_with_a_request_id(client: httpx.AsyncClient) -> None:
    refused = await client.options("/messages", headers={
        "Origin": "https://elsewhere.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "X-Not-Allowed"})
    message = assert_error(refused, 400, "invalid_request")
    assert "CORS" in message and refused.headers["x-request-id"]


async def test_allow_lists_options_where_cors_answers_it(client: httpx.AsyncClient) -> None:
    answer = await client.put("/login")
    assert_error(answer, 405, "method_not_allowed")
    assert {method.strip() for method in answer.headers["allow"].split(",")} >= {"POST", "OPTIONS"}
