"""Sending and listing messages."""

from __future__ import annotations

import re
from typing import Any

import asyncpg
import msgspec
from starlette.endpoints import HTTPEndpoint
from starlette.requests import Request
from starlette.responses import Response

from chatsvc import metrics, queries
from chatsvc.api.common import (
    as_caller,
    convert,
    decode,
    integer_or_text,
    json_response,
    read_body,
    token_checked_first,
    token_hash,
)
from chatsvc.db import BoundedPool
from chatsvc.errors import ApiError, ErrorCode, invalid_request
from chatsvc.openapi import Header, Operation, Reply, documented
from chatsvc.resources import resources_of
from chatsvc.schemas import (
    Image,
    ListingQuery,
    MessageCreated,
    MessagePage,
    NewMessage,
    Text,
    Video,
    content_decoder,
    encoder,
    new_message_decoder,
)

_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")
_LISTING_PARAMETERS = ("recipient", "start", "limit")
_any_json = msgspec.json.Decoder()


class Messages(HTTPEndpoint):
    """`/messages`: GET lists, POST sends; any other method is 405 with `Allow`."""

    @documented(Operation(
        "List messages sent to a recipient",
        {200: Reply("Messages with `id >= start`, ascending; `next_start` is null when no more exist.",
                    MessagePage),
         400: "A parameter is missing, not an integer, or out of range; the message names it."},
        description="The recipient reads every message sent to them; anyone else only what they sent "
                    "to that recipient. An unknown recipient yields an empty list. The parameters may "
                    "also come in a JSON body, as the original read them; a query parameter wins.",
        query=ListingQuery, authenticated=True, reads_body=True, uses_database=True,
    ))
    async def get(self, request: Request) -> Response:
        """List messages to `recipient` from `start`, at most `limit`: `{"messages", "next_start"}`."""
        return await list_messages(request)

    @documented(Operation(
        "Send a message",
        {201: Reply("Stored; a retry with the same `Idempotency-Key` gets this same answer again.",
                    MessageCreated),
         400: "Not JSON, a field breaks its rule, or a malformed `Idempotency-Key`.",
         403: "`sender` is not the caller.",
         404: "The recipient does not exist.",
         409: "The `Idempotency-Key` was used for a different message, or that request is in progress."},
        body=NewMessage, authenticated=True, reads_body=True, uses_database=True,
        headers=[Header("Idempotency-Key", "Makes a retry safe: the first answer is returned again and "
                        "nothing new is stored. Kept at least 24 h, per sender.",
                        {"type": "string", "pattern": f"^{_IDEMPOTENCY_KEY.pattern}$"})],
    ))
    async def post(self, request: Request) -> Response:
        """Send `{"recipient", "content"}`: `201 {"id", "timestamp"}`; `Idempotency-Key` for safe retries."""
        return await create_message(request)


async def create_message(request: Request) -> Response:
    """Authenticate, check and store in one database round trip."""
    resources = resources_of(request)
    settings = resources.settings
    idempotency_key = _idempotency_key(request)
    digest = token_hash(request)
    async with token_checked_first(request):
        message = decode(new_message_decoder, await read_body(request))
        match message.content:
            case Text(text=text) if len(text) > settings.max_text_chars:
                raise invalid_request(f"content.text: expected at most {settings.max_text_chars} characters")
            case Text() | Image() | Video():
                pass
    content = encoder.encode(message.content).decode()
    try:
        sent = await as_caller(request, digest, queries.messages.send_message, recipient=message.recipient,
                               content=content, idempotency_key=idempotency_key, sender=message.sender)
    except asyncpg.ForeignKeyViolationError:
        raise ApiError(ErrorCode.NOT_FOUND, "recipient: no such user") from None
    caller = sent.caller
    if message.sender is not None and message.sender != caller:
        raise ApiError(ErrorCode.FORBIDDEN, "sender: you can only send as yourself")
    if sent.id is None or sent.timestamp is None:
        # The token and the sender were good, so only a used idempotency key stops the insert.
        assert idempotency_key is not None
        return await _replay(resources.pool, caller, idempotency_key, message)
    # Committed: every process's streams may look for it (sent off the request, in a batch).
    resources.fanout.announce(sent.id, caller, message.recipient)
    metrics.MESSAGES_CREATED.labels(content_type=type(message.content).__struct_config__.tag).inc()
    return json_response(MessageCreated(sent.id, sent.timestamp), status=201)


async def list_messages(request: Request) -> Response:
    """Authenticate and read one page in one database round trip."""
    digest = token_hash(request)
    async with token_checked_first(request):
        query = convert(await _listing_parameters(request), ListingQuery)
    page = await as_caller(request, digest, queries.messages.list_messages, recipient=query.recipient,
                           start=query.start, limit=query.page_size)
    # The database wrote the messages' JSON; it goes out without being parsed here.
    return json_response(MessagePage(msgspec.Raw(page.messages), page.next_start))


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not _IDEMPOTENCY_KEY.fullmatch(key):
        raise invalid_request("Idempotency-Key: expected 1 to 255 visible ASCII characters")
    return key


async def _replay(pool: BoundedPool, sender: int, key: str, message: NewMessage) -> Response:
    """The first answer again for a retry, or 409 when the key now names a different request."""
    original = await queries.messages.message_by_idempotency_key(pool, sender, key)
    if original is None:
        raise ApiError(ErrorCode.CONFLICT, "Idempotency-Key: a request with this key is in progress")
    same = (original.recipient_id == message.recipient
            and content_decoder.decode(original.content) == message.content)
    if not same:
        raise ApiError(ErrorCode.CONFLICT,
                       "Idempotency-Key: already used for a different message")
    return json_response(MessageCreated(original.id, original.timestamp), status=201)


async def _listing_parameters(request: Request) -> dict[str, Any]:
    """Each parameter from the query string when there, else from a JSON body (as the original)."""
    body = await read_body(request)
    parameters: dict[str, Any] = {}
    if body.strip():
        parsed = decode(_any_json, body)
        if not isinstance(parsed, dict):
            raise invalid_request("expected a JSON object")
        parameters.update((k, v) for k, v in parsed.items() if k in _LISTING_PARAMETERS)
    # Query values are text: turn digits into integers, and let anything else fail validation.
    parameters.update((k, integer_or_text(v))
                      for k, v in request.query_params.items() if k in _LISTING_PARAMETERS)
    return parameters
