"""POST /login and /logout, and how a session token is checked, stored, aged and revoked."""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
from datetime import timedelta

import argon2
import asyncpg
import bcrypt
import httpx
import pytest
from prometheus_client import REGISTRY

from chatsvc.config import Settings
from chatsvc.testing import User, assert_error

URL_SAFE_TOKEN = re.compile(r"^[A-Za-z0-9_-]{22,}$")
HASH_COUNT = "chatsvc_password_hash_seconds_count"


def unique_name(prefix: str = "s") -> str:
    return f"{prefix}-{secrets.token_hex(6)}"


def assert_unauthorized(response: httpx.Response) -> None:
    assert_error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].lower().startswith("bearer")


async def log_in(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    return await client.post("/login", json={"username": username, "password": password})


async def list_own_inbox(client: httpx.AsyncClient, user: User, authorization: str | bytes | None = None
                         ) -> httpx.Response:
    """An authenticated request that changes nothing: `GET /messages` for the user's own inbox."""
    value = f"Bearer {user.token}" if authorization is None else authorization
    return await client.get("/messages", params={"recipient": user.id}, headers={"Authorization": value})


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def session_row(db: asyncpg.Pool, token: str) -> asyncpg.Record | None:
    return await db.fetchrow("SELECT * FROM sessions WHERE token_hash = $1", token_digest(token))


async def insert_user(db: asyncpg.Pool, username: str, password_hash: str) -> int:
    """A user row as a migration from the original would leave it; `username` must be lower case."""
    assert username == username.lower()
    return await db.fetchval(
        "INSERT INTO users (username, username_key, password_hash) VALUES ($1, $1, $2) RETURNING id",
        username, password_hash)


async def stored_hash(db: asyncpg.Pool, user_id: int) -> str:
    return await db.fetchval("SELECT password_hash FROM users WHERE id = $1", user_id)


def hash_count() -> float:
    value = REGISTRY.get_sample_value(HASH_COUNT)
    assert value is not None
    return value


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


# --- how the token is stored -------------------------------------------------------------------


async def test_only_the_sha256_of_the_token_is_stored(
    client: httpx.AsyncClient, db: asyncpg.Pool, settings: Settings, alice: User
) -> None:
    rows = await db.fetch("SELECT * FROM sessions WHERE user_id = $1", alice.id)
    assert len(rows) == 1
    row = rows[0]
    assert bytes(row["token_hash"]) == token_digest(alice.token)
    for value in row.values():
        if isinstance(value, bytes | bytearray | memoryview):
            assert alice.token.encode() not in bytes(value)
        else:
            assert alice.token not in str(value)
    whole_row = await db.fetchval(
        "SELECT row_to_json(s)::text FROM sessions s WHERE token_hash = $1", token_digest(alice.token))
    assert alice.token not in whole_row
    assert row["expires_at"] - row["created_at"] == timedelta(seconds=settings.session_lifetime)


# --- legacy and outdated password hashes -------------------------------------------------------


@pytest.mark.parametrize("prefix", ["$2a$", "$2b$", "$2y$"])
async def test_a_bcrypt_hash_is_verified_and_upgraded_to_argon2id(
    client: httpx.AsyncClient, db: asyncpg.Pool, settings: Settings, prefix: str
) -> None:
    username, password = unique_name("legacy"), secrets.token_urlsafe(12)
    # Cost 4 is what the original stored (Go's bcrypt.MinCost).
    legacy = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    assert legacy.startswith("$2b$")
    legacy = prefix + legacy[len("$2b$"):]
    user_id = await insert_user(db, username, legacy)

    response = await log_in(client, username, password)
    assert response.status_code == 200, response.text
    assert response.json()["id"] == user_id

    upgraded = await stored_hash(db, user_id)
    assert upgraded.startswith("$argon2id$")
    assert argon2.PasswordHasher().verify(upgraded, password)
    parameters = argon2.extract_parameters(upgraded)
    assert (parameters.time_cost, parameters.memory_cost, parameters.parallelism) == (
        settings.argon2_time_cost, settings.argon2_memory_kib, settings.argon2_parallelism)

    again = await log_in(client, username, password)
    assert again.status_code == 200, again.text
    assert await stored_hash(db, user_id) == upgraded


@pytest.mark.parametrize("prefix", ["$2a$", "$2b$", "$2y$"])
async def test_a_wrong_password_against_a_bcrypt_hash_is_401_and_keeps_the_hash(
    client: httpx.AsyncClient, db: asyncpg.Pool, prefix: str
) -> None:
    username, password = unique_name("legacy"), secrets.token_urlsafe(12)
    legacy = prefix + bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()[len("$2b$"):]
    user_id = await insert_user(db, username, legacy)
    assert_unauthorized(await log_in(client, username, "not-" + password))
    assert await stored_hash(db, user_id) == legacy


async def test_a_legacy_user_with_a_short_password_can_still_log_in(
    client: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    """The original had no password rules, and every request that worked there must keep working.

    The 8-character minimum is a sign-up rule (docs/API.md, `POST /users`); an account migrated
    from the original may well have a shorter password, and its login worked there.
    """
    username, password = unique_name("legacy"), "sh0rt"
    legacy = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    user_id = await insert_user(db, username, legacy)
    response = await log_in(client, username, password)
    assert response.status_code == 200, response.text
    assert response.json()["id"] == user_id


async def test_an_argon2id_hash_with_outdated_parameters_is_upgraded(
    client: httpx.AsyncClient, db: asyncpg.Pool, settings: Settings
) -> None:
    current = (settings.argon2_time_cost, settings.argon2_memory_kib, settings.argon2_parallelism)
    assert current != (2, 128, 1)
    username, password = unique_name("outdated"), secrets.token_urlsafe(12)
    outdated = argon2.PasswordHasher(time_cost=2, memory_cost=128, parallelism=1).hash(password)
    user_id = await insert_user(db, username, outdated)

    assert_unauthorized(await log_in(client, username, "not-" + password))
    assert await stored_hash(db, user_id) == outdated

    response = await log_in(client, username, password)
    assert response.status_code == 200, response.text
    upgraded = await stored_hash(db, user_id)
    assert upgraded != outdated and upgraded.startswith("$argon2id$")
    parameters = argon2.extract_parameters(upgraded)
    assert (parameters.time_cost, parameters.memory_cost, parameters.parallelism) == current
    assert argon2.PasswordHasher().verify(upgraded, password)

    assert (await log_in(client, username, password)).status_code == 200
    assert await stored_hash(db, user_id) == upgraded


async def test_a_current_hash_is_not_rewritten_at_login(
    client: httpx.AsyncClient, db: asyncpg.Pool, alice: User
) -> None:
    before = await stored_hash(db, alice.id)
    assert (await log_in(client, alice.username, alice.password)).status_code == 200
    assert await stored_hash(db, alice.id) == before


# --- presenting the token ----------------------------------------------------------------------


@pytest.mark.parametrize("template", ["Bearer {}", "bearer {}", "{}"], ids=["Bearer", "bearer", "bare"])
async def test_the_token_is_accepted_with_or_without_the_bearer_scheme(
    client: httpx.AsyncClient, alice: User, template: str
) -> None:
    response = await list_own_inbox(client, alice, template.format(alice.token))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("authorization", [
    "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNzd29yZA==", "Bearer two words", "x" * 300,
    b"Bearer \xc3\xa9t\xc3\xa9", "Bearer null", "undefined",
], ids=["empty", "scheme-only", "scheme-space", "basic", "two-words", "too-long", "non-ascii",
        "null", "undefined"])
async def test_a_garbage_authorization_is_401(
    client: httpx.AsyncClient, alice: User, authorization: str | bytes
) -> None:
    response = await list_own_inbox(client, alice, authorization)
    assert_unauthorized(response)
    assert response.headers["connection"] == "close"


async def test_a_missing_authorization_is_401(client: httpx.AsyncClient, alice: User) -> None:
    response = await client.get("/messages", params={"recipient": alice.id})
    assert_unauthorized(response)
    assert_unauthorized(await client.post("/logout"))


@pytest.mark.parametrize("template", ["Bearer {}", "{}"], ids=["bearer", "bare"])
async def test_an_unknown_token_is_401(client: httpx.AsyncClient, alice: User, template: str) -> None:
    assert_unauthorized(await list_own_inbox(client, alice, template.format(secrets.token_urlsafe(32))))


async def test_a_token_is_case_sensitive(client: httpx.AsyncClient, alice: User) -> None:
    assert alice.token.swapcase() != alice.token
    assert_unauthorized(await list_own_inbox(client, alice, f"Bearer {alice.token.swapcase()}"))


# --- expiry, idle timeout, the idle clock ------------------------------------------------------


async def test_an_expired_session_is_401(client: httpx.AsyncClient, db: asyncpg.Pool, alice: User) -> None:
    assert (await list_own_inbox(client, alice)).status_code == 200
    await db.execute("UPDATE sessions SET expires_at = now() - interval '1 second' WHERE token_hash = $1",
                     token_digest(alice.token))
    assert_unauthorized(await list_own_inbox(client, alice))


async def test_an_idle_session_is_401_and_stays_dead(
    client: httpx.AsyncClient, db: asyncpg.Pool, settings: Settings, alice: User
) -> None:
    digest = token_digest(alice.token)
    idle = settings.session_idle_timeout
    await db.execute(
        "UPDATE sessions SET last_seen_at = now() - make_interval(secs => $2) WHERE token_hash = $1",
        digest, idle - 60)
    assert (await list_own_inbox(client, alice)).status_code == 200

    await db.execute(
        "UPDATE sessions SET last_seen_at = now() - make_interval(secs => $2) WHERE token_hash = $1",
        digest, idle + 5)
    stale = await db.fetchval("SELECT last_seen_at FROM sessions WHERE token_hash = $1", digest)
    assert_unauthorized(await list_own_inbox(client, alice))
    # A rejected request must not refresh the idle clock and so revive the session.
    assert await db.fetchval("SELECT last_seen_at FROM sessions WHERE token_hash = $1", digest) == stale
    assert_unauthorized(await list_own_inbox(client, alice))


async def test_the_idle_clock_is_not_written_within_the_touch_interval(
    client: httpx.AsyncClient, db: asyncpg.Pool, settings: Settings, alice: User
) -> None:
    assert settings.session_touch_interval > 1
    digest = token_digest(alice.token)
    recent = await db.fetchval(
        "UPDATE sessions SET last_seen_at = now() - interval '1 second' WHERE token_hash = $1 "
        "RETURNING last_seen_at", digest)
    for _ in range(3):
        assert (await list_own_inbox(client, alice)).status_code == 200
    assert await db.fetchval("SELECT last_seen_at FROM sessions WHERE token_hash = $1", digest) == recent


async def test_the_idle_clock_is_refreshed_once_older_than_the_touch_interval(
    client: httpx.AsyncClient, db: asyncpg.Pool, settings: Settings, alice: User
) -> None:
    age = settings.session_touch_interval + 5
    assert age < settings.session_idle_timeout
    digest = token_digest(alice.token)
    old = await db.fetchval(
        "UPDATE sessions SET last_seen_at = now() - make_interval(secs => $2) WHERE token_hash = $1 "
        "RETURNING last_seen_at", digest, age)
    before = await db.fetchval("SELECT clock_timestamp()")
    assert (await list_own_inbox(client, alice)).status_code == 200
    after = await db.fetchval("SELECT clock_timestamp()")
    refreshed = await db.fetchval("SELECT last_seen_at FROM sessions WHERE token_hash = $1", digest)
    assert refreshed > old
    assert before <= refreshed <= after


async def test_failed_logins_and_other_sessions_do_not_touch_a_session(
    client: httpx.AsyncClient, db: asyncpg.Pool, alice: User
) -> None:
    digest = token_digest(alice.token)
    old = await db.fetchval(
        "UPDATE sessions SET last_seen_at = now() - interval '10 minutes' WHERE token_hash = $1 "
        "RETURNING last_seen_at", digest)
    assert (await log_in(client, alice.username, alice.password)).status_code == 200
    assert await db.fetchval("SELECT last_seen_at FROM sessions WHERE token_hash = $1", digest) == old


# --- logout ------------------------------------------------------------------------------------


async def test_logout_revokes_the_token(client: httpx.AsyncClient, db: asyncpg.Pool, alice: User) -> None:
    assert (await list_own_inbox(client, alice)).status_code == 200
    response = await client.post("/logout", headers=alice.auth)
    assert response.status_code == 204, response.text
    assert response.content == b""
    assert await session_row(db, alice.token) is None
    assert_unauthorized(await list_own_inbox(client, alice))
    assert_unauthorized(await client.post("/logout", headers=alice.auth))


async def test_logout_with_a_bare_token(client: httpx.AsyncClient, alice: User) -> None:
    assert (await client.post("/logout", headers={"Authorization": alice.token})).status_code == 204
    assert_unauthorized(await list_own_inbox(client, alice, alice.token))


async def test_logout_ends_only_the_presented_session(
    client: httpx.AsyncClient, alice: User, bob: User
) -> None:
    second = await log_in(client, alice.username, alice.password)
    assert second.status_code == 200
    other_device = User(alice.id, alice.username, alice.password, second.json()["token"])

    assert (await client.post("/logout", headers=alice.auth)).status_code == 204
    assert_unauthorized(await list_own_inbox(client, alice))
    assert (await list_own_inbox(client, other_device)).status_code == 200
    assert (await list_own_inbox(client, bob)).status_code == 200


async def test_logging_in_again_after_logout_works(client: httpx.AsyncClient, alice: User) -> None:
    assert (await client.post("/logout", headers=alice.auth)).status_code == 204
    response = await log_in(client, alice.username, alice.password)
    assert response.status_code == 200
    again = User(alice.id, alice.username, alice.password, response.json()["token"])
    assert (await list_own_inbox(client, again)).status_code == 200


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
