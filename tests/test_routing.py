"""The public app's router: a lookup for fixed paths that always picks the route the scan would."""

from __future__ import annotations

import contextlib

import pytest
from starlette.responses import PlainTextResponse
from starlette.routing import BaseRoute, Route, Router
from starlette.types import Message

from chatsvc.app import ROUTES
from chatsvc.routing import IndexedRouter, scanned_route

METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")
# Each route's path with its parameters filled in, and paths no route takes.
PATHS = [
    *(route.path.replace("{peer:int}", "7").replace("{version}", "v1").replace("{name}", "app.js")
      .replace("{id}", "abc") for route in ROUTES),
    "/nope", "/messages/stream/x", "/conversations/x/read",
]


def scanned(routes: list[Route], method: str, path: str) -> BaseRoute | None:
    return scanned_route(routes, {"type": "http", "method": method, "path": path, "root_path": ""})


async def chosen_by_starlette(routes: list[Route], method: str, path: str) -> BaseRoute | None:
    """The route Starlette's own router hands the request to (the handler then fails, having no app)."""
    scope = {"type": "http", "method": method, "path": path, "root_path": "", "query_string": b"",
             "headers": []}

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        pass

    with contextlib.suppress(Exception):
        await Router(routes=routes).app(scope, receive, send)
    route: BaseRoute | None = scope.get("route")
    return route


@pytest.mark.parametrize("method", METHODS)
async def test_the_scan_picks_the_route_starlettes_router_picks(method: str) -> None:
    """Observe names an answer given before routing (a 429) by this scan: it must be the route the
    request would have reached."""
    chosen = [await chosen_by_starlette(ROUTES, method, path) for path in PATHS]
    assert [scanned(ROUTES, method, path) for path in PATHS] == chosen
    assert len({id(route) for route in chosen if route is not None}) >= len(ROUTES) // 2  # not all 404s


def test_every_fixed_path_of_the_app_is_indexed_to_the_route_the_scan_picks() -> None:
    router = IndexedRouter(ROUTES)
    fixed = [route for route in ROUTES if not route.param_convertors]
    assert set(router.fixed) == {route.path for route in fixed}
    for path, route in router.fixed.items():
        for method in route.methods or ():
            assert scanned(ROUTES, method, path) is route, (method, path)


def test_a_path_an_earlier_route_could_match_is_left_to_the_scan() -> None:
    endpoint = PlainTextResponse("ok")
    routes = [Route("/items/{name}", endpoint, methods=["GET"]),
              Route("/items/new", endpoint, methods=["GET"]),
              Route("/other", endpoint, methods=["GET"]), Route("/other", endpoint, methods=["POST"])]
    router = IndexedRouter(routes)
    # /items/new is the first route's (the scan finds it first); /other is the first route of that path.
    assert router.fixed == {"/other": routes[2]}
    assert scanned(routes, "GET", "/items/new") is routes[0]
