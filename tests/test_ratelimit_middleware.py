"""The rate-limit middleware in front of an app: budgets, 429s, refills, auth buckets, tokens, proxies."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from chatsvc.config import Settings
from chatsvc.middleware.ratelimit import KnownTokens, RateLimit
from chatsvc.testing import assert_error
from tests.ratelimit_fakes import (
    TRUSTED,
    FakeClock,
)

# --- the middleware in front of an app ---------------------------------------------------------


class Harness:
    """A tiny Starlette app behind RateLimit, counting the requests that reach it."""

    def __init__(self, **settings: Any) -> None:
        self.clock = FakeClock()
        self.known = KnownTokens()
        self.calls = 0
        self.limited: list[str] = []
        defaults = {"rate": 10.0, "burst": 3, "auth_rate": 0.0, "auth_burst": 10}
        self.settings = Settings.from_env({}).replace(**{**defaults, **settings})
        routes = [Route(path, self.endpoint, methods=["GET", "POST"])
                  for path in ("/hits", "/login", "/login/", "/users", "/users/", "/logout")]
        self.app = Starlette(routes=routes, middleware=[Middleware(
            RateLimit, settings=self.settings, known_tokens=self.known, clock=self.clock,
            on_limited=self.limited.append)])

    async def endpoint(self, request: Request) -> PlainTextResponse:
        self.calls += 1
        return PlainTextResponse("ok")

    def client(self, address: str = "1.2.3.4") -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, client=(address, 123))
        return httpx.AsyncClient(transport=transport, base_url="http://chatsvc.test")


@pytest.fixture
def harness() -> Harness:
    return Harness()


def assert_rate_limited(response: httpx.Response) -> int:
    """`response` is the 429 envelope; returns its Retry-After."""
    assert_error(response, 429, "rate_limited", request_id=False)  # the middleware alone
    assert response.headers["connection"] == "close"
    assert response.headers["ratelimit-remaining"] == "0"
    retry_after = response.headers["retry-after"]
    assert retry_after.isdigit() and int(retry_after) >= 1
    return int(retry_after)


async def test_every_response_reports_the_budget(harness: Harness) -> None:
    async with harness.client() as client:
        first = await client.get("/hits")
        second = await client.post("/hits")
    assert first.status_code == 200
    assert first.headers["ratelimit-limit"] == "3"
    assert first.headers["ratelimit-remaining"] == "2"
    assert first.headers["ratelimit-reset"] == "1"
    assert second.headers["ratelimit-remaining"] == "1"
    assert harness.calls == 2


async def test_an_exhausted_bucket_is_429_before_the_endpoint_runs(harness: Harness) -> None:
    async with harness.client() as client:
        for _ in range(3):
            assert (await client.get("/hits")).status_code == 200
        denied = await client.post("/hits", content=b"x" * 1000)
    assert assert_rate_limited(denied) == 1
    assert denied.headers["ratelimit-limit"] == "3"
    assert harness.calls == 3
    assert harness.limited == ["general"]


async def test_the_bucket_refills_with_time(harness: Harness) -> None:
    async with harness.client() as client:
        for _ in range(3):
            await client.get("/hits")
        assert_rate_limited(await client.get("/hits"))
        harness.clock.advance(0.1)  # one token at 10/s
        assert (await client.get("/hits")).status_code == 200
        assert_rate_limited(await client.get("/hits"))
    assert harness.calls == 4


async def test_clients_at_other_addresses_have_their_own_buckets(harness: Harness) -> None:
    async with harness.client("1.2.3.4") as first, harness.client("5.6.7.8") as second:
        for _ in range(3):
            await first.get("/hits")
        assert_rate_limited(await first.get("/hits"))
        assert (await second.get("/hits")).headers["ratelimit-remaining"] == "2"


async def test_login_and_sign_up_share_a_stricter_bucket_per_address() -> None:
    harness = Harness(rate=100.0, burst=50, auth_rate=2.0, auth_burst=2)
    async with harness.client() as client, harness.client("5.6.7.8") as elsewhere:
        login = await client.post("/login")
        assert login.status_code == 200
        assert login.headers["ratelimit-limit"] == "2"  # the bucket closest to empty
        assert login.headers["ratelimit-remaining"] == "1"
        assert (await client.post("/users")).status_code == 200
        assert assert_rate_limited(await client.post("/login")) == 30  # 2 per minute
        assert_rate_limited(await client.post("/users/"))
        assert_rate_limited(await client.post("/login/"))
        other = await client.get("/hits")
        assert other.status_code == 200
        assert other.headers["ratelimit-limit"] == "50"
        assert (await client.get("/login")).status_code == 200  # only POST signs up or logs in
        assert (await elsewhere.post("/login")).status_code == 200
        harness.clock.advance(30)
        assert (await client.post("/login")).status_code == 200
    assert harness.limited == ["auth", "auth", "auth"]
    assert harness.calls == 6


async def test_a_session_token_does_not_buy_a_fresh_auth_bucket() -> None:
    harness = Harness(rate=100.0, burst=50, auth_rate=2.0, auth_burst=2)
    token = secrets.token_urlsafe(32)
    harness.known.remember(hashlib.sha256(token.encode()).digest(), 7)
    async with harness.client() as client:
        for _ in range(2):
            assert (await client.post("/login", headers={"Authorization": token})).status_code == 200
        assert_rate_limited(await client.post("/login"))


async def test_a_rate_of_zero_turns_a_limiter_off() -> None:
    harness = Harness(rate=0.0, auth_rate=0.0)
    async with harness.client() as client:
        for _ in range(20):
            response = await client.post("/login")
            assert response.status_code == 200
            assert "ratelimit-limit" not in response.headers
    assert harness.calls == 20


async def test_the_auth_limiter_works_without_the_general_one() -> None:
    harness = Harness(rate=0.0, auth_rate=60.0, auth_burst=1)
    async with harness.client() as client:
        assert (await client.post("/login")).headers["ratelimit-limit"] == "1"
        assert assert_rate_limited(await client.post("/login")) == 1
        unlimited = await client.get("/hits")
        assert unlimited.status_code == 200
        assert "ratelimit-limit" not in unlimited.headers


async def test_a_known_token_is_limited_per_user_wherever_it_comes_from(harness: Harness) -> None:
    token = secrets.token_urlsafe(32)
    harness.known.remember(hashlib.sha256(token.encode()).digest(), 7)
    async with harness.client("1.2.3.4") as home, harness.client("5.6.7.8") as phone:
        assert (await home.get("/hits", headers={"Authorization": f"Bearer {token}"})).status_code == 200
        assert (await phone.get("/hits", headers={"Authorization": token})).status_code == 200
        assert (await phone.get("/hits", headers={"Authorization": f"bearer {token}"})).status_code == 200
        assert_rate_limited(await home.get("/hits", headers={"Authorization": f"Bearer {token}"}))
        # The address's own bucket was never touched.
        assert (await home.get("/hits")).headers["ratelimit-remaining"] == "2"


async def test_unknown_tokens_count_against_the_address(harness: Harness) -> None:
    async with harness.client() as client, harness.client("5.6.7.8") as other:
        for _ in range(3):
            headers = {"Authorization": f"Bearer {secrets.token_urlsafe(32)}"}
            assert (await client.get("/hits", headers=headers)).status_code == 200
        assert_rate_limited(await client.get("/hits", headers={"Authorization": "Bearer " + "x" * 300}))
        assert_rate_limited(await client.get("/hits"))
        assert (await other.get("/hits")).status_code == 200


async def test_a_forgotten_token_counts_against_the_address_again(harness: Harness) -> None:
    token = secrets.token_urlsafe(32)
    digest = hashlib.sha256(token.encode()).digest()
    harness.known.remember(digest, 7)
    async with harness.client() as client:
        for _ in range(3):
            await client.get("/hits", headers={"Authorization": token})
        harness.known.forget(digest)
        response = await client.get("/hits", headers={"Authorization": token})
        assert response.status_code == 200
        assert response.headers["ratelimit-remaining"] == "2"


async def test_forwarded_for_separates_clients_only_behind_a_trusted_proxy() -> None:
    harness = Harness(trusted_proxies=TRUSTED)
    async with harness.client("10.0.0.1") as proxy, harness.client("1.2.3.4") as stranger:
        for n in range(4):
            response = await proxy.get("/hits", headers={"X-Forwarded-For": f"198.51.100.{n}"})
            assert response.headers["ratelimit-remaining"] == "2"
        for n in range(3):
            await stranger.get("/hits", headers={"X-Forwarded-For": f"198.51.100.{n}"})
        assert_rate_limited(await stranger.get("/hits", headers={"X-Forwarded-For": "198.51.100.99"}))
