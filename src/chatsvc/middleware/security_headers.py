"""The headers of docs/API.md's "Security headers and caching", on every answer of the listener.

- `X-Content-Type-Options: nosniff` everywhere, so no answer is ever sniffed into HTML or script;
- `Cache-Control: no-store` on `/login` and on every answer to a request that carried a token:
  they hold a token or a user's data, which no shared or browser cache may keep;
- on HTML, a `Content-Security-Policy` with `frame-ancestors 'none'` (no page may frame ours),
  added to a page's own policy or given alone;
- on the public listener, whose CORS layer answers preflights, a 405's `Allow` lists `OPTIONS`.
"""

from __future__ import annotations

from starlette.types import Message, Scope

NO_STORE_PATHS = frozenset({"/login"})
FRAME_ANCESTORS = b"frame-ancestors 'none'"
NOSNIFF = (b"x-content-type-options", b"nosniff")
NO_STORE = (b"cache-control", b"no-store")


def is_private(scope: Scope) -> bool:
    """Whether the answer may hold a token or a user's data: `/login`, or a request with a token."""
    return ((scope["path"].rstrip("/") or "/") in NO_STORE_PATHS
            or any(name == b"authorization" for name, _ in scope["headers"]))


def secured(message: Message, private: bool, cors_answers_options: bool) -> list[tuple[bytes, bytes]]:
    """The response start's headers, names lowercased, with the security headers set."""
    headers = [(name.lower(), value) for name, value in message.get("headers", ())]
    found = dict(headers)
    replaced = dict([NOSNIFF, NO_STORE] if private else [NOSNIFF])
    if found.get(b"content-type", b"").startswith(b"text/html"):
        policy = found.get(b"content-security-policy")
        if policy is None:
            replaced[b"content-security-policy"] = FRAME_ANCESTORS
        elif b"frame-ancestors" not in policy:
            replaced[b"content-security-policy"] = policy.rstrip(b"; ") + b"; " + FRAME_ANCESTORS
    allow = found.get(b"allow")
    if cors_answers_options and message["status"] == 405 and allow is not None:
        methods = [method.strip() for method in allow.split(b",") if method.strip()]
        if b"OPTIONS" not in methods:
            replaced[b"allow"] = b", ".join([*methods, b"OPTIONS"])
    if any(name in replaced for name in found):
        headers = [(name, value) for name, value in headers if name not in replaced]
    headers.extend(replaced.items())
    return headers
