"""What every handler needs: bounded body reading, JSON decoding to structs, the caller's identity."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

import asyncpg
import msgspec
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from chatsvc import queries
from chatsvc.config import SessionPolicy
from chatsvc.db import BoundedPool
from chatsvc.errors import ApiError, ErrorCode, invalid_request, unauthorized
from chatsvc.resources import resources_of
from chatsvc.schemas import CONTENT_TYPES, encoder
from chatsvc.tokens import presented_digest

T = TypeVar("T")
P = ParamSpec("P")


class HasCaller(Protocol):
    """A statement's result that names the user its token authenticated."""

    @property
    def caller(self) -> int: ...


# What an authenticating statement finds: the caller's id itself, a result naming the caller, or
# rows with a `caller` column; None (or no rows) when no valid session holds the token.
Found = TypeVar("Found", bound=HasCaller | asyncpg.Record | list[asyncpg.Record] | int)

_FIELD_MESSAGE = re.compile(r"^([a-z_]+): (.*)$", re.DOTALL)
_AT_PATH = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)


class ClientGone(Exception):
    """The client went away while sending its body: no error of ours (logged at info, counted 499)."""


async def read_body(request: Request) -> bytes:
    """The request body: 413 as soon as it is known to exceed the limit, 408 if it trickles in."""
    settings = resources_of(request).settings
    limit = settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks = []
    received = 0
    try:
        async with asyncio.timeout(settings.read_timeout):
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit:
                    raise _too_large(limit)
                chunks.append(chunk)
    except ClientDisconnect:
        raise ClientGone from None
    except TimeoutError:
        raise ApiError(ErrorCode.REQUEST_TIMEOUT,
                       f"the request body did not arrive within {settings.read_timeout:g} s") from None
    return b"".join(chunks)


def decode(decoder: msgspec.json.Decoder[T], body: bytes) -> T:
    """Decode `body` with `decoder`; every failure is a 400 naming the field path."""
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as error:
        raise invalid_request(describe_validation_error(error)) from None
    except (msgspec.DecodeError, RecursionError, UnicodeError, ValueError):
        raise ApiError(ErrorCode.INVALID_JSON, "the request body is not valid JSON") from None


def convert(data: Any, kind: type[T]) -> T:
    """Validate already-parsed data (a query string merged with a body) into `kind`."""
    try:
        return msgspec.convert(data, kind)
    except msgspec.ValidationError as error:
        raise invalid_request(describe_validation_error(error)) from None


def describe_validation_error(error: msgspec.ValidationError) -> str:
    """msgspec's "Expected `int`, got `str` - at `$.recipient`" as "recipient: expected `int`, …"."""
    match = _AT_PATH.match(str(error))
    assert match is not None  # every part of the pattern is optional: it matches any text
    message, path = match.group("message"), (match.group("path") or "").lstrip(".")
    if field := _FIELD_MESSAGE.match(message):
        # Our own checks name the field inside the struct msgspec located.
        path = f"{path}.{field.group(1)}" if path else field.group(1)
        message = field.group(2)
    elif path.endswith("type") and message.startswith("Invalid value"):
        message = "expected one of " + ", ".join(f"'{name}'" for name in CONTENT_TYPES)
    elif message[:1].isupper() and not message[1:2].isupper():
        message = message[0].lower() + message[1:]
    return f"{path}: {message}" if path else message


def json_response(payload: object, status: int = 200) -> Response:
    return Response(encoder.encode(payload), status_code=status, media_type="application/json")


def token_hash(request: Request) -> bytes:
    """SHA-256 of the presented token (`Bearer <t>` or a bare `<t>`, as the original took)."""
    digest = presented_digest(request.scope)
    if digest is None:
        raise unauthorized()
    return digest


async def authenticate(request: Request) -> int:
    """The caller's user id, or 401."""
    return await as_caller(request, token_hash(request), queries.sessions.user_for_token)


async def as_caller(
    request: Request, digest: bytes,
    statement: Callable[Concatenate[BoundedPool, bytes, SessionPolicy, P], Awaitable[Found | None]],
    *args: P.args, **kwargs: P.kwargs,
) -> Found:
    """Run `statement` for the holder of the token `digest`: what it found, or 401 when no row came back.

    The statements authenticate the token in the same round trip as their work (queries.sessions);
    the caller they name is recorded as `identified` does.
    """
    resources = resources_of(request)
    found = await statement(resources.pool, digest, resources.session_policy, *args, **kwargs)
    if found is None or (isinstance(found, list) and not found):
        raise rejected(request, digest)
    identified(request, digest, _caller_of(found))
    return found


def _caller_of(found: HasCaller | asyncpg.Record | list[asyncpg.Record] | int) -> int:
    if isinstance(found, int):
        return found
    if isinstance(found, list):
        found = found[0]  # every row names the same caller
    if isinstance(found, asyncpg.Record):
        caller: int = found["caller"]
        return caller
    return found.caller


def identified(request: Request, digest: bytes, user_id: int) -> int:
    """Record who holds the token: the rate limiter keys by user, the access log names them."""
    resources_of(request).known_tokens.remember(digest, user_id)
    request.state.user_id = user_id
    return user_id


def rejected(request: Request, digest: bytes) -> ApiError:
    """The 401 for a token no valid session holds, forgotten by the rate limiter."""
    resources_of(request).known_tokens.forget(digest)  # revoked or expired, perhaps on another replica
    return unauthorized()
def forget_tokens(request: Request, token_hashes: Iterable[bytes]) -> None:
    """Forget revoked tokens here at once (the rate limiter keys by them); their streams end
    through the database's revocation notice (chatsvc.revocation)."""
    known_tokens = resources_of(request).known_tokens
    for digest in token_hashes:
        known_tokens.forget(digest)


@contextlib.asynccontextmanager
async def token_checked_first(request: Request) -> AsyncIterator[None]:
    """On a bad request, a bad token is still answered first (401), as if it had been checked first.

    The token is checked in the same statement as the work, so it is checked separately only
    on this error path and the success path stays one round trip.
    """
    try:
        yield
    except ApiError:
        await authenticate(request)
        raise


def query_parameters(request: Request, kind: type[T]) -> T:
    """The query string as the struct `kind`: digits become integers, a list field takes every
    repetition of its name, anything else is left for validation to refuse."""
    parameters: dict[str, Any] = {}
    for field in msgspec.structs.fields(kind):  # type: ignore[arg-type]
        values = request.query_params.getlist(field.encode_name)
        if not values:
            continue
        if _is_list(field.type):
            parameters[field.encode_name] = [integer_or_text(value) for value in values]
        else:
            parameters[field.encode_name] = integer_or_text(values[-1])
    return convert(parameters, kind)


def integer_or_text(value: str) -> int | str:
    """Decimal digits as an integer, else the text (`isdigit` admits `²`, which int() refuses)."""
    if value.isdecimal():
        with contextlib.suppress(ValueError):  # more digits than int() converts: stays text
            return int(value)
    return value


def _is_list(annotation: Any) -> bool:
    return "list[" in repr(annotation)


def _too_large(limit: int) -> ApiError:
    return ApiError(ErrorCode.PAYLOAD_TOO_LARGE, f"the request body exceeds {limit} bytes")
