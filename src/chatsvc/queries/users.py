"""Users: sign-up, the row a login checks, password hash upgrades and changes, the caller's own
account, looking people up."""

from __future__ import annotations

import asyncpg

from chatsvc import usernames
from chatsvc.config import SessionPolicy
from chatsvc.db import BoundedPool
from chatsvc.queries import sessions
from chatsvc.queries.formats import timestamp_of

# Nothing is inserted when the key ($2) is taken or the skeleton ($3) is an account's already: among
# new accounts a unique index says so, even for two sign-ups racing; accounts from before the
# PRECIS rule (legacy_key) are a fixed set, checked here. sql/0004, chatsvc.usernames.
CREATE_USER = """
INSERT INTO users (username, username_key, username_skeleton, password_hash)
SELECT $1, $2, $3, $4
WHERE NOT EXISTS (SELECT FROM users WHERE legacy_key AND username_skeleton = $3)
ON CONFLICT DO NOTHING
RETURNING id
"""

# Run by queries.login_failures.BEGIN_LOGIN, which counts the attempt in the same statement.
# By the PRECIS key ($1, NULL for a name the rule refuses), or by the old key ($2) for accounts made
# before it; the account spelled exactly as typed ($3) first, should several exist (the original told
# `Alice` and `alice` apart: sql/0007), else the oldest.
USER_FOR_LOGIN = """
SELECT id, password_hash FROM users
WHERE (username_key = $1 AND NOT legacy_key) OR (username_key = $2 AND legacy_key)
ORDER BY username = $3 DESC, legacy_key, id
LIMIT 1
"""

# Guarded by the old hash so two concurrent logins cannot undo each other's upgrade.
REPLACE_PASSWORD_HASH = "UPDATE users SET password_hash = $3 WHERE id = $1 AND password_hash = $2"  # noqa: S105


ME = sessions.CALLER + """
SELECT caller.user_id AS caller, users.username, """ + timestamp_of("users.created_at") + """ AS created_at
FROM caller JOIN users ON users.id = caller.user_id
"""

# The account login would find for the name typed ($6, with its keys $4 and $5: queries'
# USER_FOR_LOGIN); one row, with NULLs when there is none.
USER_BY_NAME = sessions.CALLER + """
SELECT caller.user_id AS caller, found.id, found.username
FROM caller LEFT JOIN LATERAL (
    SELECT id, username FROM users
    WHERE (username_key = $4 AND NOT legacy_key) OR (username_key = $5 AND legacy_key)
    ORDER BY username = $6 DESC, legacy_key, id
    LIMIT 1
) AS found ON true
"""

# The accounts among the ids $4, in their order; one row with NULLs when none exists.
USERS_BY_ID = sessions.CALLER + """
SELECT caller.user_id AS caller, found.id, found.username
FROM caller LEFT JOIN LATERAL (
    SELECT users.id, users.username, asked.n
    FROM unnest($4::bigint[]) WITH ORDINALITY AS asked (id, n) JOIN users ON users.id = asked.id
) AS found ON true
ORDER BY found.n
"""

PASSWORD_HASH = sessions.CALLER + """
SELECT caller.user_id AS caller, users.password_hash
FROM caller JOIN users ON users.id = caller.user_id
"""

# User $1's hash becomes $3 if it still is $2 and session $4 still exists; every other session of
# theirs is revoked. `changed` false: the password or the session changed in between.
CHANGE_PASSWORD = """
WITH changed AS (
    UPDATE users SET password_hash = $3
    WHERE id = $1 AND password_hash = $2
      AND EXISTS (SELECT FROM sessions WHERE token_hash = $4 AND user_id = $1)
    RETURNING id
), revoked AS (
    DELETE FROM sessions
    WHERE user_id = (SELECT id FROM changed) AND token_hash <> $4
    RETURNING token_hash
)
SELECT EXISTS (SELECT FROM changed) AS changed,
       coalesce((SELECT array_agg(token_hash) FROM revoked), '{}') AS revoked
"""  # noqa: S105


async def create_user(db: BoundedPool, *, username: str, password_hash: str) -> int | None:
    """The new user's id, or None when the name (or a look-alike) is taken; `username` is valid."""
    key = usernames.account_key(username)
    skeleton = usernames.skeleton(key)
    user_id: int | None = await db.fetchval(CREATE_USER, username, key, skeleton, password_hash)
    return user_id


async def replace_password_hash(db: BoundedPool, user_id: int, *, old: str, new: str) -> None:
    await db.execute(REPLACE_PASSWORD_HASH, user_id, old, new)


async def me(db: BoundedPool, token_hash: bytes, policy: SessionPolicy) -> asyncpg.Record | None:
    """The caller's own account; None for a token that is not valid."""
    return await db.fetchrow(ME, *sessions.caller_parameters(token_hash, policy))


async def user_by_name(db: BoundedPool, token_hash: bytes, policy: SessionPolicy, *,
                       name: str) -> list[asyncpg.Record]:
    """[] for a token that is not valid, else one row: the caller, and the account or NULLs."""
    return await db.fetch(USER_BY_NAME, *sessions.caller_parameters(token_hash, policy),
                          usernames.login_key(name), usernames.legacy_key(name), name)


async def users_by_id(db: BoundedPool, token_hash: bytes, policy: SessionPolicy, *,
                      ids: list[int]) -> list[asyncpg.Record]:
    """[] for a token that is not valid, else the caller on each row beside an account found."""
    return await db.fetch(USERS_BY_ID, *sessions.caller_parameters(token_hash, policy), ids)


async def password_hash(db: BoundedPool, token_hash: bytes, policy: SessionPolicy) -> asyncpg.Record | None:
    """The caller and their stored hash; None for a token that is not valid."""
    return await db.fetchrow(PASSWORD_HASH, *sessions.caller_parameters(token_hash, policy))


async def change_password(db: BoundedPool, user_id: int, *, old_hash: str, new_hash: str,
                          keep: bytes) -> tuple[bool, list[bytes]]:
    """(changed, the token hashes of the sessions revoked)."""
    row = await db.fetchrow(CHANGE_PASSWORD, user_id, old_hash, new_hash, keep)
    assert row is not None  # the statement always answers one row
    return row["changed"], list(row["revoked"])
