"""`chatsvc devdb start|stop|remove|url|exec`: a command run with DATABASE_URL set, signals relayed to it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path
from types import FrameType
from typing import Any

from chatsvc.devdb.cluster import PrivateCluster


def exec_with_database(argv: list[str], root: Path) -> int:
    """Run argv with DATABASE_URL set, using a private cluster in root unless it is already set."""
    with _Child() as child:
        if os.environ.get("DATABASE_URL"):
            return child.run(argv, dict(os.environ))
        cluster = PrivateCluster(root)
        if running := cluster.url():
            # Another command (`make run`, say) owns it: share it, and leave stopping to the owner.
            print(f"devdb: using the private cluster already running in {root}", file=sys.stderr)
            return child.run(argv, {**os.environ, "DATABASE_URL": running})
        try:
            return child.run(argv, {**os.environ, "DATABASE_URL": cluster.start()})
        finally:
            cluster.stop()


def start(root: Path) -> int:
    """`devdb start`: start the private cluster in root and print its DSN."""
    print(PrivateCluster(root).start())
    return 0


def stop(root: Path) -> int:
    """`devdb stop`: stop the private cluster in root if it is running."""
    PrivateCluster(root).stop()
    return 0


def remove(root: Path) -> int:
    """`devdb remove`: stop the private cluster in root and remove its files, also those kept out
    of sight under /var/tmp when PostgreSQL's user cannot reach root."""
    PrivateCluster(root).remove()
    return 0


def url(root: Path) -> int:
    """`devdb url`: print the DSN of the private cluster running in root."""
    dsn = PrivateCluster(root).url()
    if dsn is None:
        print(f"devdb: no private cluster is running in {root}", file=sys.stderr)
        return 1
    print(dsn)
    return 0


class _Child:
    """Runs one child process in a process group of its own, relaying SIGINT and SIGTERM to it once.

    A signal to our whole process group (a CI runner or a supervisor stopping `make run`) reaches
    make and us; had the child shared the group, the server would hear it directly and again from
    us, and a second signal means "exit at once" instead of draining. In a group of its own the
    child hears it from us only. make relays a SIGTERM it gets to us too: the same signal again
    within DUPLICATE_SIGNAL_SECONDS is the same event, not a second request. At a terminal the
    child's group becomes the foreground one, so Ctrl-C (and psql's prompt) reach it directly.
    """

    DUPLICATE_SIGNAL_SECONDS = 1.0

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.caught: int | None = None
        self._relayed: tuple[int, float] | None = None
        self._saved: dict[int, Any] = {}
        self._terminal = _foreground_terminal()

    def __enter__(self) -> _Child:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._saved[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)
        if self._terminal is not None:
            _give_terminal(self._terminal, os.getpgrp())
            os.close(self._terminal)

    def run(self, argv: list[str], env: dict[str, str]) -> int:
        """Run argv and return its exit status (128 + N if signal N ended it, shell style)."""
        if self.caught is not None:  # interrupted while the cluster was starting
            return 128 + self.caught
        terminal = self._terminal

        def own_group() -> None:  # in the child, before exec; the parent does the same (no race)
            os.setpgid(0, 0)
            if terminal is not None:
                _give_terminal(terminal, os.getpgrp())

        try:
            self.process = subprocess.Popen(argv, env=env, preexec_fn=own_group)
        except OSError as exc:
            print(f"devdb: cannot run {argv[0]}: {exc.strerror}", file=sys.stderr)
            return 127
        with suppress(OSError):  # already done by the child, or the child is gone
            os.setpgid(self.process.pid, self.process.pid)
            if terminal is not None:
                _give_terminal(terminal, self.process.pid)
        if self.caught is not None:  # arrived while Popen was still returning
            self._relay(self.caught)
        status = self.process.wait()
        return 128 - status if status < 0 else status

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        self.caught = sig
        if self.process is not None:
            self._relay(sig)

    def _relay(self, sig: int) -> None:
        assert self.process is not None
        now = time.monotonic()
        if self._relayed is not None:
            last_sig, last_at = self._relayed
            if last_sig == sig and now - last_at < self.DUPLICATE_SIGNAL_SECONDS:
                return
        self._relayed = sig, now
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)


def _foreground_terminal() -> int | None:
    """A descriptor of our controlling terminal if our process group is its foreground, else None."""
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return None
    try:
        if os.tcgetpgrp(fd) == os.getpgrp():
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def _give_terminal(fd: int, pgid: int) -> None:
    """Make pgid the terminal's foreground group (SIGTTOU ignored, as a shell does for a job)."""
    saved = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        with suppress(OSError):
            os.tcsetpgrp(fd, pgid)
    finally:
        signal.signal(signal.SIGTTOU, saved)
