"""Users made through the API itself, and clients of a live server."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import httpx

from chatsvc.testing.servers import ServerProcess

CLIENT_TIMEOUT = 10.0


@dataclass
class User:
    id: int
    username: str
    password: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def sign_up_and_log_in(client: httpx.AsyncClient, username: str | None = None) -> User:
    """A fresh user through the API itself: `POST /users`, then `POST /login`."""
    username = username or f"user-{secrets.token_hex(6)}"
    password = secrets.token_urlsafe(12)
    created = await client.post("/users", json={"username": username, "password": password})
    assert created.status_code == 201, created.text
    login = await client.post("/login", json={"username": username, "password": password})
    assert login.status_code == 200, login.text
    return User(created.json()["id"], username, password, login.json()["token"])


def base_url(server: ServerProcess | str) -> str:
    return server if isinstance(server, str) else server.url


def client_for(server: ServerProcess | str, user: User | None = None, *,
               timeout: float = CLIENT_TIMEOUT, **options: Any) -> httpx.AsyncClient:
    """An httpx client on the server's public listener; sending `user`'s token when given."""
    headers = user.auth if user is not None else {}
    return httpx.AsyncClient(base_url=base_url(server), headers=headers, timeout=timeout,
                             **options)


async def make_users(server: ServerProcess | str, count: int, *,
                     timeout: float = CLIENT_TIMEOUT) -> list[User]:
    """`count` fresh signed-up, logged-in users of a live server."""
    async with client_for(server, timeout=timeout) as client:
        return [await sign_up_and_log_in(client) for _ in range(count)]
