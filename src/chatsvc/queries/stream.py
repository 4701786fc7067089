"""Event streams: the notification channel, a stream's page, and the watermark's two looks."""

from __future__ import annotations

import asyncpg

from chatsvc.db import BoundedPool
from chatsvc.queries.messages import MESSAGE_JSON

# The channel of new messages (chatsvc.announce): "id:sender:recipient …", or "*".
MESSAGES_CHANNEL = "chatsvc_messages"

# One batch of announcements, one NOTIFY per payload, all in one statement (sent at its commit).
ANNOUNCE = "SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS payload"

# Who wrote and received the messages settled without being announced (horizon.Unannounced).
MESSAGES_BY_ID = "SELECT sender_id, recipient_id FROM messages WHERE id = ANY($1::bigint[])"

# What user $1 received or sent, after id $2 and up to the watermark $3: two range scans
# (messages_recipient_id, messages_sender_id) merged by id. The `OR` form would read the user's
# whole history into a bitmap for every page. Row comparisons, not equalities, for the reason
# LIST_MESSAGES gives: under the generic plan the primary key would otherwise walk the table for a
# user who sent nothing. $2 + 1 because the range starts after $2 (ids are positive, so no overflow).
STREAM_PAGE = """
SELECT id, json FROM (
    (SELECT id, """ + MESSAGE_JSON + """ AS json FROM messages
     WHERE (recipient_id, id) >= ($1, $2 + 1) AND (recipient_id, id) <= ($1, $3)
     ORDER BY recipient_id, id LIMIT $4)
    UNION ALL
    (SELECT id, """ + MESSAGE_JSON + """ AS json FROM messages
     WHERE (sender_id, id) >= ($1, $2 + 1) AND (sender_id, id) <= ($1, $3) AND recipient_id <> $1
     ORDER BY sender_id, id LIMIT $4)
) AS readable
ORDER BY id
LIMIT $4
"""

# The newest message id and the transactions in progress (fanout.Horizon): those the snapshot lists,
# and the xid of every backend, read just after it. A snapshot lists only xids below its xmax (one
# past the newest *completed* xid), so a transaction that took its xid after the newest commit is
# in progress without being listed: it can hold an id below one that is already visible. Seeing
# other sessions' xids takes the same role as theirs (or pg_read_all_stats).
MESSAGES_HORIZON = """
SELECT coalesce(max(id), 0) AS max_id, pg_current_snapshot()::text AS snapshot,
       ARRAY(SELECT backend_xid::text::bigint FROM pg_stat_activity WHERE backend_xid IS NOT NULL)
           AS assigned
FROM messages
"""

# The 32-bit xids of the transactions holding any lock on `messages` in this database. An insert
# locks the table before it takes an id, so a transaction missing here holds no unfinished id.
MESSAGE_WRITERS = """
SELECT coalesce(array_agg(DISTINCT x.transactionid::text::bigint), '{}') FROM pg_locks x
JOIN pg_locks r ON r.virtualtransaction = x.virtualtransaction
WHERE x.locktype = 'transactionid' AND x.mode = 'ExclusiveLock' AND x.granted
  AND r.locktype = 'relation' AND r.relation = 'messages'::regclass
  AND r.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


async def messages_for_stream(
    db: BoundedPool, user: int, *, after: int, upto: int, limit: int
) -> list[asyncpg.Record]:
    """Up to `limit` messages `user` received or sent with `after` < id <= `upto`, by id."""
    return await db.fetch(STREAM_PAGE, user, after, upto, limit)

