"""Password guessing and hashing floods, against real `chatsvc serve` processes: the per-account
failed-login throttle (whatever the address), and the bounded password-hash queue."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import httpx
import pytest

from chatsvc.testing import (
    DatabaseFactory,
    ServerProcess,
    User,
    assert_error,
    client_for,
    make_users,
    serving,
)
from tests.live.conftest import Launch

FAILURES = 3
SETTINGS = {
    # Every attempt below comes from another address, as a botnet's would.
    "CHATSVC_TRUSTED_PROXIES": "127.0.0.1",
    "CHATSVC_LOGIN_FAILURES": str(FAILURES),
    "CHATSVC_LOGIN_FAILURE_WINDOW": "600",
    "CHATSVC_RATE": "0",
}


@pytest.fixture(scope="module")
async def server(databases: DatabaseFactory, tmp_path_factory: pytest.TempPathFactory
                 ) -> AsyncIterator[ServerProcess]:
    async with serving(databases, tmp_path_factory.mktemp("login") / "serve.log", **SETTINGS) as process:
        yield process


def another_address() -> str:
    return f"198.18.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"


async def log_in(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    return await client.post("/login", json={"username": username, "password": password},
                             headers={"X-Forwarded-For": another_address()})


async def test_failed_logins_of_one_account_from_many_addresses_are_throttled(server: ServerProcess) -> None:
    victim, bystander = await make_users(server, 2)
    async with client_for(server) as client:
        for _ in range(FAILURES):
            assert_error(await log_in(client, victim.username, "wrong guess"), 401, "unauthorized")
        # Even the right password now waits for the window: guessing cannot go on.
        throttled = await log_in(client, victim.username, victim.password)
        assert_error(throttled, 429, "rate_limited")
        assert 1 <= int(throttled.headers["retry-after"]) <= 600
        # Under any spelling login accepts for that account.
        assert_error(await log_in(client, victim.username.upper(), victim.password), 429, "rate_limited")
        # Another account is not concerned.
        assert (await log_in(client, bystander.username, bystander.password)).status_code == 200


async def test_successful_logins_never_count(server: ServerProcess) -> None:
    (user,) = await make_users(server, 1)
    async with client_for(server) as client:
        for _ in range(3 * FAILURES):
            assert (await log_in(client, user.username, user.password)).status_code == 200


async def test_a_name_no_account_has_is_throttled_the_same_way(server: ServerProcess) -> None:
    name = f"nobody-{secrets.token_hex(4)}"
    async with client_for(server) as client:
        statuses = [(await log_in(client, name, "guess")).status_code for _ in range(FAILURES + 1)]
    assert statuses == [401] * FAILURES + [429]


async def test_concurrent_guesses_count_before_any_is_decided(server: ServerProcess) -> None:
    (victim,) = await make_users(server, 1)
    async with client_for(server) as client:
        answers = await asyncio.gather(*(log_in(client, victim.username, f"guess {n}") for n in range(12)))
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [401] * FAILURES + [429] * (12 - FAILURES), statuses


async def test_a_full_hash_queue_answers_503_at_once(launch: Launch) -> None:
    # Real argon2 cost, one hash thread and no queue: concurrent logins cannot all be checked.
    hashing = await launch(cheap_hashing=False, **SETTINGS, CHATSVC_HASH_THREADS="1", CHATSVC_HASH_QUEUE="0")
    users: list[User] = await make_users(hashing, 1)
    async with client_for(hashing) as client:
        answers = await asyncio.gather(*(
            log_in(client, f"nobody-{n}-{secrets.token_hex(3)}", "guess") for n in range(8)))
        statuses = sorted(answer.status_code for answer in answers)
        assert set(statuses) <= {401, 503} and 503 in statuses, statuses
        for answer in answers:
            if answer.status_code == 503:
                assert_error(answer, 503, "unavailable")
                assert answer.headers["retry-after"] == "1"
        # Once the flood has passed, a real login goes through.
        assert (await log_in(client, users[0].username, users[0].password)).status_code == 200
