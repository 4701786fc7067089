"""What tests/live/test_outage.py sends and records: every request's outcome and latency, a load of
messages and listings, polling a route until its status turns."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from chatsvc.testing import ServerProcess, User

# A client that waits this long has seen a hang; far past every bound above.
CLIENT_TIMEOUT = 15.0
LOAD_CLIENTS = 4
LOAD_PAUSE = 0.02


def text_message(recipient: int, text: str) -> dict[str, Any]:
    return {"recipient": recipient, "content": {"type": "text", "text": text}}


def report(title: str, figures: dict[str, Any]) -> None:
    print(f"\n{title}: " + ", ".join(f"{name}={value}" for name, value in figures.items()))


def assert_unavailable(outcome: Outcome) -> None:
    assert outcome.status == 503, outcome
    assert outcome.body == {"error": {"code": "unavailable", "message": outcome.body["error"]["message"]}}, (
        outcome)
    assert outcome.headers.get("retry-after") == "1", outcome


# --- recording every request ------------------------------------------------------------------

@dataclass
class Outcome:
    method: str
    sender: int
    started: float
    finished: float
    status: int | None  # None: no HTTP answer at all
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    key: str | None = None
    message: dict[str, Any] | None = None
    error: str | None = None

    @property
    def latency(self) -> float:
        return self.finished - self.started


async def timed(client: httpx.AsyncClient, sender: User, method: str, path: str, *,
                key: str | None = None, message: dict[str, Any] | None = None,
                params: dict[str, Any] | None = None) -> Outcome:
    headers = {} if key is None else {"Idempotency-Key": key}
    started = time.monotonic()
    try:
        response = await client.request(method, path, json=message, params=params, headers=headers)
    except httpx.HTTPError as error:
        return Outcome(method, sender.id, started, time.monotonic(), None, key=key, message=message,
                       error=repr(error))
    finished = time.monotonic()
    try:
        body = response.json()
    except ValueError:
        body = response.text
    return Outcome(method, sender.id, started, finished, response.status_code, body,
                   dict(response.headers), key, message)


async def load(server: ServerProcess, user: User, recipient: User, stop: asyncio.Event,
               outcomes: list[Outcome]) -> None:
    """POST a message with a fresh Idempotency-Key, then list the inbox; again until `stop`."""
    run = secrets.token_hex(4)
    async with httpx.AsyncClient(base_url=server.url, headers=user.auth, timeout=CLIENT_TIMEOUT) as client:
        n = 0
        while not stop.is_set():
            key = f"outage-{run}-{user.id}-{n}"
            outcomes.append(await timed(client, user, "POST", "/messages", key=key,
                                        message=text_message(recipient.id, f"message {n} of {user.id}")))
            outcomes.append(await timed(client, user, "GET", "/messages", params={"recipient": user.id}))
            n += 1
            await asyncio.sleep(LOAD_PAUSE)


async def poll(client: httpx.AsyncClient, path: str, until: Callable[[int], bool], bound: float,
               interval: float = 0.02) -> tuple[float | None, list[int]]:
    """Seconds until `until(status)` held (None if not within `bound`), and every status seen."""
    started = time.monotonic()
    seen = []
    while (elapsed := time.monotonic() - started) <= bound:
        status = (await client.get(path)).status_code
        seen.append(status)
        if until(status):
            return elapsed, seen
        await asyncio.sleep(interval)
    return None, seen
