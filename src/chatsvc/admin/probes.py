"""Probes and scrapes of the admin listener: liveness, readiness with a reason, Prometheus metrics."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from chatsvc import metrics
from chatsvc.api.common import json_response
from chatsvc.resources import resources_of


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
