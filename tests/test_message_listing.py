"""`GET /messages`: where the parameters come from, their bounds, order and pages."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import pytest

from chatsvc.testing import User
from tests.message_requests import (
    MAX_ID,
    NO_SUCH_USER,
    assert_invalid,
    ids,
    listing,
    listing_with_body,
    seed,
    send_text,
)

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
