"""What the HTTP tests share: the JSON media type, a generated request id's shape, routes that read a body."""

from __future__ import annotations

import re

import pytest

GENERATED_ID = re.compile(r"^[0-9a-f]{32}$")
JSON = "application/json"


# Every route that reads a request body, and whether it needs a token.
every_route_that_reads_a_body = pytest.mark.parametrize(("method", "path", "authenticated"), [
    ("POST", "/users", False),
    ("POST", "/login", False),
    ("POST", "/messages", True),
    ("GET", "/messages", True),
    ("PUT", "/conversations/1/read", True),
    ("PUT", "/users/me/password", True),
])
