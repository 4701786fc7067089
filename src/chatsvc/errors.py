"""The error vocabulary: every `error.code` a client can see, its HTTP status, and the envelope.

`STATUS` is the one place a code is paired with its status: the exception handlers, the
middleware, the OpenAPI document and every raise site derive the status from it. Layers below
`api/` raise their own domain errors (`fanout.TooManyStreams`, say); `api/error_handlers.py`
turns those into an `ApiError`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType

from starlette.responses import Response

from chatsvc.schemas import ErrorBody, ErrorDetail, encoder


class ErrorCode(enum.StrEnum):
    """The `error.code` of the envelope."""

    INVALID_JSON = "invalid_json"
    INVALID_REQUEST = "invalid_request"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    REQUEST_TIMEOUT = "request_timeout"
    CONFLICT = "conflict"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    RATE_LIMITED = "rate_limited"
    HEADERS_TOO_LARGE = "headers_too_large"
    INTERNAL = "internal"
    NOT_IMPLEMENTED = "not_implemented"
    UNAVAILABLE = "unavailable"


STATUS: Mapping[ErrorCode, int] = MappingProxyType({
    ErrorCode.INVALID_JSON: 400,
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.REQUEST_TIMEOUT: 408,
    ErrorCode.CONFLICT: 409,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.HEADERS_TOO_LARGE: 431,
    ErrorCode.INTERNAL: 500,
    ErrorCode.NOT_IMPLEMENTED: 501,
    ErrorCode.UNAVAILABLE: 503,
})
if set(STATUS) != set(ErrorCode):  # pragma: no cover - a code added without its status
    raise RuntimeError(f"errors.STATUS lacks {sorted(set(ErrorCode) - set(STATUS))}")

# Answers sent before the whole body was read: the connection must not be
# reused, or the unread rest of the body would be parsed as the next request.
CLOSE_AFTER = frozenset({401, 408, 413, 429, 431})


def codes_for(status: int) -> tuple[ErrorCode, ...]:
    """The codes an answer with `status` may carry, in the table's order."""
    return tuple(code for code, code_status in STATUS.items() if code_status == status)


class ApiError(Exception):
    """A failure the client caused or must know about, rendered as the error envelope."""

    def __init__(self, code: ErrorCode, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = STATUS[code]
        self.message = message
        self.headers = dict(headers or {})


def invalid_request(message: str) -> ApiError:
    return ApiError(ErrorCode.INVALID_REQUEST, message)


def unauthorized(message: str = "a valid session token is required") -> ApiError:
    return ApiError(ErrorCode.UNAUTHORIZED, message, {"WWW-Authenticate": "Bearer"})


def unavailable(message: str = "the service is temporarily unavailable") -> ApiError:
    return ApiError(ErrorCode.UNAVAILABLE, message, {"Retry-After": "1"})


def error_response(error: ApiError) -> Response:
    """The envelope for `error`, closing the connection where the body may be unread."""
    headers = dict(error.headers)
    if error.status in CLOSE_AFTER:
        headers["Connection"] = "close"
    body = encoder.encode(ErrorBody(ErrorDetail(error.code, error.message)))
    return Response(body, status_code=error.status, headers=headers,
                    media_type="application/json")
