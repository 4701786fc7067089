"""`GET /messages` and `POST /messages`: who may read which messages, and authentication."""

from __future__ import annotations

import asyncpg
import httpx
import pytest

from chatsvc.testing import User, assert_error
from tests.message_requests import (
    ids,
    listing,
    listing_with_body,
    rows_from,
    send,
    send_text,
    text,
)

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
