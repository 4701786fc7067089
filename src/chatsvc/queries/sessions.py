"""Sessions: the token check every authenticated statement starts with, login sessions, logout."""

from __future__ import annotations

from chatsvc.config import SessionPolicy
from chatsvc.db import BoundedPool

# A session is valid while neither its absolute nor its idle expiry has passed.
# The idle clock is written only when it is older than the touch interval, so
# a busy client does not turn every read into a write. $1 token hash, $2 idle
# timeout, $3 touch interval (seconds). Every statement that authenticates starts
# with this same text, so that authentication and the work are one round trip.
CALLER = """
WITH caller AS (
    SELECT user_id FROM sessions
    WHERE token_hash = $1
      AND expires_at > now()
      AND last_seen_at > now() - make_interval(secs => $2)
), touch AS (
    UPDATE sessions SET last_seen_at = now()
    WHERE token_hash = $1
      AND last_seen_at < now() - make_interval(secs => $3)
      AND EXISTS (SELECT FROM caller)
)"""

AUTHENTICATE = CALLER + """
SELECT user_id FROM caller
"""

CREATE_SESSION = """
INSERT INTO sessions (token_hash, user_id, expires_at)
VALUES ($1, $2, now() + make_interval(secs => $3))
"""

REVOKE_SESSION = "DELETE FROM sessions WHERE token_hash = $1"


async def user_for_token(db: BoundedPool, token_hash: bytes, policy: SessionPolicy) -> int | None:
    """The id of the user holding a valid session, refreshing its idle clock now and then."""
    user_id: int | None = await db.fetchval(AUTHENTICATE, *caller_parameters(token_hash, policy))
    return user_id


async def create_session(db: BoundedPool, token_hash: bytes, *, user_id: int, policy: SessionPolicy) -> None:
    await db.execute(CREATE_SESSION, token_hash, user_id, policy.lifetime)


async def revoke_session(db: BoundedPool, token_hash: bytes) -> None:
    await db.execute(REVOKE_SESSION, token_hash)


def caller_parameters(token_hash: bytes, policy: SessionPolicy) -> tuple[bytes, float, float]:
    """$1 to $3 of every statement that starts with `CALLER`."""
    return token_hash, policy.idle_timeout, policy.touch_interval
