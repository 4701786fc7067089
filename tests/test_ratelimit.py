"""Rate limiting: bucket arithmetic, bounded tables, client identity, the middleware in front of an app."""

from __future__ import annotations

import hashlib
import ipaddress
import math
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
from chatsvc.middleware.ratelimit import BucketTable, KnownTokens, RateLimit, TokenBucket, client_address
from chatsvc.testing import assert_error

TRUSTED = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32"))


class FakeClock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def scope_from(peer: str, *headers: tuple[str, str]) -> dict[str, Any]:
    return {"type": "http", "client": (peer, 5000),
            "headers": [(name.lower().encode(), value.encode()) for name, value in headers]}


# --- TokenBucket --------------------------------------------------------------------------------


def test_a_full_bucket_allows_the_burst_then_denies() -> None:
    bucket = TokenBucket(rate=2, burst=5, now=0.0)
    remaining = [bucket.take(0.0).remaining for _ in range(5)]
    assert remaining == [4, 3, 2, 1, 0]
    denied = bucket.take(0.0)
    assert not denied.allowed
    assert denied.remaining == 0
    assert denied.retry_after == 1  # one token at 2/s takes 0.5 s, rounded up
    assert denied.reset == 3  # five tokens at 2/s take 2.5 s


def test_a_bucket_refills_continuously_between_takes() -> None:
    bucket = TokenBucket(rate=2, burst=5, now=0.0)
    for _ in range(5):
        bucket.take(0.0)
    assert bucket.take(0.25).allowed is False  # half a token
    after_half_second = bucket.take(0.5)
    assert after_half_second.allowed
    assert after_half_second.remaining == 0
    assert not bucket.take(0.5).allowed
    partly_refilled = bucket.take(1.75)  # 2.5 tokens, one taken
    assert partly_refilled.allowed
    assert partly_refilled.remaining == 1
    assert partly_refilled.reset == 2  # 3.5 tokens missing at 2/s


def test_a_bucket_never_holds_more_than_its_burst() -> None:
    bucket = TokenBucket(rate=2, burst=5, now=0.0)
    bucket.take(0.0)
    after_an_hour = bucket.take(3600.0)
    assert after_an_hour.remaining == 4
    assert after_an_hour.reset == 1
    assert [bucket.take(3600.0).allowed for _ in range(5)] == [True, True, True, True, False]


def test_a_denied_take_costs_nothing() -> None:
    bucket = TokenBucket(rate=1, burst=1, now=0.0)
    bucket.take(0.0)
    for _ in range(10):
        assert not bucket.take(0.5).allowed
    assert bucket.take(1.0).allowed


@pytest.mark.parametrize(("rate", "burst"), [(10 / 60, 10), (0.3, 3), (0.1, 2), (500.0, 100), (7.0, 1)])
def test_waiting_retry_after_is_enough_and_reset_refills_completely(rate: float, burst: int) -> None:
    bucket = TokenBucket(rate=rate, burst=burst, now=0.0)
    now = 0.0
    for _ in range(3):
        while (decision := bucket.take(now)).allowed:
            pass
        assert 1 <= decision.retry_after <= math.ceil(1 / rate)
        now += decision.retry_after
        assert bucket.take(now).allowed
    now += bucket.take(now).reset
    assert bucket.take(now).remaining == burst - 1


def test_waiting_exactly_retry_after_is_enough_despite_float_rounding() -> None:
    bucket = TokenBucket(rate=1 / 3, burst=2, now=0.0)
    assert bucket.take(0.3).allowed
    assert bucket.take(0.8).allowed
    denied = bucket.take(1.3)  # a third of a token, as a float just above 1/3
    assert denied.retry_after == 2
    assert bucket.take(1.3 + 2).allowed  # the sum lands a hair below 1.0


def test_slow_auth_rate_tells_the_client_how_long_to_wait() -> None:
    bucket = TokenBucket(rate=10 / 60, burst=10, now=0.0)
    for _ in range(10):
        bucket.take(0.0)
    denied = bucket.take(0.0)
    assert (denied.retry_after, denied.reset) == (6, 60)


# --- BucketTable -------------------------------------------------------------------------------


def test_a_flood_of_distinct_addresses_never_grows_the_table_past_its_cap() -> None:
    clock = FakeClock()
    table = BucketTable(rate=1, burst=5, clock=clock)
    cap = table.max_entries
    assert cap == 100_000
    largest = 0
    for n in range(200_000):
        table.take(("addr", f"198.{n >> 16}.{(n >> 8) & 255}.{n & 255}"))
        largest = max(largest, len(table))
    assert largest == cap
    assert len(table) == cap


def test_a_client_that_keeps_sending_keeps_its_drained_bucket_through_a_flood() -> None:
    clock = FakeClock()
    table = BucketTable(rate=1, burst=3, clock=clock, max_entries=1000)
    for _ in range(3):
        table.take("regular")
    for n in range(10_000):
        table.take(f"flood-{n}")
        if n % 500 == 0:
            assert not table.take("regular").allowed
    assert not table.take("regular").allowed
    assert len(table) == 1000


def test_idle_buckets_are_dropped_once_they_would_be_full_again() -> None:
    clock = FakeClock()
    table = BucketTable(rate=1, burst=2, clock=clock)
    table.take("early")
    table.take("early")
    clock.advance(1.5)
    table.take("later")
    clock.advance(1.0)  # "early" idle 2.5 s (full again), "later" idle 1.0 s
    table.take("new")
    assert len(table) == 2
    drained_then_evicted = table.take("early")
    assert drained_then_evicted.remaining == 1  # same as the full bucket it would have refilled to


def test_idle_buckets_disappear_without_a_scan_even_if_their_clients_never_return() -> None:
    clock = FakeClock()
    table = BucketTable(rate=100, burst=10, clock=clock)
    for n in range(1000):
        table.take(n)
    clock.advance(1.0)
    for _ in range(499):
        table.take("busy")
    assert len(table) > 1
    table.take("busy")
    assert len(table) == 1


# --- KnownTokens -------------------------------------------------------------------------------


def test_known_tokens_are_bounded_and_forgettable() -> None:
    known = KnownTokens(max_entries=3)
    for user_id in range(1, 6):
        known.remember(bytes([user_id]) * 32, user_id)
    assert len(known) == 3
    assert known.user_id(bytes([1]) * 32) is None
    assert known.user_id(bytes([5]) * 32) == 5
    known.remember(bytes([3]) * 32, 3)  # used again: now the most recent
    known.remember(bytes([6]) * 32, 6)
    assert known.user_id(bytes([3]) * 32) == 3
    assert known.user_id(bytes([4]) * 32) is None
    known.forget(bytes([3]) * 32)
    known.forget(bytes([3]) * 32)
    assert known.user_id(bytes([3]) * 32) is None


# --- client address ----------------------------------------------------------------------------


def test_forwarded_for_from_an_untrusted_peer_is_ignored() -> None:
    scope = scope_from("203.0.113.7", ("X-Forwarded-For", "198.51.100.1"))
    assert client_address(scope, TRUSTED) == "203.0.113.7"
    assert client_address(scope, ()) == "203.0.113.7"


@pytest.mark.parametrize(("forwarded", "expected"), [
    ("198.51.100.1", "198.51.100.1"),
    ("6.6.6.6, 198.51.100.1", "198.51.100.1"),  # the left part is the client's own claim
    ("198.51.100.1, 10.1.2.3", "198.51.100.1"),  # a second proxy of ours in between
    ("198.51.100.1, not-an-ip, 10.1.2.3:80, 10.1.2.3", "198.51.100.1"),
    ("2001:db8::9, 2001:db9::1", "2001:db9::1"),
    ("10.9.9.9, 10.1.1.1", "10.9.9.9"),  # only proxies: the left-most is the best we know
    ("garbage", "10.0.0.1"),
    ("", "10.0.0.1"),
])
def test_forwarded_for_from_a_trusted_peer_names_the_right_most_untrusted_hop(forwarded: str,
                                                                              expected: str) -> None:
    scope = scope_from("10.0.0.1", ("X-Forwarded-For", forwarded))
    assert client_address(scope, TRUSTED) == expected


def test_forwarded_for_spread_over_several_header_lines_is_one_chain() -> None:
    scope = scope_from("10.0.0.1", ("X-Forwarded-For", "198.51.100.1"), ("X-Forwarded-For", "10.0.0.5"))
    assert client_address(scope, TRUSTED) == "198.51.100.1"


def test_an_ipv4_peer_on_a_dual_stack_socket_is_still_a_trusted_proxy() -> None:
    scope = scope_from("::ffff:10.0.0.1", ("X-Forwarded-For", "198.51.100.1"))
    assert client_address(scope, TRUSTED) == "198.51.100.1"


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
