"""Free loopback ports, for the servers this package starts on a machine of its own: the test
harness's `chatsvc serve` processes and the daemons of `chatsvc.ha` (which ships in the image)."""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nothing listens on now (the kernel's pick)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])
