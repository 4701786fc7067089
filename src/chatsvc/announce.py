"""Announcing new messages to every process's listener: from the sending process, after commit.

PostgreSQL stays the one source of truth; an announcement only says "messages for users X and Y
may exist" ("id:sender:recipient", space-separated). The handler of `POST /messages` adds the
message it stored, once its statement has committed, and returns; the process's listener
connection (fanout.Fanout) sends whatever gathered meanwhile in one statement, one `NOTIFY` per
payload of fewer than 8000 bytes (PostgreSQL's limit). While that statement is on its way, the
next batch gathers, so a busy process sends one statement per batch of commits, not per message.

Nothing here is needed for correctness: a message never announced (a process that crashed
between commit and announcement, psql, `chatsvc import-original`) is found by each listener's
periodic check of the ids it settled without hearing of them (horizon.Unannounced).
"""

from __future__ import annotations

# PostgreSQL refuses a payload of 8000 bytes or more.
PAYLOAD_BYTES = 7900
# Announcements held while the listener is away; past it one "*" (every stream looks) replaces them.
MAX_WAITING = 100_000
EVERYONE = "*"


class Outbox:
    """The announcements of one process not sent yet."""

    def __init__(self) -> None:
        self._items: list[str] = []
        self._everyone = False

    def __bool__(self) -> bool:
        return self._everyone or bool(self._items)

    def add(self, message_id: int, sender: int, recipient: int) -> None:
        if self._everyone:
            return
        if len(self._items) >= MAX_WAITING:
            self._items.clear()
            self._everyone = True
            return
        self._items.append(f"{message_id}:{sender}:{recipient}")

    def take(self) -> list[str]:
        """The payloads to send (each under PAYLOAD_BYTES); the outbox is then empty."""
        if self._everyone:
            self._everyone, self._items = False, []
            return [EVERYONE]
        items, self._items = self._items, []
        payloads: list[str] = []
        start, size = 0, 0
        for end, item in enumerate(items):
            if size + len(item) + 1 > PAYLOAD_BYTES:
                payloads.append(" ".join(items[start:end]))
                start, size = end, 0
            size += len(item) + 1
        if start < len(items):
            payloads.append(" ".join(items[start:]))
        return payloads
