"""Password guessing spread over many addresses: failed logins counted per account, per cluster.

After `CHATSVC_LOGIN_FAILURES` failed logins of one account within
`CHATSVC_LOGIN_FAILURE_WINDOW`, further logins of that account are 429 (with `Retry-After`) until
the window has passed, whichever addresses they come from, and without a password hash computed.
The count lives in PostgreSQL (sql/0005), so every replica sees the same one.

A login counts as a failure from the moment it starts, in the same statement that looks the
account up, and is taken back when it succeeds: concurrent guesses count before any of them is
decided, and a person who logs in many times is never throttled. A name no account has is
counted under its login key just the same, so a 429 says nothing about whether an account exists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from chatsvc import usernames
from chatsvc.db import BoundedPool
from chatsvc.queries import users

# $1..$3 as users.USER_FOR_LOGIN (PRECIS key, old key, the name as typed); $4 the name's key for
# a name no account has; $5 the window in seconds.
BEGIN_LOGIN = """
WITH found AS (""" + users.USER_FOR_LOGIN + """), counted AS (
    INSERT INTO login_failures AS f (account, failures, window_start)
    SELECT coalesce('#' || (SELECT id FROM found), '=' || $4), 1, now()
    ON CONFLICT (account) DO UPDATE SET
        failures = CASE WHEN f.window_start > now() - make_interval(secs => $5)
                        THEN f.failures + 1 ELSE 1 END,
        window_start = CASE WHEN f.window_start > now() - make_interval(secs => $5)
                            THEN f.window_start ELSE now() END
    RETURNING account, failures,
              extract(epoch FROM f.window_start + make_interval(secs => $5) - now()) AS seconds_left
)
SELECT found.id, found.password_hash, counted.account, counted.failures, counted.seconds_left
FROM counted LEFT JOIN found ON true
"""

# The login succeeded: it was no failure.
LOGIN_SUCCEEDED = "UPDATE login_failures SET failures = failures - 1 WHERE account = $1 AND failures > 0"

# Windows that have passed, a batch at a time (chatsvc.session_cleanup). $1 window, $2 batch.
DELETE_PASSED_WINDOWS = """
DELETE FROM login_failures WHERE account IN (
    SELECT account FROM login_failures
    WHERE window_start < now() - make_interval(secs => $1)
    LIMIT $2
)
"""


@dataclass(frozen=True, slots=True)
class Attempt:
    """A login under way: the account (None: no such name), and whether it may go on."""

    user_id: int | None
    password_hash: str | None
    account: str
    failures: int
    seconds_left: float

    def throttled(self, limit: int) -> bool:
        """More than `limit` logins are counted in the window: this one and the next are refused."""
        return self.failures > limit

    @property
    def retry_after(self) -> int:
        return max(1, math.ceil(self.seconds_left))


async def begin_login(db: BoundedPool, typed: str, window: float) -> Attempt:
    """Look the account up and count this login against it, in one statement."""
    key = usernames.login_key(typed) or usernames.legacy_key(typed)
    row = await db.fetchrow(BEGIN_LOGIN, usernames.login_key(typed), usernames.legacy_key(typed), typed,
                            key, window)
    assert row is not None  # the INSERT always returns its row
    return Attempt(row["id"], row["password_hash"], row["account"], row["failures"],
                   float(row["seconds_left"]))


async def login_succeeded(db: BoundedPool, attempt: Attempt) -> None:
    """Take the attempt back: a successful login is not a failure."""
    await db.execute(LOGIN_SUCCEEDED, attempt.account)


async def delete_passed_windows(db: BoundedPool, window: float, batch: int) -> int:
    """Forget the counts whose window has passed; how many rows went."""
    deleted = 0
    while True:
        status = await db.execute(DELETE_PASSED_WINDOWS, window, batch)
        count = int(status.split()[-1])
        deleted += count
        if count < batch:
            return deleted
