"""A TCP port on loopback that leads to a Unix socket: the private cluster, reached over TCP.

The suite's private PostgreSQL listens on a Unix socket only (no TCP port to collide with, or to be
reached by, anything else on the machine). A container, like a pod, reaches its database over TCP:
this relay gives it a loopback port for the lifetime of one test module.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

CHUNK = 65536


class UnixSocketRelay:
    """Forwards every connection to 127.0.0.1:`port` to the Unix socket at `path`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def __enter__(self) -> UnixSocketRelay:
        threading.Thread(target=self._accept, name="relay-accept", daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed by __exit__
            upstream = socket.socket(socket.AF_UNIX)
            try:
                upstream.connect(str(self.path))
            except OSError:
                client.close()
                upstream.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(source, target), daemon=True).start()


def _pump(source: socket.socket, target: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(CHUNK):
            target.sendall(data)
    with contextlib.suppress(OSError):
        target.shutdown(socket.SHUT_WR)


def unix_socket_of(dsn: str) -> Path | None:
    """The socket file a postgresql:// URL with `?host=/dir&port=N` names, or None for a TCP URL."""
    query = parse_qs(urlsplit(dsn).query)
    host = query.get("host", [""])[0]
    if not host.startswith("/"):
        return None
    return Path(host) / f".s.PGSQL.{query.get('port', ['5432'])[0]}"


def over_tcp(dsn: str, port: int) -> str:
    """`dsn` (a Unix-socket URL) as a URL to 127.0.0.1:`port`, same user and database."""
    parts = urlsplit(dsn)
    user = parts.username or "postgres"
    return urlunsplit(("postgresql", f"{user}@127.0.0.1:{port}", parts.path, "", ""))
