"""Users: sign-up, the row a login checks, password hash upgrades."""

from __future__ import annotations

from chatsvc import usernames
from chatsvc.db import BoundedPool

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
# before it; the account spelled exactly as typed ($3) first, should both exist.
USER_FOR_LOGIN = """
SELECT id, password_hash FROM users
WHERE (username_key = $1 AND NOT legacy_key) OR (username_key = $2 AND legacy_key)
ORDER BY username = $3 DESC, legacy_key
LIMIT 1
"""

# Guarded by the old hash so two concurrent logins cannot undo each other's upgrade.
REPLACE_PASSWORD_HASH = "UPDATE users SET password_hash = $3 WHERE id = $1 AND password_hash = $2"  # noqa: S105


async def create_user(db: BoundedPool, *, username: str, password_hash: str) -> int | None:
    """The new user's id, or None when the name (or a look-alike) is taken; `username` is valid."""
    key = usernames.account_key(username)
    skeleton = usernames.skeleton(key)
    user_id: int | None = await db.fetchval(CREATE_USER, username, key, skeleton, password_hash)
    return user_id


async def replace_password_hash(db: BoundedPool, user_id: int, *, old: str, new: str) -> None:
    await db.execute(REPLACE_PASSWORD_HASH, user_id, old, new)


