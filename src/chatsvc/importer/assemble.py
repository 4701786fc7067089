"""The original's rows in chatsvc's terms: a message's content union, an account's keys.

A row that chatsvc's rules cannot express is not guessed at: it comes back with the reason, and
the import lists it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec

from chatsvc import usernames
from chatsvc.passwords import BCRYPT_PREFIXES
from chatsvc.schemas import LOGIN_USERNAME_MAX_CHARS, Content, encoder

# What the original stored when its content insert failed, by type: it answered 201 regardless.
_MISSING = {
    "text": "no content row: the original stored no text for it",
    "image": "no content row: the original failed to store the image (e.g. wider or taller than 32767)",
    "video": "no content row: the original stored no video for it (e.g. a vimeo video)",
}


@dataclass(frozen=True, slots=True)
class Message:
    """A message ready to copy: the content as chatsvc stores it, or why it cannot be."""

    id: int
    content: str | None
    reason: str | None
    type: str | None


def message(row: Mapping[str, Any] | asyncpg.Record) -> Message:
    """The content of one of the original's message rows, checked by the rule of POST /messages."""
    kind = row["type"]
    if row["sender_id"] is None or row["recipient_id"] is None:
        return Message(row["id"], None, "no sender or no recipient", kind)
    if row["created_at"] is None:
        return Message(row["id"], None, "no timestamp", kind)
    match kind:
        case "text":
            fields = {"text": row["text"]}
        case "image":
            fields = {"url": row["image_url"], "width": row["width"], "height": row["height"]}
        case "video":
            fields = {"url": row["video_url"], "source": row["video_source"]}
        case _:
            return Message(row["id"], None, f"unknown message type {kind!r}", kind)
    if (fields.get("text") or fields.get("url")) is None:
        return Message(row["id"], None, _MISSING[kind], kind)
    # A width or height the original left NULL is its default, as in a request without one.
    present = {name: value for name, value in fields.items() if value is not None}
    try:
        content = msgspec.convert({"type": kind, **present}, Content)
    except msgspec.ValidationError as error:
        return Message(row["id"], None, f"refused by chatsvc's rule: {error}", kind)
    return Message(row["id"], encoder.encode(content).decode(), None, kind)


@dataclass(frozen=True, slots=True)
class Account:
    """An account of the original as chatsvc stores it, with what the operator should know."""

    id: int
    username: str
    key: str
    skeleton: str
    password_hash: str
    remarks: tuple[str, ...]


def account(row: Mapping[str, Any] | asyncpg.Record) -> Account:
    """The original's name is kept exactly, with the key of accounts from before the PRECIS rule."""
    name: str = row["username"]
    key = usernames.legacy_key(name)
    remarks = []
    if usernames.login_key(name) is None or not 1 <= len(name) <= usernames.MAX_CHARS:
        remarks.append("the sign-up rule would refuse this name; it logs in with it as it is")
    if not 1 <= len(name) <= LOGIN_USERNAME_MAX_CHARS:
        remarks.append(f"cannot log in: login takes names of 1 to {LOGIN_USERNAME_MAX_CHARS} characters")
    if not str(row["password"]).startswith(BCRYPT_PREFIXES):
        remarks.append("cannot log in: the stored password is not a bcrypt hash")
    return Account(row["id"], name, key, usernames.skeleton_of_account(name, key), row["password"],
                   tuple(remarks))

