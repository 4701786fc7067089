"""POST /users: sign-up rules, name uniqueness, how passwords are stored, the error envelope."""

from __future__ import annotations

import asyncio
import secrets
import unicodedata

import argon2
import asyncpg
import httpx
import pytest

from chatsvc.config import Settings
from chatsvc.testing import assert_error


def unique_name(prefix: str = "u") -> str:
    return f"{prefix}-{secrets.token_hex(6)}"


def good_password() -> str:
    return secrets.token_urlsafe(12)


async def sign_up(client: httpx.AsyncClient, username: str, password: str | None = None) -> httpx.Response:
    return await client.post("/users", json={
        "username": username, "password": good_password() if password is None else password})


async def user_row(db: asyncpg.Pool, user_id: int) -> asyncpg.Record:
    row = await db.fetchrow("SELECT * FROM users WHERE id = $1", user_id)
    assert row is not None
    return row


# --- success -----------------------------------------------------------------------------------


async def test_sign_up_answers_201_with_the_new_id(client: httpx.AsyncClient, db: asyncpg.Pool) -> None:
    username = unique_name()
    response = await sign_up(client, username)
    assert response.status_code == 201, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"id"}
    assert type(body["id"]) is int and body["id"] >= 1
    assert (await user_row(db, body["id"]))["username"] == username


async def test_ids_increase(client: httpx.AsyncClient) -> None:
    ids = []
    for _ in range(3):
        response = await sign_up(client, unique_name())
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    assert ids == sorted(ids) and len(set(ids)) == 3


async def test_a_user_can_log_in_with_what_they_signed_up_with(client: httpx.AsyncClient) -> None:
    username, password = unique_name(), good_password()
    created = await sign_up(client, username, password)
    assert created.status_code == 201
    login = await client.post("/login", json={"username": username, "password": password})
    assert login.status_code == 200, login.text
    assert login.json()["id"] == created.json()["id"]


# --- username rules ----------------------------------------------------------------------------


async def test_a_one_character_username_is_accepted(client: httpx.AsyncClient) -> None:
    # A random CJK ideograph: one character, and unlikely to be taken in this session's database.
    response = await sign_up(client, chr(0x4E00 + secrets.randbelow(0x5000)))
    assert response.status_code == 201, response.text


async def test_a_64_character_username_is_accepted(client: httpx.AsyncClient) -> None:
    username = (unique_name() + "x" * 64)[:64]
    response = await sign_up(client, username)
    assert response.status_code == 201, response.text


async def test_length_is_counted_after_nfc(client: httpx.AsyncClient, db: asyncpg.Pool) -> None:
    """65 code points as sent, 64 once `e` + combining acute is composed to `é`."""
    username = (unique_name() + "x" * 64)[:63] + "e\u0301"
    assert len(username) == 65
    assert len(unicodedata.normalize("NFC", username)) == 64
    response = await sign_up(client, username)
    assert response.status_code == 201, response.text
    stored = (await user_row(db, response.json()["id"]))["username"]
    assert unicodedata.normalize("NFC", stored) == unicodedata.normalize("NFC", username)


async def test_a_name_that_grows_past_64_under_nfc_is_rejected(client: httpx.AsyncClient) -> None:
    """U+0958 is excluded from composition: NFC turns each one into two code points."""
    username = "\u0958" * 33
    assert len(unicodedata.normalize("NFC", username)) == 66
    assert "username" in assert_error(await sign_up(client, username), 400, "invalid_request")


@pytest.mark.parametrize("username", ["", "x" * 65, "é" * 65, "e\u0301" * 65],
                         ids=["empty", "65-ascii", "65-composed", "65-decomposed-pairs"])
async def test_a_username_of_0_or_more_than_64_characters_is_rejected(
    client: httpx.AsyncClient, username: str
) -> None:
    assert "username" in assert_error(await sign_up(client, username), 400, "invalid_request")


@pytest.mark.parametrize("control", ["\x01", "\x1f", "\x7f", "\x85", "\x9f", "\n", "\t", "\r"],
                         ids=repr)
async def test_control_characters_in_a_username_are_rejected(
    client: httpx.AsyncClient, control: str
) -> None:
    response = await sign_up(client, f"ab{control}{secrets.token_hex(4)}")
    assert "username" in assert_error(response, 400, "invalid_request")


async def test_a_nul_in_a_username_is_a_400_not_a_5xx(client: httpx.AsyncClient) -> None:
    response = await sign_up(client, f"nul\x00{secrets.token_hex(4)}")
    assert "username" in assert_error(response, 400, "invalid_request")


async def test_a_nul_in_a_password_is_never_a_5xx(client: httpx.AsyncClient) -> None:
    """The password is hashed, never stored as text; a NUL in it must not reach PostgreSQL."""
    username, password = unique_name(), "pass\x00word-" + secrets.token_hex(4)
    response = await sign_up(client, username, password)
    assert response.status_code in (201, 400), response.text
    if response.status_code == 400:
        assert "password" in assert_error(response, 400, "invalid_request")
    else:
        login = await client.post("/login", json={"username": username, "password": password})
        assert login.status_code == 200, login.text


@pytest.mark.parametrize("template", [" {}", "{} ", "  {}  ", "\u00a0{}", "{}\u3000", "{}\u2003"],
                         ids=["leading-space", "trailing-space", "both", "leading-nbsp",
                              "trailing-ideographic-space", "trailing-em-space"])
async def test_leading_or_trailing_whitespace_is_rejected(client: httpx.AsyncClient, template: str) -> None:
    response = await sign_up(client, template.format(unique_name()))
    assert "username" in assert_error(response, 400, "invalid_request")


async def test_inner_spaces_are_allowed(client: httpx.AsyncClient) -> None:
    response = await sign_up(client, f"Ada {secrets.token_hex(4)} Lovelace")
    assert response.status_code == 201, response.text


# --- password rules ----------------------------------------------------------------------------


@pytest.mark.parametrize("password", ["p" * 8, "p" * 1024, "é" * 8, "😀" * 8],
                         ids=["8", "1024", "8-two-byte", "8-four-byte"])
async def test_passwords_of_8_to_1024_characters_are_accepted(
    client: httpx.AsyncClient, password: str
) -> None:
    username = unique_name()
    response = await sign_up(client, username, password)
    assert response.status_code == 201, response.text
    login = await client.post("/login", json={"username": username, "password": password})
    assert login.status_code == 200, login.text


@pytest.mark.parametrize("password", ["p" * 7, "p" * 1025, "😀" * 7, ""],
                         ids=["7", "1025", "7-four-byte", "empty"])
async def test_passwords_outside_8_to_1024_characters_are_rejected(
    client: httpx.AsyncClient, db: asyncpg.Pool, password: str
) -> None:
    username = unique_name()
    assert "password" in assert_error(await sign_up(client, username, password), 400, "invalid_request")
    assert await db.fetchval("SELECT count(*) FROM users WHERE username = $1", username) == 0


# --- uniqueness --------------------------------------------------------------------------------


async def test_a_taken_name_is_409_conflict(client: httpx.AsyncClient) -> None:
    username = unique_name()
    assert (await sign_up(client, username)).status_code == 201
    assert_error(await sign_up(client, username), 409, "conflict")


async def test_names_are_taken_case_insensitively(client: httpx.AsyncClient, db: asyncpg.Pool) -> None:
    suffix = secrets.token_hex(6)
    first = await sign_up(client, f"Alice-{suffix}")
    assert first.status_code == 201
    for variant in (f"alice-{suffix}", f"ALICE-{suffix}", f"aLiCe-{suffix}"):
        assert_error(await sign_up(client, variant), 409, "conflict")
    assert await db.fetchval("SELECT count(*) FROM users WHERE username_key = $1",
                             f"alice-{suffix}") == 1


async def test_names_are_taken_nfc_equivalently(client: httpx.AsyncClient) -> None:
    suffix = secrets.token_hex(6)
    composed, decomposed = f"caf\u00e9-{suffix}", f"cafe\u0301-{suffix}"
    assert composed != decomposed
    assert (await sign_up(client, composed)).status_code == 201
    assert_error(await sign_up(client, decomposed), 409, "conflict")
    assert_error(await sign_up(client, f"CAFE\u0301-{suffix}".upper()), 409, "conflict")


async def test_decomposed_first_then_composed_is_also_a_conflict(client: httpx.AsyncClient) -> None:
    suffix = secrets.token_hex(6)
    assert (await sign_up(client, f"Zoe\u0308-{suffix}")).status_code == 201
    assert_error(await sign_up(client, f"zo\u00eb-{suffix}"), 409, "conflict")


async def test_concurrent_sign_ups_of_one_name_create_one_account(
    client: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    suffix = secrets.token_hex(6)
    variants = [f"Race-{suffix}", f"race-{suffix}", f"RACE-{suffix}", f"rAce-{suffix}", f"racE-{suffix}"]
    responses = await asyncio.gather(*(sign_up(client, name) for name in variants))
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [201, 409, 409, 409, 409], [r.text for r in responses]
    for response in responses:
        if response.status_code == 409:
            assert_error(response, 409, "conflict")
    assert await db.fetchval("SELECT count(*) FROM users WHERE username_key = $1", f"race-{suffix}") == 1


async def test_the_stored_spelling_is_kept(client: httpx.AsyncClient, db: asyncpg.Pool) -> None:
    username = f"MiXeD-Case-{secrets.token_hex(4)}"
    response = await sign_up(client, username)
    assert response.status_code == 201
    row = await user_row(db, response.json()["id"])
    assert row["username"] == username
    assert row["username"] != row["username_key"]


# --- password storage --------------------------------------------------------------------------


async def test_the_password_is_stored_as_an_argon2id_hash_only(
    client: httpx.AsyncClient, db: asyncpg.Pool, settings: Settings
) -> None:
    username, password = unique_name(), good_password()
    response = await sign_up(client, username, password)
    assert response.status_code == 201
    row = await user_row(db, response.json()["id"])
    stored = row["password_hash"]
    assert stored.startswith("$argon2id$")
    assert password not in stored
    assert argon2.PasswordHasher().verify(stored, password)
    parameters = argon2.extract_parameters(stored)
    assert (parameters.time_cost, parameters.memory_cost, parameters.parallelism) == (
        settings.argon2_time_cost, settings.argon2_memory_kib, settings.argon2_parallelism)
    whole_row = await db.fetchval("SELECT row_to_json(u)::text FROM users u WHERE id = $1", row["id"])
    assert password not in whole_row


async def test_two_users_with_one_password_get_different_hashes(
    client: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    password = good_password()
    first = await sign_up(client, unique_name(), password)
    second = await sign_up(client, unique_name(), password)
    hashes = {(await user_row(db, r.json()["id"]))["password_hash"] for r in (first, second)}
    assert len(hashes) == 2


# --- request shape -----------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "field"), [
    ({}, "username"),
    ({"password": "password-1"}, "username"),
    ({"username": "someone"}, "password"),
    ({"username": 1, "password": "password-1"}, "username"),
    ({"username": None, "password": "password-1"}, "username"),
    ({"username": ["a"], "password": "password-1"}, "username"),
    ({"username": "someone", "password": 12345678}, "password"),
    ({"username": "someone", "password": None}, "password"),
    ({"username": "someone", "password": {"p": "password-1"}}, "password"),
], ids=["empty", "no-username", "no-password", "username-int", "username-null", "username-list",
        "password-int", "password-null", "password-object"])
async def test_missing_fields_and_wrong_types_name_the_field(
    client: httpx.AsyncClient, body: dict, field: str
) -> None:
    assert field in assert_error(await client.post("/users", json=body), 400, "invalid_request")


@pytest.mark.parametrize("content", [b"[]", b'"text"', b"null", b"42", b"true"],
                         ids=["array", "string", "null", "number", "bool"])
async def test_a_body_that_is_json_but_not_an_object_is_invalid_request(
    client: httpx.AsyncClient, content: bytes
) -> None:
    assert_error(await client.post("/users", content=content), 400, "invalid_request")


@pytest.mark.parametrize("content", [
    b"username=a&password=bbbbbbbb",
    b"",
    b"{",
    b'{"username": "a", "password": "bbbbbbbb"',
    b'{"username": "\xff\xfe", "password": "bbbbbbbb"}',
    b'{"username": "a\\ud800b", "password": "bbbbbbbb"}',
    b"\x00\x01\x02",
], ids=["form", "empty", "brace", "truncated", "invalid-utf8", "lone-surrogate", "binary"])
async def test_a_body_that_is_not_json_is_invalid_json(client: httpx.AsyncClient, content: bytes) -> None:
    response = await client.post("/users", content=content, headers={"Content-Type": "application/json"})
    assert_error(response, 400, "invalid_json")


async def test_deeply_nested_json_is_never_a_5xx(client: httpx.AsyncClient) -> None:
    depth = 32_000  # 64 000 bytes: under the 64 KiB body limit, far past any recursion limit
    head = f'{{"username": "{unique_name()}", "password": "bbbbbbbb", "x": '.encode()
    closed = await client.post("/users", content=head + b"[" * depth + b"]" * depth + b"}")
    # Ignored as an unknown field, or refused: either way the client's fault is not a 5xx.
    assert closed.status_code in (201, 400), closed.text
    if closed.status_code == 400:
        assert_error(closed, 400, {"invalid_json", "invalid_request"})
    assert_error(await client.post("/users", content=head + b"[" * depth), 400, "invalid_json")


@pytest.mark.parametrize("content_type", [
    "application/x-www-form-urlencoded", "text/plain", "application/octet-stream", None,
])
async def test_json_is_accepted_whatever_the_content_type(
    client: httpx.AsyncClient, content_type: str | None
) -> None:
    content = f'{{"username": "{unique_name()}", "password": "{good_password()}"}}'.encode()
    headers = {"Content-Type": content_type} if content_type else {}
    response = await client.post("/users", content=content, headers=headers)
    assert response.status_code == 201, response.text


async def test_unknown_fields_are_ignored(client: httpx.AsyncClient, db: asyncpg.Pool) -> None:
    username = unique_name()
    response = await client.post("/users", json={
        "username": username, "password": good_password(), "email": "x@example.com",
        "admin": True, "id": 1, "nested": {"a": [1, 2, {"b": None}]}})
    assert response.status_code == 201, response.text
    row = await user_row(db, response.json()["id"])
    assert row["username"] == username


async def test_wrong_method_is_405_in_the_envelope(client: httpx.AsyncClient) -> None:
    response = await client.delete("/users")
    assert_error(response, 405, "method_not_allowed")
    assert {"GET", "POST"} <= set(response.headers["allow"].replace(" ", "").split(","))


async def test_a_trailing_slash_is_the_same_route(client: httpx.AsyncClient) -> None:
    response = await client.post("/users/", json={"username": unique_name(), "password": good_password()})
    assert response.status_code == 201, response.text
