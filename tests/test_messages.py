"""`POST /messages` and `GET /messages`: content types, validation, idempotency, paging, privacy."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest

from chatsvc.config import Settings
from chatsvc.testing import User, assert_error

RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$")
MAX_ID = 2**63 - 1
NO_SUCH_USER = MAX_ID


async def send(client: httpx.AsyncClient, user: User, body: Any,
               headers: dict[str, Any] | None = None) -> httpx.Response:
    """POST /messages as `user`; `body` is encoded unless it is already bytes."""
    content = body if isinstance(body, bytes) else msgspec.json.encode(body)
    return await client.post("/messages", content=content,
                             headers={**user.auth, "Content-Type": "application/json",
                                      **(headers or {})})


async def send_text(client: httpx.AsyncClient, user: User, recipient: int, text: str = "hi",
                    headers: dict[str, Any] | None = None) -> httpx.Response:
    return await send(client, user, {"recipient": recipient,
                                     "content": {"type": "text", "text": text}}, headers)


async def listing(client: httpx.AsyncClient, user: User, /, **params: Any) -> httpx.Response:
    return await client.get("/messages", params=params, headers=user.auth)


async def listing_with_body(client: httpx.AsyncClient, user: User, body: Any,
                            content_type: str | None = "application/json",
                            params: dict[str, Any] | None = None) -> httpx.Response:
    """GET /messages with a JSON body, as the original's own test script does."""
    headers = dict(user.auth)
    if content_type is not None:
        headers["Content-Type"] = content_type
    return await client.request("GET", "/messages", content=msgspec.json.encode(body),
                                params=params, headers=headers)


async def seed(db: asyncpg.Pool, sender: User, recipient: User, count: int) -> list[int]:
    """`count` text messages from `sender` to `recipient`, written directly; their ids in order."""
    rows = await db.fetch(
        """INSERT INTO messages (sender_id, recipient_id, content)
           SELECT $1, $2, json_build_object('type', 'text', 'text', 'message ' || g)
           FROM generate_series(1, $3) g ORDER BY g RETURNING id""",
        sender.id, recipient.id, count)
    return sorted(row["id"] for row in rows)


async def rows_from(db: asyncpg.Pool, sender: User) -> int:
    return await db.fetchval("SELECT count(*) FROM messages WHERE sender_id = $1", sender.id)


def assert_invalid(response: httpx.Response, path: str) -> str:
    """A 400 invalid_request whose message names the field `path`."""
    message = assert_error(response, 400, "invalid_request")
    assert path in message, f"{path!r} not named in {message!r}"
    return message


def ids(page: dict[str, Any]) -> list[int]:
    return [message["id"] for message in page["messages"]]


# --- POST /messages: content types ------------------------------------------------------------

CONTENTS = [
    pytest.param({"type": "text", "text": "hello, world"},
                 {"type": "text", "text": "hello, world"}, id="text"),
    pytest.param({"type": "text", "text": "snowman ☃ and \"quotes\" \\ and 🎉"},
                 {"type": "text", "text": "snowman ☃ and \"quotes\" \\ and 🎉"}, id="text-unicode"),
    pytest.param({"type": "image", "url": "https://example.com/a.png", "width": 640, "height": 480},
                 {"type": "image", "url": "https://example.com/a.png", "width": 640, "height": 480},
                 id="image-sized"),
    pytest.param({"type": "image", "url": "https://example.com/a.png"},
                 {"type": "image", "url": "https://example.com/a.png", "width": 64, "height": 64},
                 id="image-default-size"),
    pytest.param({"type": "image", "url": "https://example.com/a.png", "width": 100},
                 {"type": "image", "url": "https://example.com/a.png", "width": 100, "height": 64},
                 id="image-default-height"),
    pytest.param({"type": "image", "url": "https://example.com/a.png", "height": 7},
                 {"type": "image", "url": "https://example.com/a.png", "width": 64, "height": 7},
                 id="image-default-width"),
    pytest.param({"type": "video", "url": "https://youtu.be/dQw4w9WgXcQ", "source": "youtube"},
                 {"type": "video", "url": "https://youtu.be/dQw4w9WgXcQ", "source": "youtube"},
                 id="video-youtube"),
    pytest.param({"type": "video", "url": "https://vimeo.com/76979871", "source": "vimeo"},
                 {"type": "video", "url": "https://vimeo.com/76979871", "source": "vimeo"},
                 id="video-vimeo"),
]


@pytest.mark.parametrize(("sent", "stored"), CONTENTS)
async def test_each_content_type_is_created_and_listed_as_sent(
    client: httpx.AsyncClient, alice: User, bob: User, sent: dict, stored: dict
) -> None:
    created = await send(client, alice, {"recipient": bob.id, "content": sent})

    assert created.status_code == 201, created.text
    assert created.headers["content-type"].split(";")[0] == "application/json"
    body = created.json()
    assert set(body) == {"id", "timestamp"}
    assert isinstance(body["id"], int) and body["id"] >= 1
    assert RFC3339_UTC.match(body["timestamp"]), body["timestamp"]

    page = (await listing(client, bob, recipient=bob.id)).json()
    assert page == {
        "messages": [{"id": body["id"], "timestamp": body["timestamp"], "sender": alice.id,
                      "recipient": bob.id, "content": stored}],
        "next_start": None,
    }


async def test_ids_increase_and_timestamps_do_not_go_back(
    client: httpx.AsyncClient, alice: User, bob: User
) -> None:
    bodies = [(await send_text(client, alice, bob.id, f"n{i}")).json() for i in range(3)]

    assert [b["id"] for b in bodies] == sorted({b["id"] for b in bodies})
    stamps = [b["timestamp"] for b in bodies]
    assert stamps == sorted(stamps)


# --- POST /messages: sender and recipient -----------------------------------------------------

async def test_sender_equal_to_the_caller_is_accepted(
    client: httpx.AsyncClient, alice: User, bob: User
) -> None:
    response = await send(client, alice, {"sender": alice.id, "recipient": bob.id,
                                          "content": {"type": "text", "text": "me"}})

    assert response.status_code == 201, response.text
    [message] = (await listing(client, bob, recipient=bob.id)).json()["messages"]
    assert message["sender"] == alice.id


async def test_sending_as_another_user_is_forbidden_and_stores_nothing(
    client: httpx.AsyncClient, db: asyncpg.Pool, alice: User, bob: User, carol: User
) -> None:
    response = await send(client, alice, {"sender": carol.id, "recipient": bob.id,
                                          "content": {"type": "text", "text": "forged"}})

    assert_error(response, 403, "forbidden")
    assert await rows_from(db, alice) == 0
    assert await rows_from(db, carol) == 0


async def test_an_unknown_recipient_is_not_found_and_stores_nothing(
    client: httpx.AsyncClient, db: asyncpg.Pool, alice: User
) -> None:
    response = await send_text(client, alice, NO_SUCH_USER)

    message = assert_error(response, 404, "not_found")
    assert "recipient" in message
    assert await rows_from(db, alice) == 0


async def test_sending_to_oneself_is_allowed(client: httpx.AsyncClient, alice: User) -> None:
    created = await send_text(client, alice, alice.id, "note to self")

    assert created.status_code == 201, created.text
    page = (await listing(client, alice, recipient=alice.id)).json()
    assert ids(page) == [created.json()["id"]]
    assert page["messages"][0]["sender"] == page["messages"][0]["recipient"] == alice.id


# --- POST /messages: validation ---------------------------------------------------------------

def text(value: str) -> dict:
    return {"type": "text", "text": value}


def image(url: str = "https://example.com/a.png", **size: Any) -> dict:
    return {"type": "image", "url": url, **size}


def video(url: str = "https://vimeo.com/1", source: str = "vimeo") -> dict:
    return {"type": "video", "url": url, "source": source}


INVALID_CONTENTS = [
    pytest.param({"type": "gif", "url": "https://x/a.gif"}, "content.type", id="unknown-type"),
    pytest.param({"text": "no type"}, "content", id="missing-type"),
    pytest.param(text(""), "content.text", id="empty-text"),
    pytest.param(text("a\x00b"), "content.text", id="nul-in-text"),
    pytest.param({"type": "text"}, "content", id="missing-text"),
    pytest.param(image(width=0), "content.width", id="width-0"),
    pytest.param(image(width=32768), "content.width", id="width-32768"),
    pytest.param(image(height=0), "content.height", id="height-0"),
    pytest.param(image(height=32768), "content.height", id="height-32768"),
    pytest.param(image(width=-1), "content.width", id="width-negative"),
    pytest.param(image(width="64"), "content.width", id="width-string"),
    pytest.param(image(""), "content.url", id="url-empty"),
    pytest.param(image("https://example.com/a b.png"), "content.url", id="url-space"),
    pytest.param(image("https://example.com/a\tb.png"), "content.url", id="url-tab"),
    pytest.param(image("https://example.com/a.png\n"), "content.url", id="url-newline"),
    pytest.param(image("https://example.com/\x00"), "content.url", id="url-nul"),
    pytest.param(image("https://example.com/\x7f"), "content.url", id="url-del"),
    pytest.param(image("https://example.com/\x85"), "content.url", id="url-c1-control"),
    pytest.param(image("https://example.com/\u00a0x"), "content.url", id="url-nbsp"),
    pytest.param(image("https://e.com/" + "a" * 2035), "content.url", id="url-2049"),
    pytest.param(image("javascript:alert(1)"), "content.url", id="scheme-javascript"),
    pytest.param(image("JavaScript:alert(1)"), "content.url", id="scheme-javascript-mixed-case"),
    pytest.param(image("data:text/html,<script>alert(1)</script>"), "content.url",
                 id="scheme-data"),
    pytest.param(image("ftp://example.com/a.png"), "content.url", id="scheme-ftp"),
    pytest.param(video("javascript:alert(1)", "youtube"), "content.url", id="video-scheme"),
    pytest.param(video("//cdn.example.com/v.mp4", "youtube"), "content.url", id="url-protocol-relative"),
    pytest.param(image("//evil.example/a.png"), "content.url", id="url-protocol-relative-image"),
    pytest.param(image("//evil\u3002example/a.png"), "content.url", id="url-protocol-relative-idn-dot"),
    pytest.param(image("//localhost/a.png"), "content.url", id="url-protocol-relative-localhost"),
    pytest.param(image("//2130706433/a.png"), "content.url", id="url-protocol-relative-number"),
    pytest.param(image("//0x7f000001"), "content.url", id="url-protocol-relative-hex-number"),
    pytest.param(image("//evil:8080/a.png"), "content.url", id="url-protocol-relative-port"),
    pytest.param(image("//[::1]/a.png"), "content.url", id="url-protocol-relative-ip-literal"),
    pytest.param(image("//u@evil/a.png"), "content.url", id="url-protocol-relative-userinfo"),
    pytest.param(image("https://example.com\\@evil.example/"), "content.url", id="url-backslash"),
    pytest.param(image("\\\\evil.example\\a.png"), "content.url", id="url-backslash-unc"),
    pytest.param(image("https://user:pass@example.com/a.png"), "content.url", id="url-userinfo"),
    pytest.param(image("http://example.com@evil.example/"), "content.url", id="url-userinfo-lookalike"),
    pytest.param(video(source="dailymotion"), "content.source", id="video-source-dailymotion"),
    pytest.param({"type": "video", "url": "https://vimeo.com/1"}, "content", id="video-no-source"),
    pytest.param(image(widht=10), "content", id="unknown-field-in-image"),
    pytest.param({**text("hi"), "bold": True}, "content", id="unknown-field-in-text"),
    pytest.param({**video(), "autoplay": True}, "content", id="unknown-field-in-video"),
]


@pytest.mark.parametrize(("content", "path"), INVALID_CONTENTS)
async def test_invalid_content_is_rejected_naming_the_field(
    client: httpx.AsyncClient, db: asyncpg.Pool, alice: User, bob: User, content: dict, path: str
) -> None:
    response = await send(client, alice, {"recipient": bob.id, "content": content})

    assert_invalid(response, path)
    assert await rows_from(db, alice) == 0


async def test_an_unknown_type_has_the_documented_message(
    client: httpx.AsyncClient, alice: User, bob: User
) -> None:
    response = await send(client, alice, {"recipient": bob.id, "content": {"type": "sticker"}})

    message = assert_error(response, 400, "invalid_request")
    assert message == "content.type: expected one of 'text', 'image', 'video'"


async def test_an_unknown_field_inside_content_is_named(
    client: httpx.AsyncClient, alice: User, bob: User
) -> None:
    response = await send(client, alice, {"recipient": bob.id, "content": image(widht=10)})

    assert "widht" in assert_invalid(response, "content")


@pytest.mark.parametrize(("content", "path"), [
    pytest.param(image("https://example.com/a b.png"), "content.url", id="url-whitespace"),
    pytest.param(image("ftp://example.com/a.png"), "content.url", id="url-scheme"),
    pytest.param(image("https://e.com/" + "a" * 2035), "content.url", id="url-length"),
    pytest.param(image(width=0), "content.width", id="width"),
    pytest.param(video(source="dailymotion"), "content.source", id="source"),
    pytest.param(text(""), "content.text", id="text-empty"),
    pytest.param(text("a\x00b"), "content.text", id="text-nul"),
])
async def test_a_validation_message_starts_with_the_field_path(
    client: httpx.AsyncClient, alice: User, bob: User, content: dict, path: str
) -> None:
    """The shape of docs/API.md's example, `<path>: <what is wrong>`, so a client can split it."""
    response = await send(client, alice, {"recipient": bob.id, "content": content})

    message = assert_invalid(response, path)
    assert message.startswith(f"{path}: "), message
    assert not message[len(path) + 2:].startswith(path), f"path repeated in {message!r}"


async def test_text_of_exactly_the_limit_is_accepted_and_one_more_is_rejected(
    client: httpx.AsyncClient, db: asyncpg.Pool, settings: Settings, alice: User, bob: User
) -> None:
    # A two-byte character: the limit counts characters, not bytes.
    longest = "é" * settings.max_text_chars

    accepted = await send_text(client, alice, bob.id, longest)
    rejected = await send_text(client, alice, bob.id, longest + "é")

    assert accepted.status_code == 201, accepted.text
    assert_invalid(rejected, "content.text")
    assert await rows_from(db, alice) == 1
    [message] = (await listing(client, bob, recipient=bob.id)).json()["messages"]
    assert message["content"] == {"type": "text", "text": longest}


VALID_CONTENTS = [
    pytest.param(image(width=1, height=1), id="size-1"),
    pytest.param(image(width=32767, height=32767), id="size-32767"),
    pytest.param(image("https://e.com/" + "a" * 2034), id="url-2048"),
    pytest.param(image("x"), id="url-1"),
    pytest.param(image("https://example.com/path?q=1&r=%20#frag"), id="url-https"),
    pytest.param(image("http://example.com/a.png"), id="url-http"),
    pytest.param(image("HTTPS://EXAMPLE.COM/A.PNG"), id="url-https-upper"),
    pytest.param(image("abc/def=="), id="url-schemeless-base64"),
    pytest.param(image("a+b/c@d=="), id="url-schemeless-base64-at-sign"),
    # `openssl rand -base64 12`, as the original's script sends, starts with `//` once in 4096.
    pytest.param(image("//q3+Zk8Lr0aBcXyZ"), id="url-schemeless-base64-double-slash"),
    pytest.param(image("https://example.com/@alice/a.png"), id="url-at-sign-in-path"),
    pytest.param(video("https://youtu.be/x", "youtube"), id="video"),
    pytest.param(text(" "), id="text-space"),
    pytest.param(text("line\nbreak\ttab"), id="text-controls-other-than-nul"),
]


@pytest.mark.parametrize("content", VALID_CONTENTS)
async def test_boundary_content_is_accepted_and_stored_as_sent(
    client: httpx.AsyncClient, alice: User, bob: User, content: dict
) -> None:
    response = await send(client, alice, {"recipient": bob.id, "content": content})

    assert response.status_code == 201, response.text
    [message] = (await listing(client, bob, recipient=bob.id)).json()["messages"]
    assert {**message["content"], **content} == message["content"]


async def test_unknown_top_level_fields_are_ignored(
    client: httpx.AsyncClient, alice: User, bob: User
) -> None:
    response = await send(client, alice, {"recipient": bob.id, "content": text("hi"),
                                          "priority": "high", "thread": {"id": 3}, "id": 1})

    assert response.status_code == 201, response.text
    [message] = (await listing(client, bob, recipient=bob.id)).json()["messages"]
    assert message["content"] == text("hi")
    assert message["id"] == response.json()["id"] != 1


@pytest.mark.parametrize("recipient", [
    pytest.param(0, id="zero"),
    pytest.param(-1, id="negative"),
    pytest.param(-(2**63), id="int64-min"),
    pytest.param("1", id="string"),
    pytest.param(2**63, id="2**63"),
    pytest.param(2**64, id="2**64"),
    pytest.param(True, id="true"),
    pytest.param(False, id="false"),
    pytest.param(1.5, id="float"),
    pytest.param(None, id="null"),
    pytest.param([1], id="array"),
])
async def test_a_bad_recipient_is_rejected(
    client: httpx.AsyncClient, db: asyncpg.Pool, alice: User, recipient: Any
) -> None:
    response = await send(client, alice, {"recipient": recipient, "content": text("hi")})

    assert_invalid(response, "recipient")
    assert await rows_from(db, alice) == 0


@pytest.mark.parametrize(("body", "path"), [
    pytest.param({"content": {"type": "text", "text": "hi"}}, "recipient", id="no-recipient"),
    pytest.param({"recipient": 1}, "content", id="no-content"),
    pytest.param({"recipient": 1, "content": "hi"}, "content", id="content-a-string"),
    pytest.param({"recipient": 1, "content": text("hi"), "sender": 0}, "sender", id="sender-zero"),
    pytest.param({"recipient": 1, "content": text("hi"), "sender": "1"}, "sender",
                 id="sender-string"),
])
async def test_a_malformed_message_is_rejected(
    client: httpx.AsyncClient, alice: User, body: dict, path: str
) -> None:
    assert_invalid(await send(client, alice, body), path)


# --- POST /messages: Idempotency-Key ----------------------------------------------------------

async def test_a_retry_with_the_same_key_returns_the_first_answer_and_stores_once(
    client: httpx.AsyncClient, db: asyncpg.Pool, alice: User, bob: User
) -> None:
    key = {"Idempotency-Key": "retry-1"}

    first = await send_text(client, alice, bob.id, "once", key)
    second = await send_text(client, alice, bob.id, "once", key)

    assert first.status_code == second.status_code == 201, (first.text, second.text)
    assert second.content == first.content
    assert await rows_from(db, alice) == 1
    assert ids((await listing(client, bob, recipient=bob.id)).json()) == [first.json()["id"]]


@pytest.mark.parametrize(("first", "retry"), [
    pytest.param(b'{"recipient": %d, "content": {"type": "text", "text": "hi"}}',
                 b'{ "content" : { "text" : "hi" , "type" : "text" } ,\n "recipient" : %d }',
                 id="reordered-and-respaced"),
    pytest.param(b'{"recipient": %d, "content": {"type": "text", "text": "h\\u0069"}}',
                 b'{"recipient": %d, "content": {"type": "text", "text": "hi"}}',
                 id="escaped-character"),
    pytest.param(b'{"recipient": %d, "content": {"type": "image", "url": "u"}}',
                 b'{"recipient": %d, "content": {"type": "image", "url": "u", "width": 64,'
                 b' "height": 64}}',
                 id="defaults-spelled-out"),
    pytest.param(b'{"recipient": %d, "content": {"type": "text", "text": "hi"}}',
                 b'{"recipient": %d, "content": {"type": "text", "text": "hi"}, "extra": 1}',
                 id="ignored-top-level-field"),
])
async def test_a_retry_is_compared_as_decoded_values_not_bytes(
    client: httpx.AsyncClient, db: asyncpg.Pool, alice: User, bob: User, first: bytes,
    retry: bytes
) -> None:
    key = {"Idempotency-Key": "decoded-compare"}

    original = await send(client, alice, first % bob.id, key)
    replay = await send(client, alice, retry % bob.id, key)

    assert original.status_code == 201, original.text
    assert replay.status_code == 201, replay.text
    assert replay.json() == original.json()
    assert await rows_from(db, alice) == 1


async def test_a_retry_naming_the_sender_explicitly_is_the_same_request(
    client: httpx.AsyncClient, db: asyncpg.Pool, alice: User, bob: User
) -> None:
    key = {"Idempotency-Key": "explicit-sender"}

    original = await send(client, alice, {"recipient": bob.id, "content": text("hi")}, key)
    replay = await send(client, alice, {"sender": alice.id, "recipient": bob.id,
                                        "content": text("hi")}, key)

    assert replay.status_code == 201, replay.text
    assert replay.json() == original.json()
    assert await rows_from(db, alice) == 1


@pytest.mark.parametrize("change", ["text", "type", "recipient"])
async def test_the_same_key_for_a_different_request_is_a_conflict(
    client: httpx.AsyncClient, db: asyncpg.Pool, alice: User, bob: User, carol: User, change: str
) -> None:
    key = {"Idempotency-Key": "conflicting"}
    different = {
        "text": {"recipient": bob.id, "content": text("something else")},
        "type": {"recipient": bob.id, "content": image("hi")},
        "recipient": {"recipient": carol.id, "content": text("hi")},
    }[change]

    original = await send(client, alice, {"recipient": bob.id, "content": text("hi")}, key)
    reused = await send(client, alice, different, key)

    assert original.status_code == 201, original.text
    assert_error(reused, 409, "conflict")
    assert await rows_from(db, alice) == 1
    assert (await listing(client, carol, recipient=carol.id)).json()["messages"] == []


async def test_the_same_key_from_another_sender_is_independent(
    client: httpx.AsyncClient, db: asyncpg.Pool, alice: User, bob: User, carol: User
) -> None:
    key = {"Idempotency-Key": "shared-key"}

    from_alice = await send_text(client, alice, carol.id, "hi", key)
    from_bob = await send_text(client, bob, carol.id, "hi", key)

    assert from_alice.status_code == from_bob.status_code == 201
    assert from_alice.json()["id"] != from_bob.json()["id"]
    assert await rows_from(db, alice) == await rows_from(db, bob) == 1


async def test_without_a_key_identical_requests_are_separate_messages(
    client: httpx.AsyncClient, db: asyncpg.Pool, alice: User, bob: User
) -> None:
    first = await send_text(client, alice, bob.id, "twice")
    second = await send_text(client, alice, bob.id, "twice")

    assert first.json()["id"] != second.json()["id"]
    assert await rows_from(db, alice) == 2


async def test_racing_retries_with_one_key_create_one_message(
    client: httpx.AsyncClient, db: asyncpg.Pool, alice: User, bob: User
) -> None:
    key = {"Idempotency-Key": "race"}

    responses = await asyncio.gather(
        *(send_text(client, alice, bob.id, "racing", key) for _ in range(10)))

    assert [r.status_code for r in responses] == [201] * 10, [r.text for r in responses]
    assert len({r.content for r in responses}) == 1
    assert await rows_from(db, alice) == 1


@pytest.mark.parametrize("key", [
    pytest.param(b"", id="empty"),
    pytest.param(b"k" * 256, id="256-chars"),
    pytest.param("clé".encode(), id="non-ascii"),
    pytest.param(b"with space", id="space"),
    pytest.param(b"tab\there", id="tab"),
    pytest.param(b"del\x7f", id="del"),
    pytest.param(b"trailing-newline\n", id="trailing-newline"),
])
async def test_an_invalid_idempotency_key_is_rejected(
    client: httpx.AsyncClient, db: asyncpg.Pool, alice: User, bob: User, key: bytes
) -> None:
    response = await send_text(client, alice, bob.id, "hi", {"Idempotency-Key": key})

    assert "Idempotency-Key" in assert_error(response, 400, "invalid_request")
    assert await rows_from(db, alice) == 0


@pytest.mark.parametrize("key", ["k" * 255, "!", "~" * 3, "550e8400-e29b-41d4-a716-446655440000"])
async def test_a_key_of_visible_ascii_up_to_255_chars_is_accepted(
    client: httpx.AsyncClient, alice: User, bob: User, key: str
) -> None:
    first = await send_text(client, alice, bob.id, "hi", {"Idempotency-Key": key})
    retry = await send_text(client, alice, bob.id, "hi", {"Idempotency-Key": key})

    assert first.status_code == retry.status_code == 201, first.text
    assert retry.json() == first.json()


# --- GET /messages: where the parameters come from --------------------------------------------

async def test_parameters_are_read_from_the_query_string(
    client: httpx.AsyncClient, db: asyncpg.Pool, alice: User, bob: User
) -> None:
    sent = await seed(db, alice, bob, 5)

    response = await listing(client, bob, recipient=bob.id, start=sent[1], limit=2)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].split(";")[0] == "application/json"
    assert response.json()["next_start"] == sent[3]
    assert ids(response.json()) == sent[1:3]


@pytest.mark.parametrize("content_type", [
    "application/json", "application/x-www-form-urlencoded", "text/plain", None,
])
async def test_parameters_are_read_from_a_json_body_whatever_the_content_type(
    client: httpx.AsyncClient, db: asyncpg.Pool, alice: User, bob: User, content_type: str | None
) -> None:
    sent = await seed(db, alice, bob, 5)

    response = await listing_with_body(
        client, bob, {"recipient": bob.id, "start": sent[1], "limit": 2}, content_type)

    assert response.status_code == 200, response.text
    assert ids(response.json()) == sent[1:3]
    assert response.json()["next_start"] == sent[3]


async def test_the_query_wins_over_the_body_parameter_by_parameter(
    client: httpx.AsyncClient, db: asyncpg.Pool, alice: User, bob: User, carol: User
) -> None:
    sent = await seed(db, alice, bob, 6)

    # recipient from the query, start from the body, limit from the query over the body.
    response = await listing_with_body(
        client, bob, {"recipient": carol.id, "start": sent[2], "limit": 1},
        params={"recipient": bob.id, "limit": 2})

    assert response.status_code == 200, response.text
    assert ids(response.json()) == sent[2:4]


async def test_a_body_fills_in_what_the_query_leaves_out(
    client: httpx.AsyncClient, db: asyncpg.Pool, alice: User, bob: User
) -> None:
    sent = await seed(db, alice, bob, 4)

    response = await listing_with_body(client, bob, {"recipient": bob.id}, params={"limit": 1})

    assert ids(response.json()) == sent[:1]
    assert response.json()["next_start"] == sent[1]


@pytest.mark.parametrize(("params", "body"), [
    pytest.param({}, None, id="nothing"),
    pytest.param({"start": 0}, None, id="query-without-recipient"),
    pytest.param({}, {}, id="empty-body"),
    pytest.param({}, {"start": 0, "limit": 5}, id="body-without-recipient"),
    pytest.param({}, {"to": 1, "recipient_id": 1}, id="misnamed"),
])
async def test_a_missing_recipient_is_rejected_naming_it(
    client: httpx.AsyncClient, alice: User, params: dict, body: dict | None
) -> None:
    if body is None:
        response = await listing(client, alice, **params)
    else:
        response = await listing_with_body(client, alice, body, params=params)

    assert_invalid(response, "recipient")


# --- GET /messages: bounds --------------------------------------------------------------------

@pytest.mark.parametrize(("params", "path"), [
    pytest.param({"limit": 1001}, "limit", id="limit-1001"),
    pytest.param({"limit": -1}, "limit", id="limit-negative"),
    pytest.param({"limit": "ten"}, "limit", id="limit-word"),
    pytest.param({"start": -1}, "start", id="start-negative"),
    pytest.param({"start": 2**63}, "start", id="start-2**63"),
    pytest.param({"start": "x"}, "start", id="start-word"),
    pytest.param({"recipient": 0}, "recipient", id="recipient-zero"),
    pytest.param({"recipient": -5}, "recipient", id="recipient-negative"),
    pytest.param({"recipient": 2**63}, "recipient", id="recipient-2**63"),
    pytest.param({"recipient": "bob"}, "recipient", id="recipient-word"),
])
@pytest.mark.parametrize("where", ["query", "body"])
async def test_out_of_range_parameters_are_rejected_naming_them(
    client: httpx.AsyncClient, alice: User, params: dict, path: str, where: str
) -> None:
    merged = {"recipient": alice.id, **params}
    if where == "query":
        response = await listing(client, alice, **merged)
    else:
        response = await listing_with_body(client, alice, merged)

    assert_invalid(response, path)


@pytest.mark.parametrize("value", [True, 1.5, [1], {"id": 1}])
async def test_a_non_integer_recipient_in_the_body_is_rejected(
    client: httpx.AsyncClient, alice: User, value: Any
) -> None:
    assert_invalid(await listing_with_body(client, alice, {"recipient": value}), "recipient")


async def test_a_limit_of_1000_is_allowed(
    client: httpx.AsyncClient, db: asyncpg.Pool, alice: User, bob: User
) -> None:
    sent = await seed(db, alice, bob, 1001)

    page = (await listing(client, bob, recipient=bob.id, limit=1000)).json()

    assert ids(page) == sent[:1000]
    assert page["next_start"] == sent[1000]


@pytest.mark.parametrize("params", [
    pytest.param({"limit": 0}, id="limit-0"),
    pytest.param({}, id="no-limit"),
])
async def test_the_default_page_is_100(
    client: httpx.AsyncClient, db: asyncpg.Pool, alice: User, bob: User, params: dict
) -> None:
    sent = await seed(db, alice, bob, 101)

    page = (await listing(client, bob, recipient=bob.id, **params)).json()

    assert ids(page) == sent[:100]
    assert page["next_start"] == sent[100]


# --- GET /messages: order and pages -----------------------------------------------------------

async def test_messages_are_ascending_by_id_from_start_inclusive(
    client: httpx.AsyncClient, db: asyncpg.Pool, alice: User, bob: User, carol: User
) -> None:
    # Interleave two senders so that id order, not sender, decides.
    sent = []
    for i in range(3):
        sent.append((await send_text(client, alice, bob.id, f"a{i}")).json()["id"])
        sent.append((await send_text(client, carol, bob.id, f"c{i}")).json()["id"])

    everything = (await listing(client, bob, recipient=bob.id)).json()
    from_third = (await listing(client, bob, recipient=bob.id, start=sent[2])).json()
    between = (await listing(client, bob, recipient=bob.id, start=sent[2] + 1)).json()

    assert ids(everything) == sent
    assert [m["content"]["text"] for m in everything["messages"]] == [
        "a0", "c0", "a1", "c1", "a2", "c2"]
    assert ids(from_third) == sent[2:]
    assert ids(between) == [i for i in sent if i >= sent[2] + 1]


@pytest.mark.parametrize(("limit", "expected_next"), [(2, 2), (4, 4), (5, None), (6, None)])
async def test_next_start_is_the_first_message_that_did_not_fit(
    client: httpx.AsyncClient, db: asyncpg.Pool, alice: User, bob: User, limit: int,
    expected_next: int | None
) -> None:
    sent = await seed(db, alice, bob, 5)

    page = (await listing(client, bob, recipient=bob.id, limit=limit)).json()

    assert ids(page) == sent[:limit]
    assert page["next_start"] == (None if expected_next is None else sent[expected_next])


async def test_walking_pages_returns_every_message_once_in_order(
    client: httpx.AsyncClient, db: asyncpg.Pool, alice: User, bob: User
) -> None:
    sent = await seed(db, alice, bob, 10)

    seen: list[int] = []
    pages = 0
    start: int | None = 0
    while start is not None:
        page = (await listing(client, bob, recipient=bob.id, start=start, limit=3)).json()
        assert 0 < len(page["messages"]) <= 3
        seen.extend(ids(page))
        start = page["next_start"]
        pages += 1
        assert pages <= 4

    assert seen == sent
    assert pages == 4


@pytest.mark.parametrize("past", [1, 1000, MAX_ID])
async def test_a_start_past_the_newest_message_is_an_empty_last_page(
    client: httpx.AsyncClient, db: asyncpg.Pool, alice: User, bob: User, past: int
) -> None:
    sent = await seed(db, alice, bob, 3)
    start = min(sent[-1] + past, MAX_ID)

    page = (await listing(client, bob, recipient=bob.id, start=start)).json()

    assert page == {"messages": [], "next_start": None}


async def test_an_empty_inbox_is_an_empty_list(client: httpx.AsyncClient, alice: User) -> None:
    page = (await listing(client, alice, recipient=alice.id)).json()

    assert page == {"messages": [], "next_start": None}


async def test_an_unknown_recipient_yields_an_empty_list(
    client: httpx.AsyncClient, alice: User
) -> None:
    response = await listing(client, alice, recipient=NO_SUCH_USER)

    assert response.status_code == 200, response.text
    assert response.json() == {"messages": [], "next_start": None}


# --- GET /messages: who may read --------------------------------------------------------------

@pytest.fixture
async def alices_inbox(
    client: httpx.AsyncClient, alice: User, bob: User, carol: User
) -> dict[str, list[int]]:
    """Bob and Carol each sent Alice two messages, interleaved; their ids by sender."""
    sent: dict[str, list[int]] = {"bob": [], "carol": []}
    for i in range(2):
        for name, user in (("bob", bob), ("carol", carol)):
            response = await send_text(client, user, alice.id, f"{name} {i}")
            sent[name].append(response.json()["id"])
    return sent


async def test_the_recipient_reads_every_message_to_them(
    client: httpx.AsyncClient, alice: User, bob: User, carol: User,
    alices_inbox: dict[str, list[int]]
) -> None:
    page = (await listing(client, alice, recipient=alice.id)).json()

    assert ids(page) == sorted(alices_inbox["bob"] + alices_inbox["carol"])
    assert {m["sender"] for m in page["messages"]} == {bob.id, carol.id}


@pytest.mark.parametrize("reader", ["bob", "carol"])
async def test_another_reader_sees_only_what_they_sent_to_that_recipient(
    client: httpx.AsyncClient, alice: User, bob: User, carol: User,
    alices_inbox: dict[str, list[int]], reader: str
) -> None:
    user = {"bob": bob, "carol": carol}[reader]

    page = (await listing(client, user, recipient=alice.id)).json()

    assert ids(page) == alices_inbox[reader]
    assert {m["sender"] for m in page["messages"]} == {user.id}


async def test_paging_another_inbox_counts_only_the_readers_own_messages(
    client: httpx.AsyncClient, alice: User, carol: User, alices_inbox: dict[str, list[int]]
) -> None:
    page = (await listing(client, carol, recipient=alice.id, limit=1)).json()

    assert ids(page) == alices_inbox["carol"][:1]
    assert page["next_start"] == alices_inbox["carol"][1]


async def test_a_stranger_sees_nothing_of_another_inbox(
    client: httpx.AsyncClient, new_user, alice: User, alices_inbox: dict[str, list[int]]
) -> None:
    stranger = await new_user()

    page = (await listing(client, stranger, recipient=alice.id)).json()

    assert page == {"messages": [], "next_start": None}


@pytest.mark.parametrize("field", ["sender", "sender_id", "from", "user", "as", "only_from"])
@pytest.mark.parametrize("where", ["query", "body"])
async def test_no_parameter_opens_another_inbox(
    client: httpx.AsyncClient, alice: User, bob: User, carol: User,
    alices_inbox: dict[str, list[int]], field: str, where: str
) -> None:
    for value in (alice.id, bob.id):
        parameters = {"recipient": alice.id, field: value}
        if where == "query":
            response = await listing(client, carol, **parameters)
        else:
            response = await listing_with_body(client, carol, parameters)
        assert response.status_code in (200, 400), response.text
        if response.status_code == 200:
            assert ids(response.json()) == alices_inbox["carol"]


async def test_a_forged_sender_cannot_plant_messages_to_read_them_back(
    client: httpx.AsyncClient, alice: User, bob: User, alices_inbox: dict[str, list[int]]
) -> None:
    forged = await send(client, bob, {"sender": alice.id, "recipient": alice.id,
                                      "content": text("let me in")})

    assert forged.status_code == 403
    assert ids((await listing(client, bob, recipient=alice.id)).json()) == alices_inbox["bob"]


# --- authentication ---------------------------------------------------------------------------

@pytest.mark.parametrize("authorization", [
    pytest.param(None, id="no-header"),
    pytest.param("", id="empty"),
    pytest.param("Bearer", id="bearer-without-token"),
    pytest.param("Bearer not-a-real-token", id="unknown-token"),
    pytest.param("Basic YWxpY2U6c2VjcmV0", id="basic"),
])
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_unauthenticated_requests_are_401(
    client: httpx.AsyncClient, db: asyncpg.Pool, alice: User, authorization: str | None,
    method: str
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    if method == "GET":
        response = await client.get("/messages", params={"recipient": alice.id}, headers=headers)
    else:
        response = await client.post("/messages", headers=headers, json={
            "sender": alice.id, "recipient": alice.id, "content": text("hi")})

    assert_error(response, 401, "unauthorized")
    assert await rows_from(db, alice) == 0


@pytest.mark.parametrize("scheme", ["Bearer {}", "bearer {}", "{}"])
async def test_bearer_and_bare_tokens_are_both_accepted(
    client: httpx.AsyncClient, alice: User, scheme: str
) -> None:
    headers = {"Authorization": scheme.format(alice.token)}

    sent = await client.post("/messages", headers=headers,
                             json={"recipient": alice.id, "content": text("hi")})
    listed = await client.get("/messages", params={"recipient": alice.id}, headers=headers)

    assert sent.status_code == 201, sent.text
    assert ids(listed.json()) == [sent.json()["id"]]
