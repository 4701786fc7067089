"""Every request decoder, fed arbitrary JSON and arbitrary bytes: a struct or a 400, never anything else.

The decoders are driven the way the handlers drive them (`chatsvc.api.common.decode` and
`convert`), so what is checked is what a client gets: either a valid struct, or an `ApiError`
400 whose code is `invalid_json`, or `invalid_request` with a message that names a field path of
the struct. About a hundred examples go through the real app too, where the answer is never a 5xx.
Examples are derandomized: every run tries the same ones, and the file stays well under 20 s.
"""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from chatsvc.api.common import convert, decode
from chatsvc.errors import ApiError
from chatsvc.schemas import (
    Credentials,
    Image,
    ListingQuery,
    LoginCredentials,
    NewMessage,
    Text,
    Video,
    credentials_decoder,
    login_decoder,
    new_message_decoder,
)
from chatsvc.testing import User

DIRECT = settings(derandomize=True, database=None, deadline=None, max_examples=400)
THROUGH_THE_APP = settings(derandomize=True, database=None, deadline=None, max_examples=60,
                           suppress_health_check=[HealthCheck.function_scoped_fixture])

DECODERS = [
    pytest.param(credentials_decoder, Credentials, id="credentials"),
    pytest.param(login_decoder, LoginCredentials, id="login"),
    pytest.param(new_message_decoder, NewMessage, id="new-message"),
]
CONTENT_FIELDS = {name for kind in (Text, Image, Video) for name in kind.__struct_fields__} | {"type"}

# --- strategies -------------------------------------------------------------------------------

HUGE_INTEGERS = st.sampled_from([
    2**31 - 1, 2**31, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**100, -(10**400),
])
HOSTILE_CHARACTERS = st.sampled_from(["\x00", "\ud800", "\udfff", "\u0301", "\x7f", "\x85", "\u2028",
                                      "\ufeff", "\U0010ffff", " ", '"', "\\"])
# Surrogates included: a Python str can hold one, and JSON can spell one as `\ud800`.
CHARACTERS = st.characters(exclude_categories=()) | HOSTILE_CHARACTERS
TEXT = st.text(CHARACTERS, max_size=24)
SCALARS = (st.none() | st.booleans() | st.integers() | HUGE_INTEGERS | st.floats() | TEXT)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=12,
)
FIELD_NAMES = st.sampled_from(["username", "password", "recipient", "sender", "content", "start",
                               "limit", *sorted(CONTENT_FIELDS)])
# Right keys, arbitrary values: the shapes that reach past the first type check.
OBJECTS_WITH_KNOWN_KEYS = st.dictionaries(FIELD_NAMES, JSON_VALUES, max_size=6)
IDS = st.integers(min_value=-2, max_value=5) | HUGE_INTEGERS
URLS = st.sampled_from(["https://example.com/a.png", "x", "", "javascript:alert(1)", "a b",
                        "https://e.com/" + "a" * 2034, "https://e.com/" + "a" * 2035]) | TEXT
DIMENSIONS = IDS | st.integers(min_value=32760, max_value=32770)
SOURCES = st.sampled_from(["youtube", "vimeo", "YouTube", ""])
PLAIN_TEXT = st.text(max_size=24)
# Each type with its own fields, values of the right JSON type: these reach every check.
WELL_TYPED_CONTENTS = (
    st.fixed_dictionaries({"type": st.just("text"), "text": PLAIN_TEXT | TEXT})
    | st.fixed_dictionaries({"type": st.just("image"), "url": URLS},
                            optional={"width": DIMENSIONS, "height": DIMENSIONS})
    | st.fixed_dictionaries({"type": st.just("video"), "url": URLS, "source": SOURCES})
)
ANY_CONTENTS = st.fixed_dictionaries({}, optional={
    "type": st.sampled_from(["text", "image", "video"]) | JSON_VALUES,
    "text": TEXT | JSON_VALUES,
    "url": URLS | JSON_VALUES,
    "width": DIMENSIONS | JSON_VALUES,
    "height": DIMENSIONS | JSON_VALUES,
    "source": SOURCES | JSON_VALUES,
    "extra": JSON_VALUES,
})
MESSAGES = (
    st.fixed_dictionaries({"recipient": IDS, "content": WELL_TYPED_CONTENTS}, optional={"sender": IDS})
    | st.fixed_dictionaries({}, optional={
        "recipient": IDS | JSON_VALUES,
        "sender": IDS | JSON_VALUES,
        "content": WELL_TYPED_CONTENTS | ANY_CONTENTS | JSON_VALUES,
        "unknown": JSON_VALUES,
    })
)
PASSWORDS = st.text(CHARACTERS, min_size=6, max_size=10) | st.sampled_from(["p" * 1024, "p" * 1025])
CREDENTIALS = st.fixed_dictionaries({}, optional={
    "username": TEXT | st.sampled_from(["x" * 64, "x" * 65, "e\u0301" * 64]) | JSON_VALUES,
    "password": PASSWORDS | JSON_VALUES,
})
# Query values are text: digits of every script, signs, huge numbers and the rest.
QUERY_TEXT = (st.text(st.characters(categories=["Nd", "No", "Nl"]) | st.sampled_from("0123456789"),
                      min_size=1, max_size=6)
              | st.sampled_from(["-1", "+1", "1.5", "1e3", " 1", "0x10", "9" * 30, "9" * 5000])
              | TEXT)
LISTINGS = st.fixed_dictionaries({}, optional={
    "recipient": IDS | QUERY_TEXT | JSON_VALUES,
    "start": IDS | QUERY_TEXT | JSON_VALUES,
    "limit": st.integers(min_value=-1, max_value=1002) | QUERY_TEXT | JSON_VALUES,
})


@st.composite
def json_documents(draw: st.DrawFn, values: st.SearchStrategy[Any] = JSON_VALUES) -> bytes:
    """A JSON text of `values`, spelt with escapes or raw UTF-8; lone surrogates stay lone."""
    value = draw(values)
    if draw(st.booleans()):
        return json.dumps(value).encode("ascii")  # NaN and Infinity come out as non-JSON tokens
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


BODIES = (json_documents() | json_documents(OBJECTS_WITH_KNOWN_KEYS) | json_documents(MESSAGES)
          | json_documents(CREDENTIALS) | st.binary(max_size=64))

# --- the property -----------------------------------------------------------------------------

_PATH_FIRST = re.compile(r"^(?P<path>[a-z_]+(?:\.[a-z_]+|\[\d+\])*): \S")
_MISSING_FIELD = re.compile(r"^object missing required field `(?P<field>[a-z_]+)`$")
# About the document itself, which is not an object: there is no field to name.
_ROOT = re.compile(r"^(expected `object`, got `[a-z]+`|number out of range)$")


def assert_names_a_field_path(message: str, kind: type[msgspec.Struct]) -> None:
    """The message starts with a path into `kind` (`content.url: …`), or is about the root itself."""
    fields = set(kind.__struct_fields__)
    if match := _PATH_FIRST.match(message):
        first, *rest = re.split(r"[.\[]", match.group("path"))
        assert first in fields, f"{first!r} is not a field of {kind.__name__}: {message!r}"
        if first == "content" and rest:
            assert rest[0] in CONTENT_FIELDS, f"{rest[0]!r} is not a content field: {message!r}"
    elif match := _MISSING_FIELD.match(message):
        assert match.group("field") in fields, message
    else:
        assert _ROOT.match(message), f"no field path in {message!r}"


def assert_struct_or_400(attempt: Any, kind: type[msgspec.Struct]) -> None:
    """`attempt()` returns a `kind`, or raises a 400 ApiError; any other exception fails the test."""
    try:
        value = attempt()
    except ApiError as error:
        assert error.status == 400, (error.status, error.code, error.message)
        assert error.code in ("invalid_request", "invalid_json"), error.code
        if error.code == "invalid_request":
            assert_names_a_field_path(error.message, kind)
        return
    assert type(value) is kind, value
    # The handler encodes what it decoded (content, to store it): that must never fail.
    msgspec.json.encode(value)


@pytest.mark.parametrize(("decoder", "kind"), DECODERS)
@DIRECT
@given(body=BODIES)
def test_every_body_decodes_to_a_struct_or_a_400(
    decoder: msgspec.json.Decoder, kind: type[msgspec.Struct], body: bytes
) -> None:
    assert_struct_or_400(lambda: decode(decoder, body), kind)


@pytest.mark.parametrize(("decoder", "kind", "shapes"), [
    pytest.param(credentials_decoder, Credentials, CREDENTIALS, id="credentials"),
    pytest.param(login_decoder, LoginCredentials, CREDENTIALS, id="login"),
    pytest.param(new_message_decoder, NewMessage, MESSAGES, id="new-message"),
])
@DIRECT
@given(data=st.data())
def test_the_right_keys_with_arbitrary_values_decode_to_a_struct_or_a_400(
    decoder: msgspec.json.Decoder, kind: type[msgspec.Struct], shapes: st.SearchStrategy[Any],
    data: st.DataObject
) -> None:
    body = data.draw(json_documents(shapes))
    assert_struct_or_400(lambda: decode(decoder, body), kind)


@DIRECT
@given(parameters=LISTINGS | OBJECTS_WITH_KNOWN_KEYS)
def test_listing_parameters_convert_to_a_query_or_a_400(parameters: dict[str, Any]) -> None:
    assert_struct_or_400(lambda: convert(parameters, ListingQuery), ListingQuery)


def test_the_strategies_reach_valid_structs_too() -> None:
    """A property that only ever sees rejections proves little: the shapes do produce valid ones."""
    valid = {"credentials": b'{"username": "ada", "password": "correct horse"}',
             "new-message": b'{"recipient": 1, "content": {"type": "image", "url": "x", "width": 32767}}'}
    assert type(decode(credentials_decoder, valid["credentials"])) is Credentials
    assert type(decode(new_message_decoder, valid["new-message"])) is NewMessage
    assert type(convert({"recipient": 1, "limit": 1000}, ListingQuery)) is ListingQuery

    seen: list[str] = []

    @DIRECT
    @given(body=json_documents(MESSAGES))
    def collect(body: bytes) -> None:
        with contextlib.suppress(ApiError):
            seen.append(type(decode(new_message_decoder, body).content).__name__)

    @DIRECT
    @given(body=json_documents(CREDENTIALS))
    def collect_credentials(body: bytes) -> None:
        with contextlib.suppress(ApiError):
            seen.append(type(decode(credentials_decoder, body)).__name__)

    collect()
    collect_credentials()
    assert {"Text", "Image", "Video", "Credentials"} <= set(seen), seen


# --- through the real app ---------------------------------------------------------------------

ROUTES = [("POST", "/users"), ("POST", "/login"), ("POST", "/messages"), ("GET", "/messages")]


def assert_not_5xx(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body


@THROUGH_THE_APP
@given(route=st.sampled_from(ROUTES), body=BODIES | json_documents(LISTINGS))
async def test_no_body_gets_a_5xx_from_the_app(
    client: httpx.AsyncClient, alice: User, route: tuple[str, str], body: bytes
) -> None:
    method, path = route
    headers = {"Content-Type": "application/json", **alice.auth}
    assert_not_5xx(await client.request(method, path, content=body, headers=headers))


QUERY_STRINGS = st.lists(
    st.tuples(st.sampled_from(["recipient", "start", "limit", "other"]), QUERY_TEXT),
    max_size=4,
)


@THROUGH_THE_APP
@given(query=QUERY_STRINGS)
# Digits that str.isdigit() admits and int() refuses, and more digits than int() converts.
@example(query=[("recipient", "\u00b2")])
@example(query=[("recipient", "1"), ("limit", "\u1369")])
@example(query=[("recipient", "1"), ("start", "9" * 5000)])
async def test_no_query_string_gets_a_5xx_from_the_app(
    client: httpx.AsyncClient, alice: User, query: list[tuple[str, str]]
) -> None:
    # Lone surrogates cannot be sent in a URL: httpx would have to encode them.
    query = [(name, value.encode("utf-8", "replace").decode()) for name, value in query]
    response = await client.get("/messages", params=query, headers=alice.auth)
    assert_not_5xx(response)
