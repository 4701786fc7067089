"""Strict HTTP/1.1 framing on hypercorn (RFC 9112), its own error answers in the envelope, and
cleartext HTTP/2 only when asked for.

hypercorn's h11 protocol accepts a request carrying both `Content-Length` and `Transfer-Encoding`
(the chunked body wins) and goes on serving the connection: behind a proxy that believed the
length instead, the rest of that body is a smuggled request. Here such a request is 400 and the
connection closes after the answer. The answers the server gives before any app sees the request
(a malformed request line or length: 400, a head over `CHATSVC_MAX_HEADER_BYTES`: 431, a
transfer coding other than chunked: 501) carry the error envelope, an `X-Request-ID` and
`X-Content-Type-Options` like every other answer. Cleartext HTTP/2 (`Upgrade: h2c`, or the
prior-knowledge preface) is served only with `CHATSVC_H2C=true`; otherwise the upgrade is ignored
(the request is answered in HTTP/1.1) and the preface is 400.

hypercorn has no hook for this, so `install` replaces the HTTP/1.1 protocol class it builds.
"""

from __future__ import annotations

import contextlib
import secrets
from itertools import chain

import h11
import hypercorn.protocol
from hypercorn.events import Closed
from hypercorn.protocol.h11 import H11Protocol

from chatsvc.errors import STATUS, ErrorCode
from chatsvc.schemas import ErrorBody, ErrorDetail, encoder

# What the server's own refusals say, by status; any other status h11 hints at becomes a 400.
_REFUSALS = {
    400: (ErrorCode.INVALID_REQUEST, "the request is not valid HTTP/1.1"),
    431: (ErrorCode.HEADERS_TOO_LARGE, "the request line and headers are too large"),
    501: (ErrorCode.NOT_IMPLEMENTED, "only the chunked transfer coding is supported"),
}


def install(*, h2c: bool) -> None:
    """Serve HTTP/1.1 with `StrictH11Protocol` from now on, in this process."""
    StrictH11Protocol.allow_h2c = h2c
    # Not re-exported by hypercorn.protocol, but looked up there at each connection: replaced there.
    hypercorn.protocol.H11Protocol = StrictH11Protocol  # type: ignore[attr-defined]


class _Refused(Exception):
    """The request was answered with an error and the connection is closing."""


class StrictH11Protocol(H11Protocol):
    """hypercorn's HTTP/1.1 protocol, refusing ambiguous framing and (unless allowed) h2c."""

    allow_h2c = False

    async def handle(self, event: object) -> None:
        with contextlib.suppress(_Refused):
            await super().handle(event)  # type: ignore[arg-type]

    async def _check_protocol(self, event: h11.Request) -> None:
        names = {name.lower() for name, _ in event.headers}
        if b"content-length" in names and b"transfer-encoding" in names:
            await self._refuse(400, "a request may not carry both Content-Length and Transfer-Encoding")
        if not self.allow_h2c:
            if event.method == b"PRI" and event.http_version == b"2.0":
                await self._refuse(400, "cleartext HTTP/2 is not served here; use HTTP/1.1")
            upgrade = b"".join(value for name, value in event.headers if name.lower() == b"upgrade")
            if upgrade.strip().lower() == b"h2c":
                return  # the upgrade is ignored, as RFC 9110 allows: answered in HTTP/1.1
        await super()._check_protocol(event)

    async def _send_error_response(self, status_code: int) -> None:
        """hypercorn's answer to a request h11 could not parse, in the envelope."""
        code, message = _REFUSALS.get(status_code, _REFUSALS[400])
        await self._send_refusal(code, message)

    async def _refuse(self, status_code: int, message: str) -> None:
        code, _ = _REFUSALS[status_code]
        await self._send_refusal(code, message)
        await self.send(Closed())
        raise _Refused

    async def _send_refusal(self, code: ErrorCode, message: str) -> None:
        body = encoder.encode(ErrorBody(ErrorDetail(code, message)))
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)),
                   (b"connection", b"close"), (b"x-content-type-options", b"nosniff"),
                   (b"x-request-id", secrets.token_hex(16).encode())]
        response = h11.Response(status_code=STATUS[code],
                                headers=list(chain(headers, self.config.response_headers("h11"))))
        await self._send_h11_event(response)
        await self._send_h11_event(h11.Data(data=body))
        await self._send_h11_event(h11.EndOfMessage())
