"""The public app: the route table and the middleware order, nothing else."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from chatsvc import metrics, openapi
from chatsvc.api import check, conversations, messages, sessions, stream, users
from chatsvc.api.error_handlers import EXCEPTION_HANDLERS
from chatsvc.middleware.cors import Cors
from chatsvc.middleware.header_limits import HeaderLimits
from chatsvc.middleware.internal_errors import InternalErrors
from chatsvc.middleware.observe import Observe
from chatsvc.middleware.ratelimit import RateLimit
from chatsvc.middleware.response_headers import ResponseHeaders
from chatsvc.middleware.unread_body import DrainUnreadBody
from chatsvc.resources import Resources
from chatsvc.routing import IndexedRouter
from chatsvc.web import pages

CORS_REQUEST_HEADERS = ["Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID",
                        "Last-Event-ID"]
CORS_EXPOSED_HEADERS = ["X-Request-ID", "Retry-After", "RateLimit-Limit", "RateLimit-Remaining",
                        "RateLimit-Reset"]

ROUTES = [
    Route("/", pages.root, methods=["GET"]),
    Route("/docs", pages.docs, methods=["GET"]),
    Route("/static/{version}/{name}", pages.static_file, methods=["GET"]),
    Route("/check", check.check, methods=["GET"]),
    Route("/users", users.Users),
    Route("/users/me", users.me, methods=["GET"]),
    Route("/users/me/password", users.change_password, methods=["PUT"]),
    Route("/login", sessions.login, methods=["POST"]),
    Route("/logout", sessions.logout, methods=["POST"]),
    Route("/logout/all", sessions.logout_all, methods=["POST"]),
    Route("/sessions", sessions.list_sessions, methods=["GET"]),
    Route("/sessions/{id}", sessions.revoke_session, methods=["DELETE"]),
    Route("/conversations", conversations.list_conversations, methods=["GET"]),
    Route("/conversations/{peer:int}/messages", conversations.conversation_messages, methods=["GET"]),
    Route("/conversations/{peer:int}/read", conversations.mark_read, methods=["PUT"]),
    Route("/messages", messages.Messages),
    Route("/messages/stream", stream.stream_messages, methods=["GET"]),
    Route("/openapi.json", openapi.openapi_document, methods=["GET"]),
]


def build_app(resources: Resources) -> Starlette:
    settings = resources.settings
    middleware = [
        Middleware(DrainUnreadBody),
        Middleware(ResponseHeaders, cors_answers_options=True),
        Middleware(InternalErrors),
        Middleware(Observe, log_requests=settings.access_log, routes=ROUTES),
        Middleware(HeaderLimits, max_headers=settings.max_headers,
                   max_header_bytes=settings.max_header_bytes, strip_trailing_slash=True),
        Middleware(Cors, allow_origins=list(settings.cors_origins),
                   allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
                   allow_headers=CORS_REQUEST_HEADERS,
                   expose_headers=CORS_EXPOSED_HEADERS, max_age=600),
        # After CORS, so a 429 still carries CORS headers and preflights are not counted.
        Middleware(RateLimit, settings=settings, known_tokens=resources.known_tokens,
                   max_clients=settings.rate_limit_max_clients, on_limited=_count_limited),
    ]
    app = Starlette(middleware=middleware, exception_handlers=EXCEPTION_HANDLERS)
    app.router = IndexedRouter(ROUTES)  # before the first request builds the middleware stack
    app.state.resources = resources  # read back through resources.resources_of
    return app


def _count_limited(limiter: str) -> None:
    metrics.RATE_LIMITED.labels(limiter=limiter).inc()

