"""Token buckets per client, and the middleware that answers 429 before the app runs."""

from __future__ import annotations

import functools
import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import NamedTuple

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatsvc.config import Settings
from chatsvc.errors import ApiError, ErrorCode, error_response
from chatsvc.tokens import presented_digest

Clock = Callable[[], float]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_MAX_ENTRIES = 100_000

# The routes that hash a password: (method, path).
_AUTH_ROUTES = frozenset({("POST", "/login"), ("POST", "/users"), ("PUT", "/users/me/password")})
# Float error must not deny a client that waited exactly the Retry-After it was given.
_SLACK = 1e-9

# An IPv6 client is its /64: the prefix one subscriber is given (RFC 6177).
IPV6_CLIENT_PREFIX = 64


class Decision(NamedTuple):
    """The outcome of taking one token, with what the RateLimit-* headers report."""

    allowed: bool
    remaining: int
    reset: int
    retry_after: int


class TokenBucket:
    """`burst` tokens, refilled continuously at `rate` tokens per second."""

    # Slots keep each of up to `max_entries` buckets small.
    __slots__ = ("burst", "rate", "tokens", "updated")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.updated = now

    def take(self, now: float) -> Decision:
        """Take one token at monotonic time `now` if there is one."""
        tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        allowed = tokens >= 1 - _SLACK
        if allowed:
            tokens = max(0.0, tokens - 1)
        self.tokens = tokens
        self.updated = now
        retry_after = 0 if allowed else max(1, math.ceil((1 - tokens) / self.rate))
        return Decision(allowed, math.floor(tokens + _SLACK),
                        math.ceil((self.burst - tokens) / self.rate), retry_after)


class BucketTable:
    """A bucket per client key, least recently used first, never more than `max_entries`."""

    def __init__(self, rate: float, burst: int, clock: Clock = time.monotonic,
                 max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.max_entries = max_entries
        # A bucket idle this long is full again, so dropping it changes nothing.
        self.idle_after = burst / rate
        self._buckets: OrderedDict[Hashable, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: Hashable) -> Decision:
        """Take one token from `key`'s bucket."""
        now = self.clock()
        self._evict_idle(now)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
            if len(self._buckets) > self.max_entries:
                # Under a flood of new keys an evicted client merely starts over with a full bucket.
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.take(now)

    def _evict_idle(self, now: float) -> None:
        # The oldest entries are the least recently used; dropping up to two per call outpaces
        # the one insertion per call, so idle buckets never pile up and no call scans the table.
        for _ in range(2):
            oldest = next(iter(self._buckets.items()), None)
            if oldest is None or now - oldest[1].updated < self.idle_after:
                return
            del self._buckets[oldest[0]]


class KnownTokens:
    """Token hash -> user id of tokens `authenticate()` accepted, so the limiter never queries."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._users: OrderedDict[bytes, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._users)

    def remember(self, token_hash: bytes, user_id: int) -> None:
        """Record a token the database just accepted."""
        self._users[token_hash] = user_id
        self._users.move_to_end(token_hash)
        if len(self._users) > self.max_entries:
            self._users.popitem(last=False)

    def forget(self, token_hash: bytes) -> None:
        """Drop a token that was revoked or rejected."""
        self._users.pop(token_hash, None)

    def user_id(self, token_hash: bytes) -> int | None:
        """The user a remembered token belongs to, else None."""
        return self._users.get(token_hash)


class RateLimit:
    """Answer 429 before the app when a client's bucket is empty; report the budget on every response."""

    def __init__(self, app: ASGIApp, settings: Settings, known_tokens: KnownTokens,
                 clock: Clock = time.monotonic, on_limited: Callable[[str], None] | None = None,
                 max_clients: int = DEFAULT_MAX_ENTRIES) -> None:
        self.app = app
        self.known_tokens = known_tokens
        self.trusted_proxies = settings.trusted_proxies
        self.on_limited = on_limited
        self.general = _table(settings.rate, settings.burst, clock, max_clients)
        self.auth = _table(settings.auth_rate / 60, settings.auth_burst, clock, max_clients)
        # Working out a client from its address and X-Forwarded-For costs more than the rest of
        # the limiter; the same clients come back again and again, so each one's answer is kept
        # (a bounded cache, like the bucket table).
        self._bucket_of = functools.lru_cache(maxsize=4096)(self._bucket_for)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (self.general is None and self.auth is None):
            await self.app(scope, receive, send)
            return
        peer = scope["client"][0] if scope.get("client") else ""
        address = self._bucket_of(peer, _forwarded_for(scope) if self.trusted_proxies else b"")
        closest: tuple[BucketTable, Decision] | None = None
        for label, table in (("general", self.general), ("auth", self.auth)):
            if table is None:
                continue
            if table is self.general:
                key = self._client_key(scope, address)
            elif _is_sign_up_or_login(scope):
                key = ("addr", address)
            else:
                continue
            decision = table.take(key)
            if not decision.allowed:
                if self.on_limited is not None:
                    self.on_limited(label)
                await _too_many_requests(table, decision)(scope, receive, send)
                return
            if closest is None or decision.remaining < closest[1].remaining:
                closest = (table, decision)
        if closest is None:
            await self.app(scope, receive, send)
            return
        budget = _budget_headers(*closest)

        async def send_with_budget(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *budget]
            await send(message)

        await self.app(scope, receive, send_with_budget)

    def _bucket_for(self, peer: str, forwarded: bytes) -> str:
        return client_bucket(address_from(peer, forwarded, self.trusted_proxies))

    def _client_key(self, scope: Scope, address: str) -> Hashable:
        digest = presented_digest(scope)
        user_id = None if digest is None else self.known_tokens.user_id(digest)
        if user_id is not None:
            return ("user", user_id)
        # Unknown tokens count against the address, so inventing tokens buys no fresh buckets.
        return ("addr", address)


def client_address(scope: Scope, trusted_proxies: tuple[Network, ...]) -> str:
    """The peer's address, or the one `X-Forwarded-For` names when the peer is a trusted proxy."""
    peer = scope["client"][0] if scope.get("client") else ""
    return address_from(peer, _forwarded_for(scope) if trusted_proxies else b"", trusted_proxies)


def _forwarded_for(scope: Scope) -> bytes:
    return b",".join(value for name, value in scope["headers"] if name == b"x-forwarded-for")


def address_from(peer: str, forwarded: bytes, trusted_proxies: tuple[Network, ...]) -> str:
    """`client_address` from the peer's address and the request's `X-Forwarded-For` values."""
    if not trusted_proxies or not _is_trusted(_parse_ip(peer), trusted_proxies):
        return peer
    address = peer
    # Each proxy appends the address it saw, so reading from the right, the first hop that is not
    # a trusted proxy is the client; whatever stands left of it the client could have written.
    # When every hop is trusted, the left-most one is the best we know.
    for hop in reversed(forwarded.decode("latin-1").split(",")):
        ip = _parse_ip(hop.strip())
        if ip is None:
            continue
        address = str(ip)
        if not _is_trusted(ip, trusted_proxies):
            break
    return address


def client_bucket(address: str) -> str:
    """One client as the limits count them: an IPv4 address, or an IPv6 address's /64.

    A subscriber gets a whole /64 (and often more) to pick addresses from at will, so counting
    IPv6 addresses one by one would give each client 2^64 buckets.
    """
    ip = _parse_ip(address)
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((ip, IPV6_CLIENT_PREFIX), strict=False))
    return address


def _table(rate: float, burst: int, clock: Clock, max_entries: int) -> BucketTable | None:
    return BucketTable(rate, burst, clock, max_entries) if rate > 0 else None


def _is_sign_up_or_login(scope: Scope) -> bool:
    return (scope["method"], scope["path"].rstrip("/")) in _AUTH_ROUTES


def _budget_headers(table: BucketTable, decision: Decision) -> list[tuple[bytes, bytes]]:
    return [(b"ratelimit-limit", b"%d" % table.burst),
            (b"ratelimit-remaining", b"%d" % decision.remaining),
            (b"ratelimit-reset", b"%d" % decision.reset)]


def _too_many_requests(table: BucketTable, decision: Decision) -> Response:
    headers = {name.decode(): value.decode() for name, value in _budget_headers(table, decision)}
    headers["Retry-After"] = str(decision.retry_after)
    return error_response(ApiError(ErrorCode.RATE_LIMITED,
                                   f"too many requests; retry in {decision.retry_after} s", headers))


# Parsing an address costs more than the rest of the limiter; the same few proxies and clients
# come back again and again, so recent answers are kept (a bounded cache, like the bucket table).
@functools.lru_cache(maxsize=4096)
def _parse_ip(text: str) -> IPAddress | None:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d, but proxies are listed as IPv4.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


@functools.lru_cache(maxsize=4096)
def _is_trusted(ip: IPAddress | None, trusted_proxies: tuple[Network, ...]) -> bool:
    return ip is not None and any(ip in network for network in trusted_proxies)
