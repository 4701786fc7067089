"""`POST /messages` with an Idempotency-Key: a retry returns the first answer and stores once."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
import pytest

from chatsvc.testing import User, assert_error
from tests.message_requests import (
    ids,
    image,
    listing,
    rows_from,
    send,
    send_text,
    text,
)

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
