"""`POST /messages`: each content type is created and listed as sent; who may send to whom."""

from __future__ import annotations

import asyncpg
import httpx
import pytest

from chatsvc.testing import User, assert_error
from tests.message_requests import (
    NO_SUCH_USER,
    RFC3339_UTC,
    ids,
    listing,
    rows_from,
    send,
    send_text,
)

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
