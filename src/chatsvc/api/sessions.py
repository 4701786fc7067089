"""Login and logout."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from chatsvc import metrics, queries
from chatsvc.api.common import authenticate, decode, json_response, read_body, token_hash
from chatsvc.errors import ApiError, ErrorCode, unauthorized
from chatsvc.openapi import Operation, Reply, documented
from chatsvc.resources import resources_of
from chatsvc.schemas import LoggedIn, LoginCredentials, login_decoder
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
                                          policy=resources.session_policy)
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
