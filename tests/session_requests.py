"""What the login and session tests share: logging in, a token's digest and row, users with a chosen
password hash, the count of hashes computed."""

from __future__ import annotations

import hashlib
import re
import secrets

import asyncpg
import httpx
from prometheus_client import REGISTRY

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
