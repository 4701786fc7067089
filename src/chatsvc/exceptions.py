"""Exception handlers of the public app: every failure leaves as the error envelope."""

from __future__ import annotations

import logging

import asyncpg
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from chatsvc.db import UNAVAILABLE_ERRORS
from chatsvc.errors import ApiError, error_response, invalid_request, unavailable

log = logging.getLogger("chatsvc.errors")

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
_HTTP_MESSAGES = {404: "no such route", 405: "method not allowed for this route",
                  413: "the request body is too large"}


async def api_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, ApiError)
    return error_response(error)


async def http_error(request: Request, error: Exception) -> Response:
    """Routing's own 404 and 405, in the envelope, keeping headers such as `Allow`."""
    assert isinstance(error, HTTPException)
    code = _HTTP_CODES.get(error.status_code, "invalid_request")
    message = _HTTP_MESSAGES.get(error.status_code, str(error.detail))
    return error_response(ApiError(error.status_code, code, message, error.headers))


async def database_unavailable(request: Request, error: Exception) -> Response:
    log.warning("database unavailable", extra={"error": type(error).__name__})
    return error_response(unavailable("the database is unavailable; retry shortly"))


async def database_rejected_input(request: Request, error: Exception) -> Response:
    """Text PostgreSQL cannot store (a NUL, say) is the client's input, not our failure."""
    return error_response(invalid_request("a value cannot be stored: " + type(error).__name__))


EXCEPTION_HANDLERS = {
    ApiError: api_error,
    HTTPException: http_error,
    asyncpg.DataError: database_rejected_input,
    **{kind: database_unavailable for kind in UNAVAILABLE_ERRORS},
}
