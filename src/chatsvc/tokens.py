"""Session tokens: made from `secrets`, read from `Authorization`, stored only as SHA-256."""

from __future__ import annotations

import hashlib
import re
import secrets

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
