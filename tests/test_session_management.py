"""GET /sessions, DELETE /sessions/{id}, POST /logout/all and PUT /users/me/password."""

from __future__ import annotations

import uuid

import asyncpg
import bcrypt
import httpx
import pytest

from chatsvc.config import Settings
from chatsvc.testing import User, assert_error
from chatsvc.tokens import digest


async def log_in(client: httpx.AsyncClient, user: User, user_agent: str | None = None) -> str:
    headers = {} if user_agent is None else {"User-Agent": user_agent}
    response = await client.post("/login", json={"username": user.username, "password": user.password},
                                 headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["token"]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def sessions(client: httpx.AsyncClient, token: str) -> list[dict]:
    response = await client.get("/sessions", headers=auth(token))
    assert response.status_code == 200, response.text
    return response.json()["sessions"]


async def is_valid(client: httpx.AsyncClient, token: str) -> bool:
    status = (await client.get("/users/me", headers=auth(token))).status_code
    assert status in (200, 401)
    return status == 200


async def test_sessions_list_newest_first_with_their_user_agent(
        client: httpx.AsyncClient, settings: Settings, alice: User) -> None:
    phone = await log_in(client, alice, "Phone/1.0")
    laptop = await log_in(client, alice, "Laptop\x7f/2.0 " + "x" * 1000)
    listed = await sessions(client, phone)
    assert len(listed) == 3  # the fixture's login, the phone, the laptop
    assert [s["user_agent"] for s in listed[:2]] == [
        ("Laptop/2.0 " + "x" * 1000)[:settings.session_user_agent_chars], "Phone/1.0"]
    assert [s["current"] for s in listed] == [False, True, False]
    assert [s["created_at"] for s in listed] == sorted((s["created_at"] for s in listed), reverse=True)
    for session in listed:
        assert set(session) == {"id", "created_at", "last_seen_at", "expires_at", "user_agent", "current"}
        uuid.UUID(session["id"])
    assert laptop not in {s["id"] for s in listed}


async def test_a_session_id_cannot_authenticate(client: httpx.AsyncClient, alice: User) -> None:
    (session,) = await sessions(client, alice.token)
    assert session["id"] not in (alice.token, digest(alice.token).hex())
    assert_error(await client.get("/users/me", headers=auth(session["id"])), 401, "unauthorized")


async def test_deleting_a_session_revokes_that_one_only(client: httpx.AsyncClient, alice: User) -> None:
    other = await log_in(client, alice, "Other")
    target = next(s["id"] for s in await sessions(client, alice.token) if s["user_agent"] == "Other")
    response = await client.delete(f"/sessions/{target}", headers=auth(alice.token))
    assert response.status_code == 204, response.text
    assert not await is_valid(client, other)
    assert await is_valid(client, alice.token)
    assert_error(await client.delete(f"/sessions/{target}", headers=auth(alice.token)), 404, "not_found")


async def test_deleting_the_presented_session_logs_it_out(client: httpx.AsyncClient, alice: User) -> None:
    (current,) = await sessions(client, alice.token)
    assert (await client.delete(f"/sessions/{current['id']}", headers=auth(alice.token))).status_code == 204
    assert not await is_valid(client, alice.token)


@pytest.mark.parametrize("wrong", ["not-a-uuid", str(uuid.UUID(int=0)), "x" * 300])
async def test_an_id_that_is_not_the_callers_session_is_404(
        client: httpx.AsyncClient, alice: User, bob: User, wrong: str) -> None:
    response = await client.delete(f"/sessions/{wrong}", headers=auth(alice.token))
    assert_error(response, 404, "not_found")
    assert await is_valid(client, alice.token)


async def test_another_users_session_cannot_be_deleted(
        client: httpx.AsyncClient, alice: User, bob: User) -> None:
    (bobs,) = await sessions(client, bob.token)
    assert_error(await client.delete(f"/sessions/{bobs['id']}", headers=auth(alice.token)), 404, "not_found")
    assert await is_valid(client, bob.token)


async def test_logout_all_revokes_every_session_and_no_one_elses(
        client: httpx.AsyncClient, alice: User, bob: User) -> None:
    second = await log_in(client, alice)
    assert (await client.post("/logout/all", headers=auth(alice.token))).status_code == 204
    assert not await is_valid(client, alice.token)
    assert not await is_valid(client, second)
    assert await is_valid(client, bob.token)
    assert await is_valid(client, await log_in(client, alice))


async def change(client: httpx.AsyncClient, token: str, current: str, new: str) -> httpx.Response:
    return await client.put("/users/me/password", headers=auth(token),
                            json={"current_password": current, "new_password": new})


async def test_a_password_change_revokes_every_other_session_and_rehashes(
        client: httpx.AsyncClient, db: asyncpg.Pool, settings: Settings, alice: User) -> None:
    # A hash from the original service, in the format it stored.
    legacy = bcrypt.hashpw(alice.password.encode(), bcrypt.gensalt(rounds=4)).decode()
    await db.execute("UPDATE users SET password_hash = $2 WHERE id = $1", alice.id, legacy)
    other = await log_in(client, alice)
    response = await change(client, alice.token, alice.password, "a brand new password")
    assert response.status_code == 204, response.text
    assert await is_valid(client, alice.token)
    assert not await is_valid(client, other)
    stored = await db.fetchval("SELECT password_hash FROM users WHERE id = $1", alice.id)
    assert stored.startswith(f"$argon2id$v=19$m={settings.argon2_memory_kib},t={settings.argon2_time_cost},")
    old = await client.post("/login", json={"username": alice.username, "password": alice.password})
    assert_error(old, 401, "unauthorized")
    new = await client.post("/login", json={"username": alice.username, "password": "a brand new password"})
    assert new.status_code == 200


async def test_a_wrong_current_password_is_403_and_changes_nothing(
        client: httpx.AsyncClient, db: asyncpg.Pool, alice: User) -> None:
    other = await log_in(client, alice)
    before = await db.fetchval("SELECT password_hash FROM users WHERE id = $1", alice.id)
    response = await change(client, alice.token, "not my password", "a brand new password")
    assert_error(response, 403, "forbidden")
    assert await db.fetchval("SELECT password_hash FROM users WHERE id = $1", alice.id) == before
    assert await is_valid(client, other)


@pytest.mark.parametrize("body", [
    {"current_password": "x", "new_password": "short"},
    {"current_password": "x", "new_password": "x" * 1025},
    {"current_password": "x", "new_password": "eight\x00chars"},
    {"new_password": "long enough"},
    {"current_password": "", "new_password": "long enough"},
])
async def test_a_bad_change_is_400_and_changes_nothing(
        client: httpx.AsyncClient, db: asyncpg.Pool, alice: User, body: dict) -> None:
    other = await log_in(client, alice)
    before = await db.fetchval("SELECT password_hash FROM users WHERE id = $1", alice.id)
    response = await client.put("/users/me/password", headers=auth(alice.token), json=body)
    assert_error(response, 400, "invalid_request")
    assert await db.fetchval("SELECT password_hash FROM users WHERE id = $1", alice.id) == before
    assert await is_valid(client, other)
