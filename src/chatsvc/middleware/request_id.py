"""Request ids: echo a sane `X-Request-ID` or make one, for every response of both listeners."""

from __future__ import annotations

import os
import random
import re

from starlette.types import Scope

_SANE_REQUEST_ID = re.compile(rb"[\x21-\x7e]{1,128}")
# A request id correlates log lines; it grants nothing, so it needs to be unique, not secret.
# `secrets` would cost a system call per request: ids come from a generator seeded once per
# process from the operating system's randomness instead (random.Random() seeds itself so).
_ids = random.Random()
os.register_at_fork(after_in_child=_ids.seed)  # a forked child must not repeat its parent's ids


def assign_request_id(scope: Scope) -> bytes:
    """The request's id: its own `X-Request-ID` when sane, else a new one; kept in the scope's
    state for the logs."""
    request_id = next((value for name, value in scope["headers"] if name == b"x-request-id"), None)
    if request_id is None or not _SANE_REQUEST_ID.fullmatch(request_id):
        request_id = b"%032x" % _ids.getrandbits(128)
    scope.setdefault("state", {})["request_id"] = request_id.decode()
    return request_id


def with_request_id(headers: list[tuple[bytes, bytes]], request_id: bytes) -> list[tuple[bytes, bytes]]:
    """`headers` with the request id as their one `X-Request-ID`, last."""
    if any(name == b"x-request-id" for name, _ in headers):
        headers = [(name, value) for name, value in headers if name != b"x-request-id"]
    headers.append((b"x-request-id", request_id))
    return headers
