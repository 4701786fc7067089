"""Tokens: read from `Authorization` as the original's clients send them, stored only as SHA-256."""

from __future__ import annotations

import hashlib

import pytest

from chatsvc.tokens import digest, new_token, presented_digest, token_digest

SHA_OF_ABC = hashlib.sha256(b"abc").digest()


@pytest.mark.parametrize(("authorization", "expected"), [
    ("Bearer abc", SHA_OF_ABC),
    ("bearer abc", SHA_OF_ABC),
    ("BEARER   abc  ", SHA_OF_ABC),
    ("abc", SHA_OF_ABC),  # the original's clients send the bare token
    ("  abc ", SHA_OF_ABC),
    ("Bearer", None),
    ("", None),
    ("Bearer a b", None),
    ("a b", None),
    ("Token abc", None),
    ("Bearer " + "x" * 256, hashlib.sha256(b"x" * 256).digest()),
    ("Bearer " + "x" * 257, None),
    ("Bearer ab\x7f", None),
    ("Bearer \u00e9t\u00e9", None),
])
def test_the_token_is_read_from_either_form_of_the_header(authorization: str, expected: bytes | None) -> None:
    assert token_digest(authorization) == expected


def test_a_new_token_is_long_url_safe_and_only_its_digest_is_kept() -> None:
    token, kept = new_token()
    assert len(token) >= 43 and token.replace("-", "").replace("_", "").isalnum()
    assert kept == digest(token) == hashlib.sha256(token.encode()).digest()
    assert new_token()[0] != token


def _scope(*headers: tuple[bytes, bytes]) -> dict[str, object]:
    return {"type": "http", "headers": list(headers)}


def test_the_presented_token_is_the_first_authorization_header() -> None:
    scope = _scope((b"authorization", b"Bearer abc"), (b"authorization", b"Bearer other"))
    assert presented_digest(scope) == SHA_OF_ABC


@pytest.mark.parametrize("headers", [(), ((b"authorization", b"Token abc"),)], ids=["absent", "malformed"])
def test_no_presented_token_is_none(headers: tuple[tuple[bytes, bytes], ...]) -> None:
    assert presented_digest(_scope(*headers)) is None


def test_the_presented_token_is_worked_out_once_per_request() -> None:
    """The rate limiter and the handler share one answer, kept in the scope's state."""
    scope = _scope((b"authorization", b"Bearer abc"))
    assert presented_digest(scope) == SHA_OF_ABC
    scope["headers"] = [(b"authorization", b"Bearer changed")]
    assert presented_digest(scope) == SHA_OF_ABC
    assert presented_digest(_scope((b"authorization", b"Bearer changed"))) != SHA_OF_ABC
