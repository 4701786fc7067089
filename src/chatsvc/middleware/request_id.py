"""Request ids: echo a sane `X-Request-ID` or make one, for every response of both listeners."""

from __future__ import annotations

import re
import secrets

from starlette.types import Scope

_SANE_REQUEST_ID = re.compile(rb"[\x21-\x7e]{1,128}")


def assign_request_id(scope: Scope) -> bytes:
    """The request's id: its own `X-Request-ID` when sane, else a new one; kept in the scope's
    state for the logs."""
    request_id = next((value for name, value in scope["headers"] if name == b"x-request-id"), None)
    if request_id is None or not _SANE_REQUEST_ID.fullmatch(request_id):
        request_id = secrets.token_hex(16).encode()
    scope.setdefault("state", {})["request_id"] = request_id.decode()
    return request_id


def with_request_id(headers: list[tuple[bytes, bytes]], request_id: bytes) -> list[tuple[bytes, bytes]]:
    """`headers` with the request id as their one `X-Request-ID`, last."""
    if any(name == b"x-request-id" for name, _ in headers):
        headers = [(name, value) for name, value in headers if name != b"x-request-id"]
    headers.append((b"x-request-id", request_id))
    return headers
