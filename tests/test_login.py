"""POST /login: who gets a token and who a 401, and the password hashing kept off the event loop."""

from __future__ import annotations

import asyncio
import secrets

import asyncpg
import httpx

from chatsvc.testing import User, assert_error
from tests.session_requests import (
    URL_SAFE_TOKEN,
    assert_unauthorized,
    hash_count,
    log_in,
    token_digest,
    unique_name,
)

# --- login -------------------------------------------------------------------------------------


async def test_login_answers_200_with_id_and_token(client: httpx.AsyncClient) -> None:
    username, password = unique_name(), secrets.token_urlsafe(12)
    created = await client.post("/users", json={"username": username, "password": password})
    assert created.status_code == 201
    response = await log_in(client, username, password)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"id", "token"}
    assert body["id"] == created.json()["id"]
    assert isinstance(body["token"], str) and URL_SAFE_TOKEN.match(body["token"]), body["token"]


async def test_every_login_gets_a_new_token(client: httpx.AsyncClient, alice: User) -> None:
    tokens = {alice.token}
    for _ in range(3):
        response = await log_in(client, alice.username, alice.password)
        assert response.status_code == 200
        tokens.add(response.json()["token"])
    assert len(tokens) == 4


async def test_login_is_case_and_nfc_insensitive_on_the_username(client: httpx.AsyncClient) -> None:
    suffix, password = secrets.token_hex(6), secrets.token_urlsafe(12)
    created = await client.post("/users", json={"username": f"Zo\u00eb-{suffix}", "password": password})
    assert created.status_code == 201
    for spelling in (f"zo\u00eb-{suffix}", f"ZO\u00cb-{suffix}", f"zoe\u0308-{suffix}", f"Zo\u00eb-{suffix}"):
        response = await log_in(client, spelling, password)
        assert response.status_code == 200, (spelling, response.text)
        assert response.json()["id"] == created.json()["id"]


async def test_the_password_is_case_sensitive(client: httpx.AsyncClient, alice: User) -> None:
    assert alice.password.swapcase() != alice.password
    assert_unauthorized(await log_in(client, alice.username, alice.password.swapcase()))


async def test_wrong_password_and_unknown_user_are_indistinguishable(
    client: httpx.AsyncClient, alice: User
) -> None:
    wrong_password = await log_in(client, alice.username, "not-" + alice.password)
    unknown_user = await log_in(client, unique_name("nobody"), alice.password)
    assert_unauthorized(wrong_password)
    assert_unauthorized(unknown_user)
    assert wrong_password.content == unknown_user.content
    assert wrong_password.headers["content-type"] == unknown_user.headers["content-type"]


async def test_the_unknown_user_path_still_verifies_a_hash(client: httpx.AsyncClient, alice: User) -> None:
    before = hash_count()
    assert_unauthorized(await log_in(client, unique_name("nobody"), "whatever-password"))
    assert hash_count() == before + 1
    # ...the same work as a wrong password for a real account.
    before = hash_count()
    assert_unauthorized(await log_in(client, alice.username, "whatever-password"))
    assert hash_count() == before + 1


async def test_a_failed_login_creates_no_session(
    client: httpx.AsyncClient, db: asyncpg.Pool, alice: User
) -> None:
    before = await db.fetchval("SELECT count(*) FROM sessions WHERE user_id = $1", alice.id)
    assert_unauthorized(await log_in(client, alice.username, "not-" + alice.password))
    assert await db.fetchval("SELECT count(*) FROM sessions WHERE user_id = $1", alice.id) == before


async def test_login_accepts_json_whatever_the_content_type(client: httpx.AsyncClient, alice: User) -> None:
    content = f'{{"username": "{alice.username}", "password": "{alice.password}"}}'.encode()
    response = await client.post(
        "/login", content=content, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 200, response.text


async def test_login_with_a_bad_body_is_a_400(client: httpx.AsyncClient) -> None:
    assert_error(await client.post("/login", content=b"username=a&password=b"), 400, "invalid_json")
    missing = assert_error(await client.post("/login", json={"username": "someone"}), 400, "invalid_request")
    assert "password" in missing
    wrong_type = assert_error(
        await client.post("/login", json={"username": 7, "password": "password-1"}), 400, "invalid_request")
    assert "username" in wrong_type


# --- hashing off the event loop ----------------------------------------------------------------


async def test_a_burst_of_logins_succeeds_while_check_keeps_answering(
    client: httpx.AsyncClient, db: asyncpg.Pool, alice: User
) -> None:
    logins = [log_in(client, alice.username, alice.password) for _ in range(10)]
    checks = [client.get("/check") for _ in range(10)]
    responses = await asyncio.gather(*logins, *checks)
    login_responses, check_responses = responses[:10], responses[10:]
    assert [r.status_code for r in login_responses] == [200] * 10, [r.text for r in login_responses]
    assert [(r.status_code, r.text) for r in check_responses] == [(200, "ok")] * 10
    tokens = {r.json()["token"] for r in login_responses}
    assert len(tokens) == 10
    digests = [token_digest(token) for token in tokens]
    assert await db.fetchval(
        "SELECT count(*) FROM sessions WHERE token_hash = ANY($1::bytea[]) AND user_id = $2",
        digests, alice.id) == 10
