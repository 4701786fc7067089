"""Login, logout, and the caller's sessions: listing them, revoking one or all."""

from __future__ import annotations

import re
import uuid

from starlette.requests import Request
from starlette.responses import Response

from chatsvc import metrics, queries
from chatsvc.api.common import (
    as_caller,
    authenticate,
    decode,
    forget_tokens,
    json_response,
    read_body,
    token_checked_first,
    token_hash,
)
from chatsvc.errors import ApiError, ErrorCode, unauthorized
from chatsvc.openapi import Operation, Reply, documented
from chatsvc.resources import resources_of
from chatsvc.schemas import (
    LoggedIn,
    LoginCredentials,
    SessionInfo,
    SessionList,
    login_decoder,
)
from chatsvc.tokens import new_token


@documented(Operation(
    "Log in",
    {200: Reply("A new session: send `token` as `Authorization: Bearer <token>`.", LoggedIn),
     400: "Not JSON, or a field breaks its rule; the message names the field.",
     401: "Wrong username or password (the same answer for both).",
     429: "Too many logins from this address (`CHATSVC_AUTH_RATE`), or too many failed logins of "
          "this account (`CHATSVC_LOGIN_FAILURES` within `CHATSVC_LOGIN_FAILURE_WINDOW`).",
     503: "The database is unreachable, or too many logins are being checked at once "
          "(`CHATSVC_HASH_QUEUE`): retry after `Retry-After` seconds."},
    body=LoginCredentials, reads_body=True, uses_database=True,
))
async def login(request: Request) -> Response:
    """Log in `{"username", "password"}`: `200 {"id", "token"}`, or 401 for a wrong name or password."""
    resources = resources_of(request)
    settings = resources.settings
    credentials = decode(login_decoder, await read_body(request))
    attempt = await queries.login_failures.begin_login(resources.pool, credentials.username,
                                               settings.login_failure_window)
    if attempt.throttled(settings.login_failures):
        metrics.LOGINS.labels(result="throttled").inc()
        metrics.RATE_LIMITED.labels(limiter="account").inc()  # every 429 counts toward the surge alert
        raise ApiError(ErrorCode.RATE_LIMITED, "too many failed logins for this account; retry later",
                       {"Retry-After": str(attempt.retry_after)})
    stored_hash = attempt.password_hash
    verdict = await resources.passwords.verify(stored_hash, credentials.password)  # 503 when queued full
    if attempt.user_id is None or stored_hash is None or not verdict.ok:
        metrics.LOGINS.labels(result="failure").inc()
        raise unauthorized("wrong username or password")
    user_id = attempt.user_id
    if verdict.new_hash is not None:
        await queries.users.replace_password_hash(resources.pool, user_id, old=stored_hash,
                                                  new=verdict.new_hash)
    token, digest = new_token()
    await queries.sessions.create_session(resources.pool, digest, user_id=user_id,
                                          policy=resources.session_policy, user_agent=user_agent(request))
    await queries.login_failures.login_succeeded(resources.pool, attempt)
    metrics.LOGINS.labels(result="success").inc()
    request.state.user_id = user_id
    return json_response(LoggedIn(user_id, token))


@documented(Operation(
    "Log out",
    {204: Reply("The token is revoked, on every replica.")},
    authenticated=True, uses_database=True,
))
async def logout(request: Request) -> Response:
    """Revoke the presented token; every replica rejects it from the next request on."""
    await authenticate(request)
    digest = token_hash(request)
    resources = resources_of(request)
    await queries.sessions.revoke_session(resources.pool, digest)
    resources.known_tokens.forget(digest)
    return Response(status_code=204)


@documented(Operation(
    "List the caller's sessions",
    {200: Reply("The caller's live sessions, newest first, at most `CHATSVC_SESSIONS_LISTED` "
                "(100 by default): the presented one, marked `current`, and the newest others. "
                "`id` is a public identifier: it cannot authenticate.", SessionList)},
    authenticated=True, uses_database=True,
))
async def list_sessions(request: Request) -> Response:
    """`{"sessions": [...]}`: the caller's live sessions, newest first, the presented one among them."""
    rows = await as_caller(request, token_hash(request), queries.sessions.sessions_of_caller,
                           limit=resources_of(request).settings.sessions_listed)
    return json_response(SessionList([
        SessionInfo(row["id"], row["created_at"], row["last_seen_at"], row["expires_at"],
                    row["user_agent"], row["current"]) for row in rows]))


@documented(Operation(
    "Revoke one of the caller's sessions",
    {204: Reply("Revoked; its streams end, on every replica."),
     404: "No session of the caller has this id."},
    authenticated=True, uses_database=True,
))
async def revoke_session(request: Request) -> Response:
    """Revoke the caller's session `id` (the presented one included, if it is that one)."""
    digest = token_hash(request)
    async with token_checked_first(request):
        public_id = _public_session_id(request.path_params["id"])
        if public_id is None:
            raise ApiError(ErrorCode.NOT_FOUND, "id: no such session")
    revoked = await as_caller(request, digest, queries.sessions.revoke_session_by_id, public_id=public_id)
    if not revoked.token_hashes:
        raise ApiError(ErrorCode.NOT_FOUND, "id: no such session")
    forget_tokens(request, revoked.token_hashes)
    return Response(status_code=204)


@documented(Operation(
    "Log out everywhere",
    {204: Reply("Every session of the caller is revoked, the presented one included; their "
                "streams end, on every replica.")},
    authenticated=True, uses_database=True,
))
async def logout_all(request: Request) -> Response:
    """Revoke every session of the caller."""
    revoked = await as_caller(request, token_hash(request), queries.sessions.revoke_all_sessions)
    forget_tokens(request, revoked.token_hashes)
    return Response(status_code=204)


def user_agent(request: Request) -> str | None:
    """The request's User-Agent as stored with its session: printable, at most the configured length."""
    raw = request.headers.get("user-agent")
    if raw is None:
        return None
    cleaned = _UNPRINTABLE.sub("", raw).strip()[:resources_of(request).settings.session_user_agent_chars]
    return cleaned or None


def _public_session_id(raw: str) -> str | None:
    """The canonical form of a session id, or None when `raw` cannot be one."""
    if len(raw) > _UUID_TEXT_MAX:
        return None
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        return None


_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# The longest spelling uuid.UUID accepts: braces, "urn:uuid:" and hyphens around 32 digits.
_UUID_TEXT_MAX = 45
