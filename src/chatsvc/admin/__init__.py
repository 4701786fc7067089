"""The admin app: probes, metrics and (when enabled) debug routes; reached by operators, never by clients."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from chatsvc.admin import debug
from chatsvc.admin.probes import healthz, prometheus_metrics, readyz
from chatsvc.api.error_handlers import EXCEPTION_HANDLERS
from chatsvc.middleware.internal_errors import InternalErrors
from chatsvc.middleware.response_headers import ResponseHeaders
from chatsvc.middleware.trailing_slash import TrailingSlash
from chatsvc.resources import Resources

ROUTES = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", prometheus_metrics, methods=["GET"]),
]


def build_admin_app(resources: Resources) -> Starlette:
    """The admin routes; `/debug/*` only with `CHATSVC_DEBUG_ENDPOINTS=true`."""
    routes = [*ROUTES, *(debug.ROUTES if resources.settings.debug_endpoints else [])]
    app = Starlette(routes=routes, exception_handlers=EXCEPTION_HANDLERS,
                    middleware=[Middleware(ResponseHeaders),
                                Middleware(InternalErrors), Middleware(TrailingSlash)])
    app.state.resources = resources  # read back through resources.resources_of
    return app
