"""Session tokens: made from `secrets`, read from `Authorization`, stored only as SHA-256."""

from __future__ import annotations

import hashlib
import re
import secrets

from starlette.types import Scope

# 256 bits: far past the 128 the contract asks for, and still a short header.
TOKEN_BYTES = 32
# Tokens we issue are 43 URL-safe characters; anything far longer is not ours.
_PLAUSIBLE_TOKEN = re.compile(r"[\x21-\x7e]{1,256}")


def new_token() -> tuple[str, bytes]:
    """A fresh token and the digest that is all the database ever sees of it."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    return token, digest(token)


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def token_digest(authorization: str) -> bytes | None:
    """The digest of the token in `Authorization` (`Bearer <t>` or a bare `<t>`); None if malformed."""
    header = authorization.strip()
    scheme, _, rest = header.partition(" ")
    token = rest.strip() if scheme.lower() == "bearer" else header
    if not _PLAUSIBLE_TOKEN.fullmatch(token):
        return None
    return digest(token)


# Where `presented_digest` keeps its answer in a request's scope state.
_PRESENTED = "presented_token_digest"


def presented_digest(scope: Scope) -> bytes | None:
    """The digest of the token the request presents in its (first) `Authorization` header; None
    when it has none or it is malformed. Worked out once per request and kept in the scope's
    state: the rate limiter and the handler both need it."""
    state = scope.setdefault("state", {})
    if _PRESENTED in state:
        presented: bytes | None = state[_PRESENTED]
        return presented
    authorization = next((value for name, value in scope["headers"] if name == b"authorization"), b"")
    presented = token_digest(authorization.decode("latin-1"))
    state[_PRESENTED] = presented
    return presented
