"""Legacy bcrypt and outdated argon2id hashes: verified at login and upgraded; current ones left alone."""

from __future__ import annotations

import secrets

import argon2
import asyncpg
import bcrypt
import httpx
import pytest

from chatsvc.config import Settings
from chatsvc.testing import User
from tests.session_requests import (
    assert_unauthorized,
    insert_user,
    log_in,
    stored_hash,
    unique_name,
)

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
