"""Per-request metrics and the access log, measured once around the whole public app."""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatsvc import metrics
from chatsvc.middleware.base import HttpMiddleware

access_log = logging.getLogger("chatsvc.access")


class Observe(HttpMiddleware):
    """Count, time and log every request by its route template, never by its raw path."""

    def __init__(self, app: ASGIApp, *, log_requests: bool) -> None:
        super().__init__(app)
        self.log_requests = log_requests

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 500  # what the client sees if the app raises before answering
        metrics.IN_FLIGHT.inc()

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            metrics.IN_FLIGHT.dec()
            self._record(scope, status, time.perf_counter() - started)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        route = scope.get("route")
        template = route.path if route is not None else metrics.UNMATCHED_ROUTE
        method = scope["method"]
        # A client may send any token as its method: only the ones HTTP defines become a label.
        label = method if method in metrics.HTTP_METHODS else metrics.OTHER_METHOD
        metrics.REQUESTS.labels(template, label, str(status)).inc()
        metrics.REQUEST_SECONDS.labels(template, label).observe(seconds)
        if self.log_requests:
            state = scope.get("state", {})
            access_log.info("request", extra={
                "request_id": state.get("request_id"), "method": method, "route": template,
                "status": status, "duration_ms": round(seconds * 1000, 3),
                "user_id": state.get("user_id")})
