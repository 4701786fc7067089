"""Per-request metrics and the access log, measured once around the whole public app."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatsvc import metrics
from chatsvc.logs import log_access
from chatsvc.middleware.base import HttpMiddleware
from chatsvc.routing import scanned_route


class Observe(HttpMiddleware):
    """Count, time and log every request by its route template, never by its raw path.

    The time runs from the request reaching this layer to the response's last body message
    having been handed to the server: what the client waits for. Whatever the app still does
    after that (a background task, releasing what it held) is not the request's latency.
    """

    def __init__(self, app: ASGIApp, *, log_requests: bool, routes: Sequence[BaseRoute] = (),
                 clock: Callable[[], float] = time.perf_counter) -> None:
        super().__init__(app)
        self.log_requests = log_requests
        self.routes = routes  # to name the route of an answer given before routing (a 429, a 431)
        self.clock = clock

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        clock = self.clock
        started = clock()
        status = 500  # what the client sees if the app raises before answering
        finished: float | None = None
        tally = metrics.REQUEST_TALLY
        tally.in_flight += 1

        async def send_observed(message: Message) -> None:
            nonlocal status, finished
            if message["type"] == "http.response.start":
                status = message["status"]
                await send(message)
                return
            await send(message)
            if finished is None and not message.get("more_body", False):
                finished = clock()

        try:
            await self.app(scope, receive, send_observed)
        finally:
            tally.in_flight -= 1
            self._record(scope, status, (finished if finished is not None else clock()) - started)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        # An answer given before routing (a 429, a 431) is named by the route the router would have chosen.
        route = scope.get("route") or scanned_route(self.routes, scope)
        template = getattr(route, "path", metrics.UNMATCHED_ROUTE)
        method = scope["method"]
        # A client may send any token as its method: only the ones HTTP defines become a label.
        label = method if method in metrics.HTTP_METHODS else metrics.OTHER_METHOD
        metrics.REQUEST_TALLY.observe(template, label, status, seconds)
        if self.log_requests:
            state = scope.get("state", {})
            log_access(time.time(), state.get("request_id"), method, template, status,
                       round(seconds * 1000, 3), state.get("user_id"))
