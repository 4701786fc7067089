"""Sign-up."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from chatsvc import queries
from chatsvc.api.common import decode, json_response, read_body
from chatsvc.errors import ApiError, ErrorCode
from chatsvc.openapi import Operation, Reply, documented
from chatsvc.resources import resources_of
from chatsvc.schemas import Credentials, UserCreated, credentials_decoder


@documented(Operation(
    "Sign up",
    {201: Reply("The account exists.", UserCreated),
     400: "Not JSON, or a field breaks its rule; the message names the field.",
     409: "The username is taken: compared case-insensitively and width-mapped (PRECIS), and a "
          "look-alike of an existing name (Unicode TR39 confusables) counts as taken."},
    body=Credentials, reads_body=True, uses_database=True,
))
async def create_user(request: Request) -> Response:
    """Sign up `{"username", "password"}`: `201 {"id"}`, or 409 when the name is taken."""
    resources = resources_of(request)
    credentials = decode(credentials_decoder, await read_body(request))
    password_hash = await resources.passwords.hash(credentials.password)
    user_id = await queries.users.create_user(resources.pool, username=credentials.username,
                                              password_hash=password_hash)
    if user_id is None:
        raise ApiError(ErrorCode.CONFLICT, "username: this name is taken")
    return json_response(UserCreated(user_id), status=201)
