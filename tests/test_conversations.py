"""GET /conversations, GET /conversations/{peer}/messages, PUT /conversations/{peer}/read."""

from __future__ import annotations

import httpx
import pytest

from chatsvc.schemas import MAX_ID
from chatsvc.testing import User, assert_error


async def send(client: httpx.AsyncClient, sender: User, recipient: User, text: str = "hi") -> int:
    response = await client.post("/messages", headers=sender.auth,
                                 json={"recipient": recipient.id, "content": {"type": "text", "text": text}})
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def conversations(client: httpx.AsyncClient, user: User, **params: object) -> dict:
    response = await client.get("/conversations", headers=user.auth, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def page(client: httpx.AsyncClient, user: User, peer: User, **params: object) -> dict:
    response = await client.get(f"/conversations/{peer.id}/messages", headers=user.auth, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_conversation_lists_with_its_last_message_unread_count_and_markers(
        client, alice: User, bob: User, carol: User) -> None:
    first = await send(client, alice, bob, "one")
    await send(client, bob, alice, "two")
    await send(client, bob, alice, "three")
    with_carol = await send(client, carol, alice, "from carol")

    listed = await conversations(client, alice)
    assert [c["peer"] for c in listed["conversations"]] == [
        {"id": carol.id, "username": carol.username}, {"id": bob.id, "username": bob.username}]
    assert listed["next_before"] is None
    with_bob = listed["conversations"][1]
    assert with_bob["last_message"]["content"] == {"type": "text", "text": "three"}
    assert (with_bob["unread"], with_bob["last_read"], with_bob["peer_last_read"]) == (2, None, None)
    assert listed["conversations"][0]["last_message"]["id"] == with_carol
    # Bob's side: Alice's one message is unread there.
    (bobs,) = (await conversations(client, bob))["conversations"]
    assert (bobs["peer"]["id"], bobs["unread"]) == (alice.id, 1)

    # Bob reads up to Alice's message: his unread drops, Alice sees the receipt.
    marked = await client.put(f"/conversations/{alice.id}/read", headers=bob.auth, json={"last_read": first})
    assert marked.status_code == 200, marked.text
    assert marked.json() == {"last_read": first, "unread": 0}
    with_bob = (await conversations(client, alice))["conversations"][1]
    assert with_bob["peer_last_read"] == first and with_bob["unread"] == 2


async def test_the_list_pages_by_last_message(client, new_user, alice: User) -> None:
    peers = [await new_user() for _ in range(5)]
    for peer in peers:
        await send(client, peer, alice)
    seen, before = [], None
    while True:
        listed = await conversations(client, alice, limit=2, **({"before": before} if before else {}))
        assert len(listed["conversations"]) <= 2
        seen.extend(c["peer"]["id"] for c in listed["conversations"])
        if listed["next_before"] is None:
            break
        assert listed["next_before"] == listed["conversations"][-1]["last_message"]["id"]
        before = listed["next_before"]
    assert seen == [peer.id for peer in reversed(peers)]


async def test_notes_to_self_are_a_conversation_with_nothing_unread(client, alice: User) -> None:
    note = await send(client, alice, alice, "remember the milk")
    (conversation,) = (await conversations(client, alice))["conversations"]
    assert conversation["peer"]["id"] == alice.id and conversation["unread"] == 0
    shown = await page(client, alice, alice)
    assert [m["id"] for m in shown["messages"]] == [note]
    marked = await client.put(f"/conversations/{alice.id}/read", headers=alice.auth, json={"last_read": note})
    assert marked.json() == {"last_read": note, "unread": 0}


async def test_pages_go_back_from_the_newest_and_forward_from_any_point(
        client, alice: User, bob: User) -> None:
    ids = [await send(client, *(alice, bob) if n % 2 else (bob, alice), f"m{n}") for n in range(7)]
    newest = await page(client, alice, bob, limit=3)
    assert [m["id"] for m in newest["messages"]] == ids[4:]
    assert (newest["older"], newest["newer"]) == (ids[4], None)
    back = await page(client, alice, bob, limit=3, before=newest["older"])
    assert [m["id"] for m in back["messages"]] == ids[1:4]
    assert (back["older"], back["newer"]) == (ids[1], ids[3])
    oldest = await page(client, alice, bob, limit=3, before=back["older"])
    assert [m["id"] for m in oldest["messages"]] == ids[:1]
    assert (oldest["older"], oldest["newer"]) == (None, ids[0])
    forward = await page(client, alice, bob, limit=3, after=oldest["newer"])
    assert [m["id"] for m in forward["messages"]] == ids[1:4]
    assert (forward["older"], forward["newer"]) == (ids[1], ids[3])
    last = await page(client, alice, bob, limit=3, after=ids[3])
    assert [m["id"] for m in last["messages"]] == ids[4:]
    assert (last["older"], last["newer"]) == (ids[4], None)
    # Past either end: an empty page that still points back at the conversation.
    past = await page(client, alice, bob, after=ids[-1])
    assert past == {"messages": [], "older": ids[-1] + 1, "newer": None}
    before_all = await page(client, alice, bob, before=ids[0])
    assert before_all == {"messages": [], "older": None, "newer": ids[0] - 1}
    # Messages look exactly as GET /messages lists them.
    listed = await client.get("/messages", headers=bob.auth, params={"recipient": bob.id})
    assert [m for m in last["messages"] if m["recipient"] == bob.id] == [
        m for m in listed.json()["messages"] if m["id"] in ids[4:]]


async def test_a_conversation_never_written_is_empty(client, alice: User, bob: User, carol: User) -> None:
    await send(client, alice, bob)
    assert await page(client, carol, bob) == {"messages": [], "older": None, "newer": None}


async def test_the_read_marker_only_moves_forward(client, alice: User, bob: User) -> None:
    ids = [await send(client, bob, alice, f"m{n}") for n in range(4)]
    put = lambda last: client.put(f"/conversations/{bob.id}/read", headers=alice.auth,  # noqa: E731
                                  json={"last_read": last})
    assert (await put(ids[2])).json() == {"last_read": ids[2], "unread": 1}
    assert (await put(ids[0])).json() == {"last_read": ids[2], "unread": 1}
    assert (await put(ids[3])).json() == {"last_read": ids[3], "unread": 0}
    mine = (await conversations(client, alice))["conversations"][0]
    assert (mine["last_read"], mine["unread"]) == (ids[3], 0)


async def test_a_marker_for_another_conversations_message_is_404_and_changes_nothing(
        client, alice: User, bob: User, carol: User) -> None:
    await send(client, bob, alice)
    elsewhere = await send(client, carol, bob)
    response = await client.put(f"/conversations/{bob.id}/read", headers=alice.auth,
                                json={"last_read": elsewhere})
    assert_error(response, 404, "not_found")
    mine = (await conversations(client, alice))["conversations"][0]
    assert (mine["last_read"], mine["unread"]) == (None, 1)
    theirs = (await conversations(client, carol))["conversations"][0]
    assert theirs["peer_last_read"] is None


@pytest.mark.parametrize(("path", "params"), [
    ("/conversations/{peer}/messages", {"before": 5, "after": 3}),
    ("/conversations/{peer}/messages", {"before": 0}),
    ("/conversations/{peer}/messages", {"after": -1}),
    ("/conversations/{peer}/messages", {"limit": 201}),
    ("/conversations/{peer}/messages", {"limit": 0}),
    ("/conversations/{peer}/messages", {"before": "x"}),
    ("/conversations/{peer}/messages", {"after": MAX_ID + 1}),
    ("/conversations", {"limit": 201}),
    ("/conversations", {"before": 0}),
    ("/conversations/0/messages", {}),
    (f"/conversations/{MAX_ID + 1}/messages", {}),
])
async def test_bad_parameters_are_400(client, alice: User, bob: User, path: str, params: dict) -> None:
    response = await client.get(path.format(peer=bob.id), headers=alice.auth, params=params)
    assert_error(response, 400, "invalid_request")


async def test_an_unknown_peer_is_404(client, alice: User) -> None:
    assert_error(await client.get(f"/conversations/{MAX_ID}/messages", headers=alice.auth), 404, "not_found")
    response = await client.put(f"/conversations/{MAX_ID}/read", headers=alice.auth, json={"last_read": 1})
    assert_error(response, 404, "not_found")


@pytest.mark.parametrize("body", [{}, {"last_read": 0}, {"last_read": "1"}, {"last_read": MAX_ID + 1}])
async def test_a_bad_marker_is_400(client, alice: User, bob: User, body: dict) -> None:
    response = await client.put(f"/conversations/{bob.id}/read", headers=alice.auth, json=body)
    assert_error(response, 400, "invalid_request")


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/conversations"), ("GET", "/conversations/1/messages?before=1&after=1"),
    ("PUT", "/conversations/1/read")])
async def test_a_bad_token_is_401_before_a_bad_request(client, method: str, path: str) -> None:
    response = await client.request(method, path, headers={"Authorization": "Bearer nope"}, content=b"{")
    assert_error(response, 401, "unauthorized")
