"""The error envelope: one exception type for every client-visible failure, one renderer."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import Response

from chatsvc.schemas import ErrorBody, ErrorDetail, encoder

# Answers sent before the whole body was read: the connection must not be
# reused, or the unread rest of the body would be parsed as the next request.
CLOSE_AFTER = frozenset({401, 408, 413, 429, 431})


class ApiError(Exception):
    """A failure the client caused or must know about, rendered as the error envelope."""

    def __init__(self, status: int, code: str, message: str,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def invalid_request(message: str) -> ApiError:
    return ApiError(400, "invalid_request", message)


def unauthorized(message: str = "a valid session token is required") -> ApiError:
    return ApiError(401, "unauthorized", message, {"WWW-Authenticate": "Bearer"})


def unavailable(message: str = "the service is temporarily unavailable") -> ApiError:
    return ApiError(503, "unavailable", message, {"Retry-After": "1"})


def error_response(error: ApiError) -> Response:
    """The envelope for `error`, closing the connection where the body may be unread."""
    headers = dict(error.headers)
    if error.status in CLOSE_AFTER:
        headers["Connection"] = "close"
    body = encoder.encode(ErrorBody(ErrorDetail(error.code, error.message)))
    return Response(body, status_code=error.status, headers=headers,
                    media_type="application/json")
