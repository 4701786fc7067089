"""The headers of docs/API.md's "Security headers and caching", on every answer of the listener.

- `X-Content-Type-Options: nosniff` everywhere, so no answer is ever sniffed into HTML or script;
- `Cache-Control: no-store` on `/login` and on every answer to a request that carried a token:
  they hold a token or a user's data, which no shared or browser cache may keep;
- on HTML, a `Content-Security-Policy` with `frame-ancestors 'none'` (no page may frame ours),
  added to a page's own policy or given alone;
- on the public listener, whose CORS layer answers preflights, a 405's `Allow` lists `OPTIONS`.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatsvc.middleware.base import HttpMiddleware

NO_STORE_PATHS = frozenset({"/login"})
FRAME_ANCESTORS = b"frame-ancestors 'none'"


class SecurityHeaders(HttpMiddleware):
    def __init__(self, app: ASGIApp, *, cors_answers_options: bool = False) -> None:
        super().__init__(app)
        self.cors_answers_options = cors_answers_options

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        private = ((scope["path"].rstrip("/") or "/") in NO_STORE_PATHS
                   or any(name == b"authorization" for name, _ in scope["headers"]))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = self._headers(message, private)
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _headers(self, message: Message, private: bool) -> list[tuple[bytes, bytes]]:
        headers = [(name.lower(), value) for name, value in message.get("headers", ())]
        found = dict(headers)
        replaced = {b"x-content-type-options": b"nosniff"}
        if private:
            replaced[b"cache-control"] = b"no-store"
        if found.get(b"content-type", b"").startswith(b"text/html"):
            policy = found.get(b"content-security-policy")
            if policy is None:
                replaced[b"content-security-policy"] = FRAME_ANCESTORS
            elif b"frame-ancestors" not in policy:
                replaced[b"content-security-policy"] = policy.rstrip(b"; ") + b"; " + FRAME_ANCESTORS
        allow = found.get(b"allow")
        if self.cors_answers_options and message["status"] == 405 and allow is not None:
            methods = [method.strip() for method in allow.split(b",") if method.strip()]
            if b"OPTIONS" not in methods:
                replaced[b"allow"] = b", ".join([*methods, b"OPTIONS"])
        return [(name, value) for name, value in headers if name not in replaced] + list(replaced.items())
