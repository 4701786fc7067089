"""GET /users/me and GET /users: who am I, and finding people by name or by ids."""

from __future__ import annotations

import httpx
import pytest

from chatsvc.schemas import MAX_ID
from chatsvc.testing import User, assert_error


async def test_me_is_the_caller_as_signed_up(client: httpx.AsyncClient, new_user) -> None:
    alice: User = await new_user("Alice-" + "x" * 8)
    response = await client.get("/users/me", headers=alice.auth)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["id"], body["username"]) == (alice.id, alice.username)
    assert body["created_at"].endswith("Z")


async def test_a_name_is_found_as_login_compares_it(client: httpx.AsyncClient, new_user, alice: User) -> None:
    bob: User = await new_user("Bob-Finder-" + alice.username[-6:])
    for spelling in (bob.username, bob.username.upper(), bob.username.lower()):
        response = await client.get("/users", params={"username": spelling}, headers=alice.auth)
        assert response.json() == {"users": [{"id": bob.id, "username": bob.username}]}


async def test_a_valid_unknown_name_is_an_empty_list(client: httpx.AsyncClient, alice: User) -> None:
    response = await client.get("/users", params={"username": "nobody-has-this-name"}, headers=alice.auth)
    assert response.json() == {"users": []}


async def test_ids_come_back_in_the_order_asked_without_the_unknown(
        client: httpx.AsyncClient, alice: User, bob: User, carol: User) -> None:
    ids = [carol.id, MAX_ID, alice.id, bob.id, carol.id]
    response = await client.get("/users", params={"id": ids}, headers=alice.auth)
    assert response.status_code == 200, response.text
    assert [user["id"] for user in response.json()["users"]] == [carol.id, alice.id, bob.id]
    assert response.json()["users"][0]["username"] == carol.username


@pytest.mark.parametrize("params", [
    pytest.param({}, id="neither"),
    pytest.param({"username": "bob", "id": 1}, id="both"),
    pytest.param({"id": list(range(1, 102))}, id="101-ids"),
    pytest.param({"id": 0}, id="id-zero"),
    pytest.param({"id": MAX_ID + 1}, id="id-too-large"),
    pytest.param({"id": "x"}, id="id-not-a-number"),
    pytest.param({"username": " bob"}, id="leading-space"),
    pytest.param({"username": "b\x00ob"}, id="nul"),
    pytest.param({"username": "x" * 65}, id="too-long"),
    pytest.param({"username": ["a", "b"]}, id="two-names"),
])
async def test_bad_lookups_are_400(client: httpx.AsyncClient, alice: User, params: dict) -> None:
    response = await client.get("/users", params=params, headers=alice.auth)
    assert_error(response, 400, "invalid_request")


async def test_a_hundred_ids_are_fine(client: httpx.AsyncClient, alice: User) -> None:
    response = await client.get("/users", params={"id": [alice.id, *range(MAX_ID - 98, MAX_ID + 1)]},
                                headers=alice.auth)
    assert response.json() == {"users": [{"id": alice.id, "username": alice.username}]}
