"""HTTP/1.1 over a raw loopback socket, for what an HTTP client library would not send or would hide.

A raw socket is driven with the event loop's `sock_*` calls rather than asyncio streams: a failed
send must not discard what the server already sent, exactly as a real client that keeps reading
after `EPIPE` still sees the answer sitting in its receive buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx

# How long to wait for an answer or a close that is due: only a hang takes longer, however loaded
# the machine (waits for what must NOT happen use short timeouts of their own).
HUNG = 30.0


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def as_httpx(self) -> httpx.Response:
        """The same answer as an httpx.Response, for chatsvc.testing's checks."""
        return httpx.Response(self.status, headers=self.headers, content=self.body)


@dataclass
class RawConnection:
    """One loopback TCP connection; `closed_by_peer` is "eof" or "reset" once the server closed it."""

    sock: socket.socket
    buffer: bytearray = field(default_factory=bytearray)
    closed_by_peer: str | None = None

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, port: int, send_buffer: int | None = None) -> AsyncIterator[RawConnection]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            if send_buffer is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
            yield cls(sock)
        finally:
            sock.close()

    async def send(self, data: bytes) -> bool:
        """Send all of `data`; False when the server has closed the connection under us."""
        try:
            await asyncio.get_running_loop().sock_sendall(self.sock, data)
        except (BrokenPipeError, ConnectionResetError):
            return False
        return True

    async def receive(self, timeout: float) -> bytes | None:
        """The next bytes into `buffer`: b"" once the peer closed, None if nothing came in time."""
        if self.closed_by_peer:
            return b""
        try:
            data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(self.sock, 65536), timeout)
        except TimeoutError:
            return None
        except ConnectionResetError:
            self.closed_by_peer = "reset"
            return b""
        if not data:
            self.closed_by_peer = "eof"
        self.buffer += data
        return data

    async def read_response(self, timeout: float) -> RawResponse | None:
        """One complete response (Content-Length framed), or None if the peer closed before one came."""
        deadline = time.monotonic() + timeout
        while True:
            response = self._parse()
            if response is not None:
                return response
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no complete response within {timeout} s: {bytes(self.buffer)!r}"
            data = await self.receive(remaining)
            if data == b"":
                return self._parse()

    async def wait_closed(self, timeout: float) -> str | None:
        """How the server closed the connection ("eof" or "reset"), or None if it kept it open."""
        deadline = time.monotonic() + timeout
        while not self.closed_by_peer and (remaining := deadline - time.monotonic()) > 0:
            await self.receive(remaining)
        return self.closed_by_peer

    def _parse(self) -> RawResponse | None:
        head, separator, rest = bytes(self.buffer).partition(b"\r\n\r\n")
        if not separator:
            return None
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        assert "content-length" in headers, f"response without Content-Length: {head!r}"
        length = int(headers["content-length"])
        if len(rest) < length:
            return None
        del self.buffer[:len(head) + 4 + length]
        return RawResponse(int(status_line.split()[1]), headers, rest[:length])


def request_head(method: str, target: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", *(f"{name}: {value}" for name, value in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
