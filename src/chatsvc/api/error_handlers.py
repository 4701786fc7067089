"""Exception handlers of both apps: every failure leaves as the error envelope.

Here the errors of the layers below `api/` (the database's, the fan-out's) become HTTP answers.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

import asyncpg
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from chatsvc.api.common import ClientGone
from chatsvc.db import UNAVAILABLE_ERRORS
from chatsvc.errors import ApiError, ErrorCode, codes_for, error_response, invalid_request, unavailable
from chatsvc.fanout import TooManyStreams
from chatsvc.passwords import HashQueueFull

log = logging.getLogger("chatsvc.errors")

# nginx's status for a client that closed the connection before the answer: not a 5xx of ours.
CLIENT_CLOSED_REQUEST = 499

# Routing's own failures: what each code says when Starlette raises it.
_HTTP_MESSAGES = {ErrorCode.NOT_FOUND: "no such route",
                  ErrorCode.METHOD_NOT_ALLOWED: "method not allowed for this route",
                  ErrorCode.PAYLOAD_TOO_LARGE: "the request body is too large"}


async def api_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, ApiError)
    return error_response(error)


async def http_error(request: Request, error: Exception) -> Response:
    """Routing's own 404 and 405, in the envelope, keeping headers such as `Allow`."""
    assert isinstance(error, HTTPException)
    codes = codes_for(error.status_code)
    code = codes[0] if len(codes) == 1 else ErrorCode.INVALID_REQUEST
    message = _HTTP_MESSAGES.get(code, str(error.detail))
    return error_response(ApiError(code, message, error.headers))


async def client_gone(request: Request, error: Exception) -> Response:
    """Nobody reads this answer; its status is what the metrics and the access log record."""
    log.info("client disconnected while sending its request",
             extra={"request_id": request.scope.get("state", {}).get("request_id")})
    return Response(status_code=CLIENT_CLOSED_REQUEST)


async def hash_queue_full(request: Request, error: Exception) -> Response:
    return error_response(unavailable("too many logins are being checked right now; retry in a moment"))


async def too_many_streams(request: Request, error: Exception) -> Response:
    return error_response(ApiError(ErrorCode.RATE_LIMITED, str(error), {"Retry-After": "1"}))


async def database_unavailable(request: Request, error: Exception) -> Response:
    log.warning("database unavailable", extra={"error": type(error).__name__})
    return error_response(unavailable("the database is unavailable; retry shortly"))


async def database_rejected_input(request: Request, error: Exception) -> Response:
    """Text PostgreSQL cannot store (a NUL, say) is the client's input, not our failure."""
    return error_response(invalid_request("a value cannot be stored: " + type(error).__name__))


Handler = Callable[[Request, Exception], Awaitable[Response]]

EXCEPTION_HANDLERS: Mapping[type[BaseException], Handler] = {
    ApiError: api_error,
    HTTPException: http_error,
    ClientGone: client_gone,
    HashQueueFull: hash_queue_full,
    TooManyStreams: too_many_streams,
    asyncpg.DataError: database_rejected_input,
    **dict.fromkeys(UNAVAILABLE_ERRORS, database_unavailable),
}
