"""The SQL of conversations: the pair table sql/0003 defines, its pages and its read markers.

Every statement starts with the caller's authentication, so each route is one round trip.
Within one conversation, message ids commit in id order (messages.SEND_MESSAGE locks the pair
before it takes an id), which is what makes `after=` pages and unread counts exact under
concurrency: see docs/ARCHITECTURE.md, "Conversations".
"""

from __future__ import annotations

from dataclasses import dataclass

from chatsvc.config import SessionPolicy
from chatsvc.db import BoundedPool
from chatsvc.queries import sessions
from chatsvc.queries.messages import MESSAGE_JSON

# LISTEN channel of read markers: "reader:peer:last_read".
READS_CHANNEL = "chatsvc_reads"

# Every conversation of the messages stored, as sql/0006 builds them for an existing table (the
# benchmark's bulk loads, the plan tests' data): nothing is read yet, so everything from the other
# side is unread.
BUILD_FROM_MESSAGES = """
INSERT INTO conversations (low_id, high_id, last_message_id, low_unread, high_unread)
SELECT least(sender_id, recipient_id), greatest(sender_id, recipient_id), max(id),
       count(*) FILTER (WHERE sender_id > recipient_id),
       count(*) FILTER (WHERE sender_id < recipient_id)
FROM messages
GROUP BY 1, 2
"""

# One conversation as GET /conversations shows it, from a row of `mine` below and its joins.
_CONVERSATION_JSON = (
    """'{"peer":{"id":' || mine.peer || ',"username":' || to_json(peer.username)::text || '},'"""
    """ || '"last_message":' || last.json"""
    """ || ',"unread":' || mine.unread"""
    """ || ',"last_read":' || coalesce(mine.last_read::text, 'null')"""
    """ || ',"peer_last_read":' || coalesce(mine.peer_last_read::text, 'null') || '}'"""
)

# No row: the token is not valid. Otherwise the caller, the page as a JSON array and the last
# message id of its last conversation when an older conversation exists. Two range scans, the
# pairs where the caller is the smaller id and those where it is the larger (notes to self come
# from the first only), each stopped after $5 + 1 rows; then one primary-key probe each into
# users and messages for the $5 shown. $4: last message ids up to this one (inclusive).
LIST_CONVERSATIONS = sessions.CALLER + """
SELECT caller.user_id AS caller,
       coalesce('[' || string_agg(page.json, ',' ORDER BY page.last_message_id DESC)
                       FILTER (WHERE page.n <= $5) || ']', '[]') AS conversations,
       CASE WHEN count(*) > $5 THEN min(page.last_message_id) FILTER (WHERE page.n <= $5) END
           AS next_before
FROM caller LEFT JOIN LATERAL (
    SELECT mine.last_message_id, mine.n,
           CASE WHEN mine.n <= $5 THEN """ + _CONVERSATION_JSON + """ END AS json
    FROM (
        SELECT both_sides.*, row_number() OVER (ORDER BY both_sides.last_message_id DESC) AS n
        FROM (
            (SELECT high_id AS peer, last_message_id, low_last_read AS last_read, low_unread AS unread,
                    high_last_read AS peer_last_read
             FROM conversations
             WHERE low_id = caller.user_id AND last_message_id <= $4
             ORDER BY last_message_id DESC LIMIT $5 + 1)
            UNION ALL
            (SELECT low_id, last_message_id, high_last_read, high_unread, low_last_read
             FROM conversations
             WHERE high_id = caller.user_id AND last_message_id <= $4 AND low_id <> caller.user_id
             ORDER BY last_message_id DESC LIMIT $5 + 1)
            ORDER BY last_message_id DESC LIMIT $5 + 1
        ) AS both_sides
    ) AS mine
    LEFT JOIN users AS peer ON peer.id = mine.peer AND mine.n <= $5
    LEFT JOIN LATERAL (
        SELECT """ + MESSAGE_JSON + """ AS json FROM messages
        WHERE messages.id = mine.last_message_id AND mine.n <= $5
    ) AS last ON true
) AS page ON true
GROUP BY caller.user_id
"""


def _conversation_page(direction: str, bound: str, beyond: str) -> str:
    """A page of the conversation with $4: at most $6 messages on the `direction` side of the
    bound $5 (`bound` is how an id compares to it), fetching one more to know whether more
    exist, and whether any message lies on the other side (`beyond`)."""
    order = "DESC" if direction == "older" else "ASC"
    return sessions.CALLER + f"""
SELECT caller.user_id AS caller, peer.id IS NOT NULL AS peer_exists,
       coalesce('[' || string_agg(page.json, ',' ORDER BY page.id) FILTER (WHERE page.n <= $6) || ']',
                '[]') AS messages,
       count(page.id) AS fetched,
       min(page.id) FILTER (WHERE page.n <= $6) AS first_id,
       max(page.id) FILTER (WHERE page.n <= $6) AS last_id,
       EXISTS (SELECT FROM messages
               WHERE recipient_id = $4 AND sender_id = caller.user_id AND id {beyond} $5)
       OR EXISTS (SELECT FROM messages
                  WHERE recipient_id = caller.user_id AND sender_id = $4 AND id {beyond} $5)
           AS beyond
FROM caller
LEFT JOIN users AS peer ON peer.id = $4
LEFT JOIN LATERAL (
    SELECT id, json, row_number() OVER (ORDER BY id {order}) AS n FROM (
        (SELECT id, {MESSAGE_JSON} AS json FROM messages
         WHERE recipient_id = $4 AND sender_id = caller.user_id AND id {bound} $5
         ORDER BY id {order} LIMIT $6 + 1)
        UNION ALL
        (SELECT id, {MESSAGE_JSON} AS json FROM messages
         WHERE recipient_id = caller.user_id AND sender_id = $4 AND id {bound} $5
           AND caller.user_id <> $4
         ORDER BY id {order} LIMIT $6 + 1)
        ORDER BY id {order} LIMIT $6 + 1
    ) AS both_directions
) AS page ON peer.id IS NOT NULL
GROUP BY caller.user_id, peer.id
"""


# Newest first from the bound down ($5: ids up to this one, inclusive), and whether newer exist.
OLDER_MESSAGES = _conversation_page("older", "<=", ">")
# Oldest first from the bound up ($5: ids above this one), and whether older exist.
NEWER_MESSAGES = _conversation_page("newer", ">", "<=")

# The side of the pair the caller is, as SQL on the row `c` and the caller id in `target.me`.
_MARK = """
    {side}_last_read = CASE WHEN c.{side}_id = target.me
                            THEN greatest(c.{side}_last_read, $5) ELSE c.{side}_last_read END,
    {side}_unread = CASE WHEN c.{side}_id = target.me AND c.low_id <> c.high_id
                              AND $5 > coalesce(c.{side}_last_read, 0)
                         THEN c.{side}_unread - (
                             SELECT count(*) FROM messages
                             WHERE recipient_id = c.{side}_id AND sender_id = c.{other}_id
                               AND id > coalesce(c.{side}_last_read, 0) AND id <= $5)
                         ELSE c.{side}_unread END"""

# No row: the token is not valid. Otherwise the caller and, when message $5 belongs to the
# conversation with $4, the caller's marker now in force and what is left unread. The row lock
# orders concurrent markers and sends; the count subtracts only the messages between the marker
# in force (read under that lock) and the new one, all of which committed before $5 did.
MARK_READ = sessions.CALLER + """, target AS (
    SELECT caller.user_id AS me, least(caller.user_id, $4) AS low, greatest(caller.user_id, $4) AS high
    FROM caller JOIN messages AS m ON m.id = $5
    WHERE (m.sender_id = caller.user_id AND m.recipient_id = $4)
       OR (m.sender_id = $4 AND m.recipient_id = caller.user_id)
), marked AS (
    UPDATE conversations AS c SET""" + _MARK.format(side="low", other="high") + "," + _MARK.format(
    side="high", other="low") + """
    FROM target
    WHERE c.low_id = target.low AND c.high_id = target.high
    RETURNING CASE WHEN c.low_id = target.me THEN c.low_last_read ELSE c.high_last_read END AS last_read,
              CASE WHEN c.low_id = target.me THEN c.low_unread ELSE c.high_unread END AS unread
), announced AS (
    SELECT pg_notify('""" + READS_CHANNEL + """', caller.user_id || ':' || $4 || ':' || marked.last_read)
    FROM caller, marked
)
SELECT caller.user_id AS caller, marked.last_read, marked.unread, (SELECT count(*) FROM announced)
FROM caller LEFT JOIN marked ON true
"""


@dataclass(frozen=True, slots=True)
class ConversationList:
    caller: int
    conversations: str  # the JSON array, ready to send
    next_before: int | None


@dataclass(frozen=True, slots=True)
class ConversationPage:
    caller: int
    peer_exists: bool
    messages: str  # the JSON array, ready to send
    fetched: int
    first_id: int | None
    last_id: int | None
    beyond: bool


@dataclass(frozen=True, slots=True)
class Marked:
    caller: int
    last_read: int | None  # None: the message is not one of this conversation
    unread: int | None


async def list_conversations(
    db: BoundedPool, token_hash: bytes, policy: SessionPolicy, *, upto: int, limit: int,
) -> ConversationList | None:
    """Authenticate and read a page of conversations; None for a token that is not valid."""
    row = await db.fetchrow(LIST_CONVERSATIONS, *sessions.caller_parameters(token_hash, policy), upto, limit)
    return None if row is None else ConversationList(*row)


async def conversation_page(
    db: BoundedPool, token_hash: bytes, policy: SessionPolicy, *,
    peer: int, bound: int, limit: int, older: bool,
) -> ConversationPage | None:
    """Authenticate and read messages of the conversation with `peer` on one side of `bound`."""
    sql = OLDER_MESSAGES if older else NEWER_MESSAGES
    row = await db.fetchrow(sql, *sessions.caller_parameters(token_hash, policy), peer, bound, limit)
    return None if row is None else ConversationPage(*row)


async def mark_read(
    db: BoundedPool, token_hash: bytes, policy: SessionPolicy, *, peer: int, message_id: int,
) -> Marked | None:
    """Authenticate and move the caller's read marker forward to `message_id`."""
    row = await db.fetchrow(MARK_READ, *sessions.caller_parameters(token_hash, policy), peer, message_id)
    return None if row is None else Marked(row["caller"], row["last_read"], row["unread"])
