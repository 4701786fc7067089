"""Usernames under PRECIS (RFC 8265) and TR39 confusable skeletons, and the accounts made before."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import argon2
import asyncpg
import httpx
import pytest

from chatsvc import usernames
from chatsvc.app import build_app
from chatsvc.config import Settings
from chatsvc.migrate import default_sql_dir, migrate
from chatsvc.resources import open_resources
from chatsvc.testing import DatabaseFactory, assert_error

FULLWIDTH_OFFSET = 0xFEE0  # "A" + offset is FULLWIDTH LATIN CAPITAL LETTER A
PASSWORD = "correct horse"


def fullwidth(text: str) -> str:
    return "".join(chr(ord(char) + FULLWIDTH_OFFSET) if "!" <= char <= "~" else char for char in text)


async def sign_up(client: httpx.AsyncClient, username: str) -> httpx.Response:
    return await client.post("/users", json={"username": username, "password": PASSWORD})


async def log_in(client: httpx.AsyncClient, username: str) -> httpx.Response:
    return await client.post("/login", json={"username": username, "password": PASSWORD})


async def test_fullwidth_letters_are_width_mapped_into_one_account(client: httpx.AsyncClient) -> None:
    name = f"Wide{secrets.token_hex(4)}"
    created = await sign_up(client, fullwidth(name))
    assert created.status_code == 201, created.text
    assert_error(await sign_up(client, name.lower()), 409, "conflict")
    for spelling in (name, name.upper(), fullwidth(name.lower())):
        login = await log_in(client, spelling)
        assert login.status_code == 200, (spelling, login.text)
        assert login.json()["id"] == created.json()["id"]


@pytest.mark.parametrize("inserted", ["\u200b", "\u200d", "\u202e", "\u2066", "\u00ad"],
                         ids=["zero-width-space", "zero-width-joiner", "bidi-override", "bidi-isolate",
                              "soft-hyphen"])
async def test_invisible_and_bidi_control_characters_are_refused(
        client: httpx.AsyncClient, inserted: str) -> None:
    message = assert_error(await sign_up(client, f"ev{inserted}e-{secrets.token_hex(4)}"), 400,
                           "invalid_request")
    assert message.startswith("username: ") and f"U+{ord(inserted):04X}" in message, message


@pytest.mark.parametrize("template", ["{} {}", "{}  {}", " {}{}", "{}{} "],
                         ids=["single-space", "double-space", "leading", "trailing"])
async def test_spaces_separate_parts_one_at_a_time(client: httpx.AsyncClient, template: str) -> None:
    response = await sign_up(client, template.format("Ada", secrets.token_hex(4)))
    if template == "{} {}":
        assert response.status_code == 201, response.text
    else:
        assert_error(response, 400, "invalid_request")
        assert "username" in response.json()["error"]["message"]


@pytest.mark.parametrize(("original", "look_alike"), [
    ("paypal", "\u0440\u0430ypal"),  # Cyrillic er and a: mixed script
    ("copy", "\u0441\u043e\u0440\u0443"),  # all Cyrillic
    ("rnary", "mary"),  # TR39: "rn" looks like "m"
    ("hello", "he11o"),
    ("bob", "B0B"),  # "0" looks like a capital "O": compared case-insensitively
], ids=["mixed-script", "whole-script", "rn-m", "digit-one", "digit-zero"])
async def test_a_confusable_look_alike_of_an_existing_name_is_409(
        client: httpx.AsyncClient, original: str, look_alike: str) -> None:
    suffix = secrets.token_hex(4)
    assert (await sign_up(client, f"{original}-{suffix}")).status_code == 201
    assert_error(await sign_up(client, f"{look_alike}-{suffix}"), 409, "conflict")


def test_skeletons_follow_unicode_tr39() -> None:
    assert usernames.skeleton("\u0440\u0430ypal") == usernames.skeleton("paypal") == "paypal"
    assert usernames.skeleton("m") == usernames.skeleton("rn")
    assert usernames.skeleton("bob") != usernames.skeleton("bib")


# --- accounts made before the PRECIS rule ---------------------------------------------------------

# Names the old rule (NFC, case-folded, no control characters) accepted, which the new one merges
# differently or refuses: each must keep logging in, spelled exactly as it signed up.
OLD_NAMES = {
    "Straße": "PRECIS keeps ß; the old key folded it to ss",
    "zero\u200bwidth": "a format character the new rule refuses",
    fullwidth("BOB"): "fullwidth, not width-mapped by the old rule",
    "\u01c5emal": "a compatibility character the new rule refuses",
    "two  spaces": "a double space",
}


@pytest.fixture
async def old_accounts(databases: DatabaseFactory, settings: Settings,
                       tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A database with OLD_NAMES created under the old rule, then migrated; a client of the app on it."""
    url = await databases.create()
    before = tmp_path / "sql"
    before.mkdir()
    for path in sorted(default_sql_dir().glob("*.sql")):
        if path.name < "0004":
            shutil.copy(path, before)
    await migrate(url, before)
    hasher = argon2.PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)
    connection = await asyncpg.connect(url)
    try:
        for name in OLD_NAMES:
            await connection.execute(
                "INSERT INTO users (username, username_key, password_hash) VALUES ($1, $2, $3)",
                name, usernames.legacy_key(name), hasher.hash(PASSWORD))
    finally:
        await connection.close()
    await migrate(url)
    async with open_resources(settings.replace(database_url=url)) as resources:
        transport = httpx.ASGITransport(app=build_app(resources))
        async with httpx.AsyncClient(transport=transport, base_url="http://chatsvc") as client:
            client.database_url = url  # type: ignore[attr-defined]
            yield client


async def test_accounts_made_under_the_old_rule_keep_logging_in_with_their_exact_name(
        old_accounts: httpx.AsyncClient) -> None:
    for name, why in OLD_NAMES.items():
        response = await log_in(old_accounts, name)
        assert response.status_code == 200, (name, why, response.text)
    # As the old rule compared them, too.
    assert (await log_in(old_accounts, "STRASSE")).status_code == 200


async def test_new_names_cannot_pose_as_old_accounts(old_accounts: httpx.AsyncClient) -> None:
    connection = await asyncpg.connect(old_accounts.database_url)  # type: ignore[attr-defined]
    try:
        assert await connection.fetchval("SELECT count(*) FROM users WHERE username_skeleton IS NULL") == 0
    finally:
        await connection.close()
    for look_alike in ("straße", "bob", "B0B"):
        assert_error(await sign_up(old_accounts, look_alike), 409, "conflict")
    assert (await sign_up(old_accounts, "Strasse2")).status_code == 201
