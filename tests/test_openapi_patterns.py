"""The OpenAPI patterns that stand in for `__post_init__` rules agree with the structs themselves."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatsvc import schemas

# --- the patterns say what __post_init__ checks ------------------------------------------------

def _accepted(kind: type, **fields: Any) -> bool:
    try:
        msgspec.convert(fields, kind)
    except msgspec.ValidationError:
        return False
    return True


def _ecma(pattern: str) -> re.Pattern[str]:
    """`pattern` as JSON Schema reads it: ECMA-262's closing `$` is the end of the text, while Python's
    also matches before a final newline."""
    assert pattern.startswith("^") and pattern.endswith("$")
    return re.compile(pattern[:-1] + r"\Z")


def _matches(pattern: str, text: str) -> bool:
    return _ecma(pattern).search(text) is not None


def test_the_character_classes_agree_with_the_checks_on_every_code_point() -> None:
    def matching(pattern: re.Pattern[str]) -> set[int]:
        return {code_point for code_point in range(0x110000) if pattern.match(chr(code_point))}

    assert matching(re.compile(f"[{schemas._JSON_CONTROL}]")) == matching(schemas._CONTROL)
    assert matching(re.compile(f"[{schemas._JSON_SPACE_OR_CONTROL}]")) == matching(
        schemas._WHITESPACE_OR_CONTROL)


def test_the_patterns_agree_with_the_checks_character_by_character() -> None:
    """A lone character, and one between two others, decide where the classes stand in a pattern."""
    username, url = _ecma(schemas.USERNAME_PATTERN), _ecma(schemas.URL_PATTERN)
    # Every space and control character is below U+3001; past it, a few stand for the rest.
    for code_point in [*range(0x3001), 0xFEFF, 0xFFFD, 0x1F600, 0x10FFFF]:
        char = chr(code_point)
        if 0xD800 <= code_point <= 0xDFFF or unicodedata.normalize("NFC", char) != char:
            continue  # no JSON text carries a lone surrogate; NFC has its own test below
        alone_ok = not schemas._WHITESPACE_OR_CONTROL.match(char)
        assert (username.search(char) is not None) == alone_ok, hex(code_point)
        assert (username.search(f"a{char}a") is not None) == (not schemas._CONTROL.match(char))
        # A backslash is refused anywhere; "//" names no host, and so no protocol-relative reference.
        url_ok = alone_ok and char != "\\"
        assert (url.search(f"/{char}") is not None) == url_ok, hex(code_point)
        assert (url.search(f"/{char}") is not None) == _accepted(
            schemas.Image, type="image", url=f"/{char}")


@settings(max_examples=400, derandomize=True, deadline=None)
@given(st.text(st.sampled_from("aZé0 \t\u3000\u00a0\x00\x1f\x85-_.\u0301\u212b"), max_size=70))
def test_the_username_pattern_admits_every_name_sign_up_accepts(username: str) -> None:
    """The pattern is a necessary condition only: PRECIS refuses more than a pattern can say."""
    accepted = _accepted(schemas.Credentials, username=username, password="p" * 8)
    if accepted:
        assert _matches(schemas.USERNAME_PATTERN, username)


@settings(max_examples=600, derandomize=True, deadline=None)
@given(st.text(st.sampled_from("hHtTpPsSaZ09xX+.-:/?#@%[\\ é\x00\x7f\u3000\u3002"), max_size=14))
def test_the_url_pattern_agrees_with_the_url_rules(url: str) -> None:
    documented_ok = _matches(schemas.URL_PATTERN, url) and len(url) >= 1
    assert documented_ok == _accepted(schemas.Image, type="image", url=url)
    assert documented_ok == _accepted(schemas.Video, type="video", url=url, source="vimeo")


@pytest.mark.parametrize("text", ["", "a", "a\x00b", "\x00", "ok text"])
def test_the_no_nul_pattern_agrees_with_the_nul_rule(text: str) -> None:
    documented_ok = _matches(schemas.NO_NUL_PATTERN, text)
    assert _accepted(schemas.Text, type="text", text=text) == (documented_ok and text != "")
    assert _accepted(schemas.LoginCredentials, username=text, password="x") == (documented_ok and text != "")
    assert _accepted(schemas.Credentials, username="name", password=text * 8) == (
        documented_ok and text != "")
