"""What the `/messages` tests share: send and list as a user, seed rows directly, content shapes, checks."""

from __future__ import annotations

import re
from typing import Any

import asyncpg
import httpx
import msgspec

from chatsvc.testing import User, assert_error

RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$")
MAX_ID = 2**63 - 1
NO_SUCH_USER = MAX_ID


async def send(client: httpx.AsyncClient, user: User, body: Any,
               headers: dict[str, Any] | None = None) -> httpx.Response:
    """POST /messages as `user`; `body` is encoded unless it is already bytes."""
    content = body if isinstance(body, bytes) else msgspec.json.encode(body)
    return await client.post("/messages", content=content,
                             headers={**user.auth, "Content-Type": "application/json",
                                      **(headers or {})})


async def send_text(client: httpx.AsyncClient, user: User, recipient: int, text: str = "hi",
                    headers: dict[str, Any] | None = None) -> httpx.Response:
    return await send(client, user, {"recipient": recipient,
                                     "content": {"type": "text", "text": text}}, headers)


async def listing(client: httpx.AsyncClient, user: User, /, **params: Any) -> httpx.Response:
    return await client.get("/messages", params=params, headers=user.auth)


async def listing_with_body(client: httpx.AsyncClient, user: User, body: Any,
                            content_type: str | None = "application/json",
                            params: dict[str, Any] | None = None) -> httpx.Response:
    """GET /messages with a JSON body, as the original's own test script does."""
    headers = dict(user.auth)
    if content_type is not None:
        headers["Content-Type"] = content_type
    return await client.request("GET", "/messages", content=msgspec.json.encode(body),
                                params=params, headers=headers)


async def seed(db: asyncpg.Pool, sender: User, recipient: User, count: int) -> list[int]:
    """`count` text messages from `sender` to `recipient`, written directly; their ids in order."""
    rows = await db.fetch(
        """INSERT INTO messages (sender_id, recipient_id, content)
           SELECT $1, $2, json_build_object('type', 'text', 'text', 'message ' || g)
           FROM generate_series(1, $3) g ORDER BY g RETURNING id""",
        sender.id, recipient.id, count)
    return sorted(row["id"] for row in rows)


async def rows_from(db: asyncpg.Pool, sender: User) -> int:
    return await db.fetchval("SELECT count(*) FROM messages WHERE sender_id = $1", sender.id)


def assert_invalid(response: httpx.Response, path: str) -> str:
    """A 400 invalid_request whose message names the field `path`."""
    message = assert_error(response, 400, "invalid_request")
    assert path in message, f"{path!r} not named in {message!r}"
    return message


def ids(page: dict[str, Any]) -> list[int]:
    return [message["id"] for message in page["messages"]]


def text(value: str) -> dict:
    return {"type": "text", "text": value}


def image(url: str = "https://example.com/a.png", **size: Any) -> dict:
    return {"type": "image", "url": url, **size}


def video(url: str = "https://vimeo.com/1", source: str = "vimeo") -> dict:
    return {"type": "video", "url": url, "source": source}
