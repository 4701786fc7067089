"""Which address a request is limited by: X-Forwarded-For only from trusted proxies."""

from __future__ import annotations

from typing import Any

import pytest

from chatsvc.middleware.ratelimit import client_address
from tests.ratelimit_fakes import (
    TRUSTED,
)


def scope_from(peer: str, *headers: tuple[str, str]) -> dict[str, Any]:
    return {"type": "http", "client": (peer, 5000),
            "headers": [(name.lower().encode(), value.encode()) for name, value in headers]}


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
