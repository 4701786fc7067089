"""The admin app: liveness, readiness; reached by probes and operators, never by clients."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chatsvc import debug, metrics
from chatsvc.api.common import json_response
from chatsvc.api.error_handlers import EXCEPTION_HANDLERS
from chatsvc.middleware import InternalErrors, RequestId, TrailingSlash
from chatsvc.resources import Resources, resources_of


async def healthz(request: Request) -> Response:
    """Alive while the event loop answers; a database outage must not restart every pod."""
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Readiness with a reason: `{"status": "ready"}`, or 503 `{"status", "reason"}` (draining, database)."""
    readiness = resources_of(request).readiness
    if readiness.ready:
        return json_response({"status": "ready"})
    return json_response({"status": "unavailable", "reason": readiness.reason}, status=503)


async def prometheus_metrics(request: Request) -> Response:
    """Prometheus text format: requests, latency, pool, rate limiting, logins, build info."""
    body, content_type = metrics.scrape()
    return Response(body, media_type=content_type)


ROUTES = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", prometheus_metrics, methods=["GET"]),
    *debug.ROUTES,
]


def build_admin_app(resources: Resources) -> Starlette:
    app = Starlette(routes=ROUTES, exception_handlers=EXCEPTION_HANDLERS,
                    middleware=[Middleware(RequestId), Middleware(InternalErrors), Middleware(TrailingSlash)])
    app.state.resources = resources  # read back through resources.resources_of
    return app
