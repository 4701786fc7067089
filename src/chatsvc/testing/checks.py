"""Checks shared by every test: the error envelope, and the system programs a test needs."""

from __future__ import annotations

import os
import shutil
from collections.abc import Collection

import httpx


def media_type(response: httpx.Response) -> str:
    """The Content-Type without its parameters."""
    content_type: str = response.headers.get("content-type", "")
    return content_type.split(";")[0].strip()


def assert_error(response: httpx.Response, status: int, code: str | Collection[str], *,
                 request_id: bool = True) -> str:
    """`response` is the error envelope with `status` and `code` (or one of them); returns its message.

    Every answer of the app carries X-Request-ID; `request_id=False` only for a lone middleware.
    """
    assert response.status_code == status, (response.status_code, response.text)
    assert media_type(response) == "application/json", response.headers
    if request_id:
        assert response.headers.get("x-request-id"), response.headers
    assert "Traceback" not in response.text, response.text
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    assert isinstance(body["error"], dict) and set(body["error"]) == {"code", "message"}, body
    codes = {code} if isinstance(code, str) else set(code)
    assert body["error"]["code"] in codes, body
    message = body["error"]["message"]
    assert isinstance(message, str) and message, body
    return message


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def require_program(program: str, package: str) -> str:
    """The path of `program`; if it is missing, skip the test naming the Debian package (fail in CI).

    `bin/system-deps` installs the same packages; this only reports what it could not.
    """
    import pytest

    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/sbin"])
    if found := shutil.which(program, path=search):
        return found
    reason = (f"{program} is not installed: install the Debian package {package} "
              f"(apt-get install -y {package}, or run bin/system-deps as root)")
    if in_ci():
        pytest.fail(f"CI=true: {reason}", pytrace=False)
    pytest.skip(reason)
