"""Rate limiting's arithmetic and bounds: TokenBucket, BucketTable and KnownTokens, on a fake clock."""

from __future__ import annotations

import math

import pytest

from chatsvc.middleware.ratelimit import BucketTable, KnownTokens, TokenBucket
from tests.ratelimit_fakes import (
    FakeClock,
)

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
