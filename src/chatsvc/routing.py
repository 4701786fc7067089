"""The router of the public app: Starlette's, with the fixed paths looked up instead of scanned."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.routing import BaseRoute, Match, Route, Router
from starlette.types import Receive, Scope, Send


def scanned_route(routes: Sequence[BaseRoute], scope: Scope) -> BaseRoute | None:
    """The route Starlette's router hands `scope` to: the first full match, else the first partial
    (a path whose route takes other methods: the 405)."""
    partial = None
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return route
        if match is Match.PARTIAL and partial is None:
            partial = route
    return partial


class IndexedRouter(Router):
    """Starlette's router, which tries every route's pattern in turn until one matches (fifteen
    for `/messages`), with a dictionary in front of it for the paths without parameters.

    A path is indexed only when no route listed before it could match that path, so the indexed
    route is the one the scan would find first; anything else (a 405, a 404, a path with
    parameters) goes through the scan unchanged.
    """

    def __init__(self, routes: Sequence[BaseRoute]) -> None:
        super().__init__(routes=list(routes))
        self.fixed: dict[str, Route] = {}
        for position, route in enumerate(self.routes):
            if isinstance(route, Route) and not route.param_convertors:
                earlier = self.routes[:position]
                if not any(_could_match(other, route.path) for other in earlier):
                    self.fixed.setdefault(route.path, route)

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        indexed = scope["type"] == "http" and not scope.get("root_path")
        route = self.fixed.get(scope["path"]) if indexed else None
        if route is not None:
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                scope.setdefault("router", self)
                scope["route"] = route
                scope.update(child_scope)
                await route.handle(scope, receive, send)
                return
        await super().app(scope, receive, send)


def _could_match(route: BaseRoute, path: str) -> bool:
    pattern = getattr(route, "path_regex", None)
    return pattern is None or pattern.match(path) is not None
