"""`POST /messages`: bad content and bodies are refused naming the field; content at its bounds is kept."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import pytest

from chatsvc.config import Settings
from chatsvc.testing import User, assert_error
from tests.message_requests import (
    assert_invalid,
    image,
    listing,
    rows_from,
    send,
    send_text,
    text,
    video,
)

# --- POST /messages: validation ---------------------------------------------------------------


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
