"""What the OpenAPI tests share: a client of an app, the documented operations, a response checked."""

from __future__ import annotations

from typing import Any

import httpx
import jsonschema
from starlette.applications import Starlette

from chatsvc.testing import media_type


def client_of(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://chatsvc")


def labels(document: dict[str, Any]) -> set[str]:
    return {f"{method.upper()} {path}" for path, item in document["paths"].items() for method in item}


def assert_conforms(document: dict[str, Any], label: str, response: httpx.Response) -> None:
    """`response` is one the document promises for `label`: status, media type, body and headers."""
    method, path = label.split(" ", 1)
    responses = document["paths"][path][method.lower()]["responses"]
    assert str(response.status_code) in responses, f"{label}: undocumented {response.status_code}"
    promised = responses[str(response.status_code)]
    if "content" not in promised:
        assert response.content == b""
    else:
        assert media_type(response) in promised["content"], response.headers
        schema = promised["content"][media_type(response)]["schema"]
        body = response.json() if media_type(response) == "application/json" else response.text
        validator = jsonschema.Draft202012Validator(
            {**schema, "components": document["components"]},
            format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
        validator.validate(body)
    for name, header in promised.get("headers", {}).items():
        header = document["components"]["headers"][header["$ref"].rsplit("/", 1)[1]]
        if header.get("required"):
            assert name.lower() in response.headers, f"{label} {response.status_code}: no {name}"
