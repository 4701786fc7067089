"""The public app's router: a lookup for fixed paths that always picks the route the scan would."""

from __future__ import annotations

from starlette.responses import PlainTextResponse
from starlette.routing import Match, Route

from chatsvc.app import ROUTES
from chatsvc.routing import IndexedRouter

METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")


def scanned(routes: list[Route], method: str, path: str) -> Route | None:
    """The route Starlette's router hands the request to: the first full match, else the first partial."""
    scope = {"type": "http", "method": method, "path": path, "root_path": ""}
    partial = None
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return route
        if match is Match.PARTIAL and partial is None:
            partial = route
    return partial


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
