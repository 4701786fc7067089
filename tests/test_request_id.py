"""X-Request-ID: a sane one is echoed on every response, an absent or insane one is generated."""

from __future__ import annotations

import os
import secrets

import httpx
import pytest

from chatsvc.middleware.request_id import assign_request_id
from tests.http_common import (
    GENERATED_ID,
)

# --- X-Request-ID -----------------------------------------------------------------------------

REQUESTS = [
    pytest.param("GET", "/check", None, 200, id="check-200"),
    pytest.param("GET", "/", None, 200, id="root-200"),
    pytest.param("GET", "/nope", None, 404, id="404"),
    pytest.param("DELETE", "/messages", None, 405, id="405"),
    pytest.param("GET", "/messages", None, 401, id="401"),
    pytest.param("POST", "/users", b"{", 400, id="400"),
    pytest.param("POST", "/users", b" " * 70_000, 413, id="413"),
]


@pytest.mark.parametrize(("method", "path", "body", "status"), REQUESTS)
async def test_a_sane_request_id_is_echoed_on_every_response(
    client: httpx.AsyncClient, method: str, path: str, body: bytes | None, status: int
) -> None:
    request_id = f"req-{secrets.token_hex(4)}:/=+_.~!"

    response = await client.request(method, path, content=body, headers={"X-Request-ID": request_id})

    assert response.status_code == status
    assert response.headers.get_list("x-request-id") == [request_id]


@pytest.mark.parametrize(("method", "path", "body", "status"), REQUESTS)
async def test_a_request_id_is_generated_when_absent(
    client: httpx.AsyncClient, method: str, path: str, body: bytes | None, status: int
) -> None:
    first = await client.request(method, path, content=body)
    second = await client.request(method, path, content=body)

    assert first.status_code == status
    assert GENERATED_ID.match(first.headers["x-request-id"]), first.headers["x-request-id"]
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


async def test_a_request_id_of_128_characters_is_echoed(client: httpx.AsyncClient) -> None:
    request_id = "r" * 128

    response = await client.get("/check", headers={"X-Request-ID": request_id})

    assert response.headers["x-request-id"] == request_id


@pytest.mark.parametrize("request_id", [
    pytest.param(b"r" * 129, id="129-chars"),
    pytest.param(b"x" * 10_000, id="10000-chars"),
    pytest.param(b"", id="empty"),
    pytest.param(b"has space", id="space"),
    pytest.param(b"tab\tinside", id="tab"),
    pytest.param(b"del\x7f", id="del"),
    pytest.param(b"nul\x00", id="nul"),
    pytest.param("caf\u00e9".encode(), id="non-ascii-utf8"),
    pytest.param(b"\xff\xfe", id="invalid-utf8"),
    pytest.param(b"abc\n", id="trailing-newline"),
    pytest.param(b"abc\r\nSet-Cookie: x=1", id="crlf-injection"),
])
@pytest.mark.parametrize("path", ["/check", "/nope"])
async def test_an_insane_request_id_is_replaced(
    client: httpx.AsyncClient, request_id: bytes, path: str
) -> None:
    response = await client.get(path, headers={"X-Request-ID": request_id})

    assert response.headers.get_list("x-request-id") != [request_id.decode("latin-1")]
    assert GENERATED_ID.match(response.headers["x-request-id"]), response.headers["x-request-id"]
    assert "set-cookie" not in response.headers


def test_a_forked_process_does_not_repeat_its_parents_request_ids() -> None:
    """Ids come from a generator seeded once per process, not from a system call per request: a
    child forked from a process that already made ids must not make the same ones."""
    scope = {"type": "http", "headers": []}
    assign_request_id(dict(scope))
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (the child)
        os.close(read_end)
        os.write(write_end, assign_request_id(dict(scope)))
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        childs = reader.read()
    os.waitpid(child, 0)
    parents = assign_request_id(dict(scope))
    assert GENERATED_ID.match(childs.decode()) and childs != parents
