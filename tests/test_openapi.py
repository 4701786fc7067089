"""The OpenAPI document: valid OpenAPI 3.1, generated from the route table, every route documented.

What real requests get back is checked against it in test_openapi_responses.py, the patterns that
stand in for `__post_init__` rules in test_openapi_patterns.py.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator
from starlette.applications import Starlette
from starlette.endpoints import HTTPEndpoint
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import chatsvc
from chatsvc import schemas
from chatsvc.app import ROUTES
from chatsvc.config import Settings
from chatsvc.openapi import (
    OPERATION_ATTRIBUTE,
    Operation,
    Reply,
    UndocumentedRoute,
    build_document,
    documented,
    documented_operations,
)
from chatsvc.testing import media_type
from tests.openapi_checks import (
    assert_conforms,
    labels,
)

AUTHENTICATED = {"POST /logout", "GET /messages", "POST /messages", "GET /messages/stream",
                 "GET /users", "GET /users/me", "PUT /users/me/password", "GET /sessions",
                 "DELETE /sessions/{id}", "POST /logout/all", "GET /conversations",
                 "GET /conversations/{peer}/messages", "PUT /conversations/{peer}/read"}


# --- the document ---------------------------------------------------------------------------------

def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    OpenAPIV31SpecValidator(document).validate()
    assert document["openapi"] == "3.1.0"
    assert document["info"]["version"] == chatsvc.__version__


def test_every_route_and_method_of_the_app_is_documented(app: Starlette, document: dict[str, Any]) -> None:
    routed = set()
    for route in app.routes:
        assert isinstance(route, Route)
        if isinstance(route.endpoint, type) and issubclass(route.endpoint, HTTPEndpoint):
            methods = {m for m in ("GET", "POST", "PUT", "PATCH", "DELETE")
                       if hasattr(route.endpoint, m.lower())}
        else:
            methods = set(route.methods or ()) - {"HEAD"}
        routed |= {f"{method} {route.path_format}" for method in methods}
    assert routed == labels(document)


def test_a_route_without_an_operation_is_refused() -> None:
    async def undocumented(request: Request) -> Response:
        return Response()

    class HalfDocumented(HTTPEndpoint):
        @documented(Operation("Read", {200: Reply("ok")}))
        async def get(self, request: Request) -> Response:
            return Response()

        async def put(self, request: Request) -> Response:
            return Response()

    with pytest.raises(UndocumentedRoute, match="GET /new"):
        list(documented_operations([*ROUTES, Route("/new", undocumented)]))
    with pytest.raises(UndocumentedRoute, match="PUT /half"):
        list(documented_operations([*ROUTES, Route("/half", HalfDocumented)]))
    assert not hasattr(undocumented, OPERATION_ATTRIBUTE)


def test_authenticated_operations_name_the_bearer_scheme_and_document_401(document: dict[str, Any]) -> None:
    assert document["components"]["securitySchemes"]["bearer"]["type"] == "http"
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for path, item in document["paths"].items():
        for method, operation in item.items():
            label = f"{method.upper()} {path}"
            assert (operation.get("security") == [{"bearer": []}]) == (label in AUTHENTICATED), label
            if label in AUTHENTICATED:
                assert "401" in operation["responses"]


def test_the_structs_are_described_as_the_server_reads_them(document: dict[str, Any]) -> None:
    components = document["components"]["schemas"]
    content = components["Content"]
    assert content["discriminator"]["propertyName"] == "type"
    assert set(content["discriminator"]["mapping"]) == set(schemas.CONTENT_TYPES)
    assert len(content["oneOf"]) == len(schemas.CONTENT_TYPES)
    for name in ("Text", "Image", "Video"):
        # Unknown fields inside `content` are rejected...
        assert components[name]["additionalProperties"] is False
    # ...unknown top-level fields are ignored.
    assert "additionalProperties" not in components["NewMessage"]
    assert components["Image"]["properties"]["width"] == {
        "type": "integer", "minimum": 1, "maximum": 32767, "default": 64}
    assert components["Video"]["properties"]["source"]["enum"] == ["vimeo", "youtube"]
    assert components["Image"]["required"] == ["type", "url"]
    listing = {p["name"]: p for p in document["paths"]["/messages"]["get"]["parameters"]}
    assert {name: p["required"] for name, p in listing.items()} == {
        "recipient": True, "start": False, "limit": False}
    assert listing["limit"]["schema"]["maximum"] == schemas.PAGE_MAX
    sending = document["paths"]["/messages"]["post"]["parameters"]
    assert [(p["name"], p["in"], p["required"]) for p in sending] == [("Idempotency-Key", "header", False)]


def test_the_text_limit_follows_the_setting(app: Starlette, settings: Settings) -> None:
    document = build_document(app.routes, settings.replace(max_text_chars=7))
    assert document["components"]["schemas"]["Text"]["properties"]["text"]["maxLength"] == 7


async def test_it_is_served_as_json_and_built_once_per_app(
    app: Starlette, api: httpx.AsyncClient, document: dict[str, Any]
) -> None:
    first = await api.get("/openapi.json")
    assert first.status_code == 200
    assert media_type(first) == "application/json"
    assert first.json() == document
    assert_conforms(document, "GET /openapi.json", first)
    built = app.state.openapi_document
    second = await api.get("/openapi.json")
    assert second.content == first.content
    assert app.state.openapi_document is built
