"""Conversations: the caller's list with unread counts, one conversation's pages, read markers."""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from chatsvc.api.common import (
    as_caller,
    decode,
    json_response,
    query_parameters,
    read_body,
    token_checked_first,
    token_hash,
)
from chatsvc.errors import ApiError, ErrorCode, invalid_request
from chatsvc.openapi import Operation, Reply, documented
from chatsvc.queries import conversations as queries
from chatsvc.schemas import (
    MAX_ID,
    ConversationList,
    ConversationPage,
    ConversationQuery,
    ConversationsQuery,
    ReadMarker,
    ReadState,
    read_marker_decoder,
)

_PEER_UNKNOWN = "peer: no such user"


@documented(Operation(
    "List the caller's conversations",
    {200: Reply("Conversations holding at least one message, most recent activity first; "
                "`next_before` is null when no older conversation exists.", ConversationList),
     400: "A parameter is not an integer, or out of range; the message names it."},
    description="`unread`: messages from the peer above the caller's read marker `last_read` (0 in "
                "the conversation with oneself). `peer_last_read`: how far the peer has read.",
    query=ConversationsQuery, authenticated=True, uses_database=True,
))
async def list_conversations(request: Request) -> Response:
    """`{"conversations", "next_before"}`, newest activity first; `before=` pages back."""
    digest = token_hash(request)
    async with token_checked_first(request):
        query = query_parameters(request, ConversationsQuery)
    listed = await as_caller(request, digest, queries.list_conversations,
                             upto=_upper_bound(query.before), limit=query.limit)
    return json_response(ConversationList(msgspec.Raw(listed.conversations), listed.next_before))


@documented(Operation(
    "Read one conversation, page by page, either way",
    {200: Reply("Messages of both directions ascending by id. `older`: pass as `before` for the "
                "previous page; `newer`: pass as `after` for the next; each null when no such "
                "message exists.", ConversationPage),
     400: "`before` and `after` together, or a parameter out of range; the message names it.",
     404: "The peer does not exist."},
    description="Without `before` or `after`, the newest `limit` messages.",
    query=ConversationQuery, authenticated=True, uses_database=True,
))
async def conversation_messages(request: Request) -> Response:
    """The newest page, the page `before` an id or the page `after` one: `{"messages", "older", "newer"}`."""
    digest = token_hash(request)
    async with token_checked_first(request):
        peer = _peer(request)
        query = query_parameters(request, ConversationQuery)
        if query.before is not None and query.after is not None:
            raise invalid_request("before, after: give one of them, not both")
    # The statements take an inclusive upper bound scrolling back, an exclusive lower one catching up.
    scrolling_back = query.after is None
    bound = _upper_bound(query.before) if query.after is None else query.after
    page = await as_caller(request, digest, queries.conversation_page, peer=peer, bound=bound,
                           limit=query.limit, older=scrolling_back)
    if not page.peer_exists:
        raise ApiError(ErrorCode.NOT_FOUND, _PEER_UNKNOWN)
    more = page.fetched > query.limit
    if scrolling_back:
        # `beyond`: a message above the bound exists, so there is a newer page to catch up with.
        older = page.first_id if more else None
        newer = (bound if page.last_id is None else page.last_id) if page.beyond else None
    else:
        newer = page.last_id if more else None
        older = (min(bound + 1, MAX_ID) if page.first_id is None else page.first_id) if page.beyond else None
    return json_response(ConversationPage(msgspec.Raw(page.messages), older, newer))


@documented(Operation(
    "Mark the conversation read up to a message",
    {200: Reply("The caller's read marker now in force, and what is left unread.", ReadState),
     400: "Not JSON, or `last_read` is not an id; the message names the field.",
     404: "`last_read` is not a message of this conversation (or the peer does not exist)."},
    description="The marker only moves forward: an older id leaves it where it is. The caller's "
                "other streams and the peer's get `event: read`.",
    body=ReadMarker, authenticated=True, reads_body=True, uses_database=True,
))
async def mark_read(request: Request) -> Response:
    """Move the caller's read marker of the conversation with `peer` up to `last_read`."""
    digest = token_hash(request)
    async with token_checked_first(request):
        peer = _peer(request)
        marker = decode(read_marker_decoder, await read_body(request))
    marked = await as_caller(request, digest, queries.mark_read, peer=peer, message_id=marker.last_read)
    if marked.last_read is None or marked.unread is None:
        raise ApiError(ErrorCode.NOT_FOUND, "last_read: no such message in this conversation")
    return json_response(ReadState(marked.last_read, marked.unread))


def _upper_bound(before: int | None) -> int:
    return MAX_ID if before is None else before - 1


def _peer(request: Request) -> int:
    peer: int = request.path_params["peer"]
    if not 1 <= peer <= MAX_ID:
        raise invalid_request(f"peer: expected a user id from 1 to {MAX_ID}")
    return peer
