"""The OpenAPI 3.1 document, generated from the app's route table and the msgspec structs.

Each handler carries an `Operation` (attached with `@documented`) naming its request struct and
the answers it gives itself; the answers every route shares (rate limiting, oversized bodies, a
missing token, an unreachable database, the last-resort 500) are added here, so a handler
documents only what is its own. A route whose handler carries no `Operation` is an error.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
from starlette.endpoints import HTTPEndpoint
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

import chatsvc
from chatsvc.config import Settings
from chatsvc.errors import codes_for
from chatsvc.resources import resources_of
from chatsvc.schemas import Content, Conversation, ErrorBody, StoredMessage

F = TypeVar("F", bound=Callable[..., Any])

SCHEMA_REF = "#/components/schemas/{name}"
OPERATION_ATTRIBUTE = "openapi_operation"
# HEAD is answered for every GET by Starlette itself; documenting it twice says nothing new.
_IMPLICIT_METHODS = frozenset({"HEAD"})
_ENDPOINT_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

# Components whatever the routes: the error envelope, and the content union and the stored message
# the listing refers to (its `messages` is raw JSON to msgspec, described by a `$ref`).
ALWAYS_DOCUMENTED: tuple[Any, ...] = (ErrorBody, Content, StoredMessage, Conversation)



class UndocumentedRoute(Exception):
    """A route of the table has no `Operation`: document it with `@documented`."""


@dataclass(frozen=True, slots=True)
class Reply:
    """A response with a body other than the error envelope."""

    description: str
    body: Any = None  # a wire type, a JSON Schema dict, or None for no body
    media_type: str | tuple[str, ...] = "application/json"  # a tuple: any of these


@dataclass(frozen=True, slots=True)
class Header:
    """A request header an operation reads."""

    name: str
    description: str
    schema: Mapping[str, Any]
    required: bool = False


@dataclass(frozen=True, slots=True)
class Operation:
    """What one route and method accepts and answers; a `str` answer is an error in the envelope."""

    summary: str
    responses: Mapping[int, Reply | str]
    description: str = ""
    body: type[msgspec.Struct] | None = None  # the request struct, read as JSON
    query: type[msgspec.Struct] | None = None  # a struct whose fields are the query parameters
    headers: Sequence[Header] = field(default_factory=tuple)
    authenticated: bool = False
    reads_body: bool = False  # so 408 and 413 apply
    uses_database: bool = False  # so 503 applies


def documented(operation: Operation) -> Callable[[F], F]:
    """Attach `operation` to a handler (a function, or a method of an `HTTPEndpoint`)."""

    def attach(handler: F) -> F:
        setattr(handler, OPERATION_ATTRIBUTE, operation)
        return handler

    return attach


def build_document(routes: Iterable[BaseRoute], settings: Settings) -> dict[str, Any]:
    """The whole OpenAPI 3.1 document for `routes`, the app's route table."""
    operations = list(documented_operations(routes))
    # Every struct a request or response body is, each one named component.
    types = list(dict.fromkeys([
        *(operation.body for _, _, operation in operations if operation.body is not None),
        *(answer.body for _, _, operation in operations for answer in operation.responses.values()
          if isinstance(answer, Reply) and answer.body is not None and not isinstance(answer.body, Mapping)),
        *ALWAYS_DOCUMENTED]))
    refs, schemas = msgspec.json.schema_components(types, ref_template=SCHEMA_REF)
    schema_of = dict(zip(types, refs, strict=True))
    schemas = _refine(schemas, schema_of[Content], settings)
    paths: dict[str, dict[str, Any]] = {}
    for route, method, operation in operations:
        paths.setdefault(route.path_format, {})[method.lower()] = _operation(
            route, method, operation, schema_of)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "chatsvc",
            "version": chatsvc.__version__,
            "summary": "A small, fast, hardened chat API on PostgreSQL.",
            "description": _DESCRIPTION,
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {
                "type": "http", "scheme": "bearer",
                "description": "The token from `POST /login`. A bare token (`Authorization: <token>`, "
                               "as the original accepted) works too."}},
            "headers": _HEADERS,
        },
    }


def documented_operations(routes: Iterable[BaseRoute]) -> Iterator[tuple[Route, str, Operation]]:
    """(route, method, operation) for every method of every route; UndocumentedRoute if one lacks it."""
    for route in routes:
        if not isinstance(route, Route):
            raise UndocumentedRoute(f"{route!r}: only plain routes can be documented")
        for method, handler in _handlers(route):
            operation = getattr(handler, OPERATION_ATTRIBUTE, None)
            if not isinstance(operation, Operation):
                raise UndocumentedRoute(f"{method} {route.path}: the handler has no @documented(Operation)")
            yield route, method, operation


@documented(Operation(
    "This document",
    {200: Reply("The OpenAPI 3.1 description of the public API, generated from the code.",
                {"type": "object"})},
))
async def openapi_document(request: Request) -> Response:
    """This API's OpenAPI 3.1 description, generated from the route table and the msgspec structs."""
    # Built once per app, on first use: by then the route table is complete.
    state = request.app.state
    body = getattr(state, "openapi_document", None)
    if body is None:
        body = state.openapi_document = msgspec.json.encode(
            build_document(request.app.routes, resources_of(request).settings))
    return Response(body, media_type="application/json")


def _handlers(route: Route) -> Iterator[tuple[str, Any]]:
    endpoint = route.endpoint
    if isinstance(endpoint, type) and issubclass(endpoint, HTTPEndpoint):
        methods = [m for m in _ENDPOINT_METHODS if getattr(endpoint, m.lower(), None) is not None]
        for method in methods:
            yield method, getattr(endpoint, method.lower())
        return
    for method in sorted(set(route.methods or ()) - _IMPLICIT_METHODS):
        yield method, endpoint


def _operation(route: Route, method: str, operation: Operation, schema_of: Mapping[Any, Any]
               ) -> dict[str, Any]:
    words = [word for word in route.path_format.replace(".", "/").split("/") if word]
    result: dict[str, Any] = {
        "operationId": "_".join([method.lower(), *(words or ["root"])]).replace("{", "").replace("}", ""),
        "summary": operation.summary,
    }
    if operation.description:
        result["description"] = operation.description
    parameters = [*_path_parameters(route), *_query_parameters(operation.query),
                  *(_header_parameter(header) for header in operation.headers)]
    if parameters:
        result["parameters"] = parameters
    if operation.body is not None:
        result["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": _schema(operation.body, schema_of)}}}
    if operation.authenticated:
        result["security"] = [{"bearer": []}]
    result["responses"] = {str(status): _response(status, answer, schema_of)
                           for status, answer in sorted(_answers(operation).items())}
    return result


def _answers(operation: Operation) -> dict[int, Reply | str]:
    """The handler's own answers, and those every route of its kind shares."""
    answers: dict[int, Reply | str] = {}
    if operation.authenticated:
        answers[401] = "No valid session token: missing, unknown, expired or revoked."
    if operation.reads_body:
        answers[408] = "The request body did not arrive within `CHATSVC_READ_TIMEOUT`."
        answers[413] = "The request body is larger than `CHATSVC_MAX_BODY_BYTES`."
    answers[429] = ("Rate limited (`CHATSVC_RATE`; sign-up and login also `CHATSVC_AUTH_RATE`); "
                    "decided before the request has any effect.")
    answers[431] = "More request headers than `CHATSVC_MAX_HEADERS`."
    answers[500] = "An unexpected server error; it is logged with the request id."
    if operation.uses_database:
        answers[503] = "The database is unreachable; retry after `Retry-After` seconds."
    answers.update(operation.responses)
    return answers


def _response(status: int, answer: Reply | str, schema_of: Mapping[Any, Any]) -> dict[str, Any]:
    headers: dict[str, Any] = {"X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"}}
    headers.update((name, {"$ref": f"#/components/headers/{name}"})
                   for name in ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"))
    if isinstance(answer, str):
        codes = codes_for(status)
        if status == 401:
            headers["WWW-Authenticate"] = {"$ref": "#/components/headers/WWW-Authenticate"}
        if status in (429, 503):
            headers["Retry-After"] = {"$ref": "#/components/headers/Retry-After"}
        schema = {"allOf": [{"$ref": SCHEMA_REF.format(name="ErrorBody")}, {
            "properties": {"error": {"properties": {"code": {"enum": [code.value for code in codes]}}}}}]}
        return {"description": answer, "headers": headers,
                "content": {"application/json": {"schema": schema}}}
    result: dict[str, Any] = {"description": answer.description, "headers": headers}
    if answer.body is not None:
        media_types = (answer.media_type,) if isinstance(answer.media_type, str) else answer.media_type
        result["content"] = {media_type: {"schema": _schema(answer.body, schema_of)}
                             for media_type in media_types}
    return result


def _schema(body: Any, schema_of: Mapping[Any, Any]) -> dict[str, Any]:
    return dict(body) if isinstance(body, Mapping) else dict(schema_of[body])


def _path_parameters(route: Route) -> Iterator[dict[str, Any]]:
    for name, convertor in route.param_convertors.items():
        kind = "integer" if type(convertor).__name__ == "IntegerConvertor" else "string"
        yield {"name": name, "in": "path", "required": True, "schema": {"type": kind}}


def _query_parameters(query: type[msgspec.Struct] | None) -> Iterator[dict[str, Any]]:
    if query is None:
        return
    _, components = msgspec.json.schema_components([query], ref_template=SCHEMA_REF)
    properties = components[query.__name__]["properties"]
    for item in msgspec.structs.fields(query):
        schema = dict(properties[item.encode_name])
        parameter = {"name": item.encode_name, "in": "query", "required": item.required}
        if "description" in schema:
            parameter["description"] = schema.pop("description")
        yield {**parameter, "schema": _without_null(schema)}


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query string cannot say null: an optional field's None is the parameter left out."""
    branches = [branch for branch in schema.get("anyOf", ()) if branch != {"type": "null"}]
    if len(branches) != 1 or len(schema["anyOf"]) != 2:
        return schema
    rest = {key: value for key, value in schema.items() if key != "anyOf" and schema[key] is not None}
    return {**branches[0], **rest}


def _header_parameter(header: Header) -> dict[str, Any]:
    return {"name": header.name, "in": "header", "required": header.required,
            "description": header.description, "schema": dict(header.schema)}


def _refine(schemas: dict[str, Any], content: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    """What msgspec cannot know: a setting's limit, the union as one component, the stored JSON."""
    schemas = copy.deepcopy(schemas)
    schemas["Text"]["properties"]["text"]["maxLength"] = settings.max_text_chars
    union = {key: value for key, value in content.items() if key != "anyOf"}
    # The tag picks exactly one branch: say so.
    schemas["Content"] = {"title": "Content", "description": "A message's content, tagged by `type`.",
                          "oneOf": content["anyOf"], **union}
    content_ref = {"$ref": SCHEMA_REF.format(name="Content")}
    for schema in schemas.values():
        for name, property_schema in schema.get("properties", {}).items():
            if property_schema == content:
                schema["properties"][name] = dict(content_ref)
    if "StoredMessage" in schemas:
        # Raw JSON to msgspec; it is the content a client sent, stored as msgspec encoded it.
        schemas["StoredMessage"]["properties"]["content"] = {
            **content_ref, "description": "The content as it was sent, with its defaults filled in."}
    return schemas


_HEADERS = {
    "X-Request-ID": {
        "description": "The request's `X-Request-ID` when it is at most 128 visible ASCII characters, "
                       "else a generated one.",
        "required": True, "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,128}$"}},
    "RateLimit-Limit": {"description": "Burst size of the bucket closest to empty (when limiting is on).",
                        "schema": {"type": "integer", "minimum": 0}},
    "RateLimit-Remaining": {"description": "Requests left in that bucket.",
                            "schema": {"type": "integer", "minimum": 0}},
    "RateLimit-Reset": {"description": "Seconds until that bucket is full again.",
                        "schema": {"type": "integer", "minimum": 0}},
    "Retry-After": {"description": "Seconds to wait before retrying.", "required": True,
                    "schema": {"type": "integer", "minimum": 0}},
    "WWW-Authenticate": {"description": "`Bearer`.", "required": True,
                         "schema": {"type": "string", "const": "Bearer"}},
}

_DESCRIPTION = """\
A drop-in, hardened replacement for the chat service `abatilo/chat`.

- Bodies are JSON, accepted whatever the `Content-Type`. Unknown top-level fields are ignored;
  unknown fields inside a message's `content` are rejected.
- Every error is `{"error": {"code": ..., "message": ...}}`; `message` names the field path.
  Rules the schemas cannot express are still checked, and answered with `400 invalid_request`:
  a username's length counts after Unicode NFC normalisation, and an integer is written without
  a fraction or an exponent (`1`, not `1.0`; JSON Schema holds them equal).
- A known path with another method is `405 method_not_allowed` with an `Allow` header; an unknown
  path is `404 not_found`. A trailing slash names the same route.
- Every response carries `X-Request-ID`.
"""
