"""CORS: preflights for the documented methods and headers, and the request id exposed cross-origin."""

from __future__ import annotations

import httpx
import pytest
from starlette.datastructures import MutableHeaders

from chatsvc.middleware.cors import vary_origin
from tests.http_common import (
    GENERATED_ID,
)


def header_list(response: httpx.Response, name: str) -> set[str]:
    return {part.strip().lower() for part in response.headers.get(name, "").split(",") if part.strip()}


# --- CORS -------------------------------------------------------------------------------------

async def test_a_preflight_for_posting_a_message_is_allowed(client: httpx.AsyncClient) -> None:
    origin = "https://app.example.com"

    response = await client.options("/messages", headers={
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,idempotency-key",
    })

    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] in ("*", origin)
    assert "post" in header_list(response, "access-control-allow-methods")
    assert {"authorization", "idempotency-key"} <= header_list(
        response, "access-control-allow-headers")
    assert GENERATED_ID.match(response.headers["x-request-id"])


@pytest.mark.parametrize("header", ["x-request-id", "last-event-id", "content-type"])
async def test_a_preflight_allows_the_documented_request_headers(
    client: httpx.AsyncClient, header: str
) -> None:
    response = await client.options("/messages", headers={
        "Origin": "https://app.example.com", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": header,
    })

    assert response.status_code == 200, response.text
    assert header in header_list(response, "access-control-allow-headers")


@pytest.mark.parametrize(("path", "status"), [("/check", 200), ("/nope", 404), ("/messages", 401)])
async def test_a_cross_origin_response_exposes_the_request_id(
    client: httpx.AsyncClient, path: str, status: int
) -> None:
    origin = "https://app.example.com"

    response = await client.get(path, headers={"Origin": origin})

    assert response.status_code == status
    assert response.headers["access-control-allow-origin"] in ("*", origin)
    exposed = header_list(response, "access-control-expose-headers")
    assert {"x-request-id", "retry-after"} <= exposed, exposed


@pytest.mark.parametrize("headers", [
    [], [(b"content-type", b"text/plain")], [(b"vary", b"Accept")],
    [(b"a", b"1"), (b"vary", b"Accept"), (b"b", b"2"), (b"vary", b"Cookie"), (b"c", b"3")],
])
def test_vary_origin_is_what_starlettes_cors_sets(headers: list[tuple[bytes, bytes]]) -> None:
    message = {"headers": list(headers)}
    starlette = MutableHeaders(scope=message)
    starlette["Vary"] = ", ".join([*starlette.getlist("Vary"), "Origin"])
    assert vary_origin(list(headers)) == message["headers"]
