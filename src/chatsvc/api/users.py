"""Accounts: sign-up, the caller's own account, looking people up, changing one's password."""

from __future__ import annotations

from starlette.endpoints import HTTPEndpoint
from starlette.requests import Request
from starlette.responses import Response

from chatsvc import queries, usernames
from chatsvc.api.common import (
    as_caller,
    decode,
    forget_tokens,
    json_response,
    read_body,
    token_checked_first,
    token_hash,
)
from chatsvc.errors import ApiError, ErrorCode, invalid_request
from chatsvc.openapi import Operation, Reply, documented
from chatsvc.resources import resources_of
from chatsvc.schemas import (
    MAX_ID,
    USERS_PER_LOOKUP,
    Credentials,
    Me,
    PasswordChange,
    UserCreated,
    UserList,
    UsersQuery,
    UserSummary,
    credentials_decoder,
    password_change_decoder,
)


class Users(HTTPEndpoint):
    """`/users`: POST signs up, GET looks people up."""

    @documented(Operation(
        "Sign up",
        {201: Reply("The account exists.", UserCreated),
         400: "Not JSON, or a field breaks its rule; the message names the field.",
         409: "The username is taken: compared case-insensitively and width-mapped (PRECIS), and a "
              "look-alike of an existing name (Unicode TR39 confusables) counts as taken."},
        body=Credentials, reads_body=True, uses_database=True,
    ))
    async def post(self, request: Request) -> Response:
        """Sign up `{"username", "password"}`: `201 {"id"}`, or 409 when the name is taken."""
        return await create_user(request)

    @documented(Operation(
        "Look people up by name or by ids",
        {200: Reply("The accounts found, in the order asked for; unknown names or ids are absent.",
                    UserList),
         400: f"Neither or both parameters, more than {USERS_PER_LOOKUP} ids, an id out of range, "
              "or a name the sign-up rule refuses."},
        description="`username`: compared as login compares it. `id`: repeated, for the display "
                    "names of a page of messages.",
        query=UsersQuery, authenticated=True, uses_database=True,
    ))
    async def get(self, request: Request) -> Response:
        """`{"users": [{"id", "username"}, ...]}` for `username=` or for `id=` repeated."""
        return await find_users(request)


async def create_user(request: Request) -> Response:
    resources = resources_of(request)
    credentials = decode(credentials_decoder, await read_body(request))
    password_hash = await resources.passwords.hash(credentials.password)
    user_id = await queries.users.create_user(resources.pool, username=credentials.username,
                                              password_hash=password_hash)
    if user_id is None:
        raise ApiError(ErrorCode.CONFLICT, "username: this name is taken")
    return json_response(UserCreated(user_id), status=201)


async def find_users(request: Request) -> Response:
    digest = token_hash(request)
    async with token_checked_first(request):
        name, ids = _lookup(request)
    if name is not None:
        rows = await as_caller(request, digest, queries.users.user_by_name, name=name)
    else:
        rows = await as_caller(request, digest, queries.users.users_by_id, ids=ids)
    return json_response(UserList([UserSummary(row["id"], row["username"])
                                   for row in rows if row["id"] is not None]))


@documented(Operation(
    "The caller's own account",
    {200: Reply("The caller's id, name as chosen at sign-up, and when the account was made.", Me)},
    authenticated=True, uses_database=True,
))
async def me(request: Request) -> Response:
    """`{"id", "username", "created_at"}` of the caller."""
    row = await as_caller(request, token_hash(request), queries.users.me)
    return json_response(Me(row["caller"], row["username"], row["created_at"]))


@documented(Operation(
    "Change the caller's password",
    {204: Reply("Changed; every other session of the caller is revoked, the presented one stays."),
     400: "Not JSON, or `new_password` breaks the sign-up rule; the message names the field.",
     403: "`current_password` is wrong; nothing changed.",
     409: "The password or this session changed meanwhile; nothing changed, try again."},
    description="Counts against the sign-up and login rate limit (`CHATSVC_AUTH_RATE`).",
    body=PasswordChange, authenticated=True, reads_body=True, uses_database=True,
))
async def change_password(request: Request) -> Response:
    """Check `current_password`, store `new_password` hashed anew, revoke every other session."""
    resources = resources_of(request)
    digest = token_hash(request)
    async with token_checked_first(request):
        change = decode(password_change_decoder, await read_body(request))
    # Two round trips: the stored hash must be read before the password can be checked against it.
    row = await as_caller(request, digest, queries.users.password_hash)
    caller: int = row["caller"]
    verdict = await resources.passwords.verify(row["password_hash"], change.current_password)
    if not verdict.ok:
        raise ApiError(ErrorCode.FORBIDDEN, "current_password: wrong password")
    new_hash = await resources.passwords.hash(change.new_password)
    changed, revoked = await queries.users.change_password(
        resources.pool, caller, old_hash=row["password_hash"], new_hash=new_hash, keep=digest)
    if not changed:
        raise ApiError(ErrorCode.CONFLICT, "the password or this session changed meanwhile; try again")
    forget_tokens(request, revoked)
    return Response(status_code=204)


def _lookup(request: Request) -> tuple[str | None, list[int]]:
    """(the name of `username=`, valid under the sign-up rule, or None; the ids of `id=`), or 400."""
    names = request.query_params.getlist("username")
    raw_ids = request.query_params.getlist("id")
    if bool(names) == bool(raw_ids):
        raise invalid_request("username, id: give one of them (id may be repeated), not both")
    if names:
        if len(names) > 1:
            raise invalid_request("username: give it once")
        try:
            usernames.display_name(names[0])
        except usernames.InvalidUsername as error:
            raise invalid_request(f"username: {error}") from None
        return names[0], []
    if len(raw_ids) > USERS_PER_LOOKUP:
        raise invalid_request(f"id: expected at most {USERS_PER_LOOKUP} ids")
    ids = []
    for raw in raw_ids:
        if not (raw.isdecimal() and raw.isascii() and len(raw) <= 19 and 1 <= int(raw) <= MAX_ID):
            raise invalid_request(f"id: expected integers from 1 to {MAX_ID}")
        ids.append(int(raw))
    return None, list(dict.fromkeys(ids))

