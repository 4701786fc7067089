"""Messages: sending (authenticated in the same statement), idempotent replays, listing pages."""

from __future__ import annotations

from dataclasses import dataclass

from chatsvc.config import SessionPolicy
from chatsvc.db import BoundedPool
from chatsvc.queries import sessions
from chatsvc.queries.formats import timestamp_of

# A message exactly as the API shows it, built beside the rows: the stored content goes out as it
# was stored, and no message is decoded and re-encoded in Python. Timestamps are RFC 3339 in UTC
# with microseconds; the 201 of a send and every later listing or event format the same instant
# with the same expression, so they are the same string.
TIMESTAMP = timestamp_of("created_at")
MESSAGE_JSON = (
    """'{"id":' || id || ',"timestamp":"' || """ + TIMESTAMP
    + """ || '","sender":' || sender_id || ',"recipient":' || recipient_id"""
    + """ || ',"content":' || content || '}'"""
)

# No row: the token is not valid. Otherwise the caller, and the new message unless the sender
# check ($7) failed or the idempotency key ($6) was used. Sends within one pair of users take a
# transaction lock on the pair first and their id only then, so that ids in one conversation
# commit in id order; a message actually stored then moves its conversation's row (the insert
# of a retry stores nothing and moves nothing). $4 recipient, $5 content.
#
# The id is taken here rather than by the column's PL/pgSQL default (sql/0002, kept for other
# writers), which cost every send a function call: the same order, the transaction's xid first
# (the watermark needs it, chatsvc.horizon), then nextval. `in_turn` is materialised (it calls a
# volatile function), so its row, xid included, exists before the insert's row is built, and
# nextval's argument depends on that xid. tests/test_message_ids.py checks the order.
SEND_MESSAGE = sessions.CALLER + """, in_turn AS (
    SELECT user_id, pg_advisory_xact_lock(hashint8(least(user_id, $4)), hashint8(greatest(user_id, $4))),
           pg_current_xact_id() AS xid
    FROM caller
    WHERE $7::bigint IS NULL OR $7 = user_id
), sent AS (
    INSERT INTO messages (id, sender_id, recipient_id, content, idempotency_key)
    SELECT nextval(CASE WHEN xid IS NOT NULL THEN 'messages_id_seq'::regclass END), user_id, $4, $5, $6
    FROM in_turn
    ON CONFLICT (sender_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id, sender_id, recipient_id, """ + TIMESTAMP + """ AS timestamp
), counted AS (
    INSERT INTO conversations AS c (low_id, high_id, last_message_id, low_unread, high_unread)
    SELECT least(sender_id, recipient_id), greatest(sender_id, recipient_id), id,
           (sender_id > recipient_id)::int, (sender_id < recipient_id)::int
    FROM sent
    ON CONFLICT (low_id, high_id) DO UPDATE
    SET last_message_id = greatest(c.last_message_id, excluded.last_message_id),
        low_unread = c.low_unread + excluded.low_unread,
        high_unread = c.high_unread + excluded.high_unread
)
SELECT caller.user_id AS caller, sent.id, sent.timestamp FROM caller LEFT JOIN sent ON true
"""

MAX_ID = 2**63 - 1  # ids are bigint


def bounded_by(columns: str, *, lower: tuple[str, ...], upper: tuple[str, ...]) -> str:
    """The rows whose (`columns`, id) lie from `lower` (its last value the least id) up to `upper`
    with any id, as two row comparisons a btree index on (`columns`, id) takes as its range, e.g.
    bounded_by("recipient_id", lower=("$4", "$5"), upper=("$4",)). With no equality on `columns`,
    the planner cannot treat them as constants, and only that index yields the order
    `columns`, id: see LIST_MESSAGES."""
    row = f"({columns}, id)"
    return (f"{row} >= ({', '.join(lower)}) AND {row} <= ({', '.join((*upper, str(MAX_ID)))})")


# No row: the token is not valid. Otherwise one row: the caller, the page as a JSON array, and
# the id of the first message past it (fetched, not shown) or NULL. Only one branch runs: the
# reader's whole inbox, or what the caller sent to `recipient`, each a range scan of its own index.
# $6 is the page size.
#
# Each branch bounds and orders its rows by a row of its index's columns (bounded_by) rather than
# by equalities and `ORDER BY id`: an equality makes those columns constants to the planner, and
# then the primary key also yields id order. With a recipient holding most of the table, or under
# the generic plan, where the caller and recipient are unknown, the planner would then walk the
# primary key and filter until it found limit + 1 rows: the whole table for a caller who never
# wrote to that recipient. Only the index yields the row order, so each branch reads about
# limit + 1 of its entries (tests/test_listing_skew.py counts the buffers). A row comparison ends
# the scan on its first column only, so the other branch keeps `recipient_id = $4` and compares
# (sender_id, id), which the primary key cannot order either.
LIST_MESSAGES = sessions.CALLER + """
SELECT caller.user_id AS caller,
       coalesce('[' || string_agg(page.json, ',' ORDER BY page.id) FILTER (WHERE page.n <= $6) || ']',
                '[]') AS messages,
       min(page.id) FILTER (WHERE page.n > $6) AS next_start
FROM caller LEFT JOIN LATERAL (
    SELECT id, json, row_number() OVER (ORDER BY id) AS n FROM (
        (SELECT id, """ + MESSAGE_JSON + """ AS json FROM messages
         WHERE caller.user_id = $4
           AND """ + bounded_by("recipient_id", lower=("$4", "$5"), upper=("$4",)) + """
         ORDER BY recipient_id, id LIMIT $6 + 1)
        UNION ALL
        (SELECT id, """ + MESSAGE_JSON + """ AS json FROM messages
         WHERE caller.user_id <> $4
           AND recipient_id = $4
           AND """ + bounded_by("sender_id", lower=("caller.user_id", "$5"), upper=("caller.user_id",)) + """
         ORDER BY sender_id, id LIMIT $6 + 1)
    ) AS readable
) AS page ON true
GROUP BY caller.user_id
"""

MESSAGE_BY_IDEMPOTENCY_KEY = """
SELECT id, """ + TIMESTAMP + """ AS timestamp, recipient_id, content FROM messages
WHERE sender_id = $1 AND idempotency_key = $2
"""


@dataclass(frozen=True, slots=True)
class Sent:
    """The outcome of SEND_MESSAGE for a valid token: `id` is None when nothing was inserted."""

    caller: int
    id: int | None
    timestamp: str | None


@dataclass(frozen=True, slots=True)
class IdempotentOriginal:
    id: int
    timestamp: str
    recipient_id: int
    content: str


async def send_message(
    db: BoundedPool, token_hash: bytes, policy: SessionPolicy, *,
    recipient: int, content: str, idempotency_key: str | None, sender: int | None,
) -> Sent | None:
    """Authenticate and store in one statement; None when the token is not valid."""
    row = await db.fetchrow(SEND_MESSAGE, *sessions.caller_parameters(token_hash, policy),
                            recipient, content, idempotency_key, sender)
    return None if row is None else Sent(*row)


async def message_by_idempotency_key(
    db: BoundedPool, sender: int, idempotency_key: str
) -> IdempotentOriginal | None:
    row = await db.fetchrow(MESSAGE_BY_IDEMPOTENCY_KEY, sender, idempotency_key)
    return None if row is None else IdempotentOriginal(*row)


@dataclass(frozen=True, slots=True)
class Page:
    """A listing page: `messages` is the JSON array, ready to send."""

    caller: int
    messages: str
    next_start: int | None


async def list_messages(
    db: BoundedPool, token_hash: bytes, policy: SessionPolicy, *, recipient: int, start: int, limit: int,
) -> Page | None:
    """Authenticate and read a page in one statement; None for a token that is not valid."""
    row = await db.fetchrow(LIST_MESSAGES, *sessions.caller_parameters(token_hash, policy),
                            recipient, start, limit)
    return None if row is None else Page(*row)
