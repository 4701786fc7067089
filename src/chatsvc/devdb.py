"""A private, throwaway PostgreSQL cluster for `make run` and the test suite."""

from __future__ import annotations

import hashlib
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import quote

DATABASE = "chatsvc"
SUPERUSER = "postgres"
SERVICE_USER = "chatsvc-pg"
SETTINGS = {
    "max_connections": "200",
    "shared_buffers": "128MB",
    # The log keeps errors but not the text of each refused statement (it may hold user input).
    "log_min_error_statement": "panic",
}
# Only for throwaway clusters (the test suite, the benchmark): a crash of the server loses the
# last commits, which `make run`'s durable cluster must never do.
NOT_DURABLE = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}
# Where the cluster goes when we are root and its user cannot reach the requested root (a home
# directory of mode 0700, say): a directory of its own, instead of widening the path's permissions.
UNREACHABLE_ROOT_FALLBACK = Path("/var/tmp")  # noqa: S108 (kept across reboots, unlike /tmp)

# sun_path holds 108 bytes, and the socket directory must leave room for "/.s.PGSQL.<port>".
_SOCKET_DIR_MAX = 90
_TOOLS = ("initdb", "pg_ctl", "postgres")
_CREATE_DATABASE = (
    "SELECT 'CREATE DATABASE chatsvc'"
    " WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'chatsvc')\\gexec\n"
)

Owner = tuple[int, int] | None


class DevDbError(RuntimeError):
    """The private cluster could not be set up, started or stopped."""


class PrivateCluster:
    """A PostgreSQL cluster in root/pg that listens only on a Unix socket.

    `durable=False` turns fsync, synchronous_commit and full_page_writes off, for clusters whose
    data does not matter (the test suite, the benchmark); `make run`'s cluster is durable.
    """

    def __init__(self, root: Path, *, durable: bool = True) -> None:
        self.root = Path(root).resolve()
        self.durable = durable
        self.bindir = find_bindir()
        self._place(_existing_service_user() if os.geteuid() == 0 else None)
        self.dsn: str | None = None  # set while this object has the cluster running

    def _place(self, owner: Owner) -> None:
        """Put the cluster in root, or, when its user cannot reach root's parent, in a directory it owns."""
        self.home = _home(self.root, owner)
        self.data = self.home / "pg"
        self.log = self.home / "pg.log"

    def __enter__(self) -> PrivateCluster:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> str:
        """Start the cluster (initialising it on first use) and return its DSN."""
        try:
            owner = self._prepare()
            self.stop()  # a postmaster left running by a killed previous run
            # stop() found no live postmaster of ours, so any pid file left is stale
            (self.data / "postmaster.pid").unlink(missing_ok=True)
            sockdir = self._socket_dir(owner)
            port = _free_port(sockdir)
            options = _options(sockdir, port, self.durable)
            self._pg_ctl("start", "-w", "-t", "60", "-l", str(self.log), "-o", options)
            self._create_database(_dsn(sockdir, port, database="postgres"))
        except BaseException:
            self.stop()  # never leave a half-started postmaster behind
            raise
        self.dsn = _dsn(sockdir, port)
        return self.dsn

    def stop(self, mode: str = "fast") -> None:
        """Stop the cluster if it is running (`mode` as pg_ctl's: `immediate` is a crash)."""
        self.dsn = None
        pidfile = self._postmaster()
        if pidfile is None:
            return
        self._pg_ctl("stop", "-m", mode, "-w")
        if len(pidfile) > 4:
            with suppress(OSError):  # only empty dirs go; root/run is recreated at start
                Path(pidfile[4]).rmdir()

    def url(self) -> str | None:
        """The DSN of the running cluster, or None if it is not running."""
        pidfile = self._postmaster()
        if pidfile is None or len(pidfile) < 5:
            return None
        return _dsn(Path(pidfile[4]), int(pidfile[3]))

    def _prepare(self) -> Owner:
        """Create root, the cluster (first time only) and the log, owned by the server's user.

        No directory's permissions are widened: as root, the cluster lives where its user can
        reach it (see `_place`), and the PostgreSQL binaries must be reachable as installed.
        """
        self.home, owner = server_home(self.root, self.bindir)
        self.data, self.log = self.home / "pg", self.home / "pg.log"
        if not (self.data / "PG_VERSION").exists():
            self._initdb(owner)
        elif owner and self.data.stat().st_uid != owner[0]:
            _chown_tree(self.data, owner)  # made when another user was the server's user
        # Errors in the log may quote data: readable by the cluster's owner only.
        self.log.touch(mode=0o600)
        self.log.chmod(0o600)
        _chown(self.log, owner)
        return owner

    def _initdb(self, owner: Owner) -> None:
        """Initialise the cluster next to root/pg and move it in place, so it is whole or absent."""
        staging = self.home / "pg.initdb"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(mode=0o700)
        _chown(staging, owner)
        argv = [str(self.bindir / "initdb"), "-D", str(staging), "--auth=trust", "-U", SUPERUSER]
        argv += ["--encoding=UTF8", "--locale=C", "--no-sync"]
        proc = _run(argv, owner=owner, cwd=self.home)
        if proc.returncode != 0:
            raise DevDbError(f"initdb failed for {self.data}:\n{proc.stdout}{proc.stderr}")
        staging.rename(self.data)

    def _socket_dir(self, owner: Owner) -> Path:
        """home/run, or a fresh directory under the temp dir if home/run is too long for a socket."""
        sockdir = self.home / "run"
        if len(bytes(sockdir)) <= _SOCKET_DIR_MAX:
            sockdir.mkdir(mode=0o700, exist_ok=True)
            # start() has made sure none of our postmasters is alive: these are a killed run's
            for stale in sockdir.glob(".s.PGSQL.*"):
                stale.unlink()
        else:
            sockdir = Path(tempfile.mkdtemp(prefix="chatsvc-pg-"))
        _chown(sockdir, owner)
        return sockdir

    def _create_database(self, dsn: str) -> None:
        """Create the chatsvc database unless it exists."""
        psql = self.bindir / "psql"
        argv = [str(psql) if psql.exists() else "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", dsn]
        proc = _run(argv, input=_CREATE_DATABASE)
        if proc.returncode != 0:
            raise DevDbError(f"could not create database {DATABASE}:\n{proc.stdout}{proc.stderr}")

    def _pg_ctl(self, *args: str) -> None:
        """Run pg_ctl on the cluster as its owner; on failure, raise with the tail of pg.log."""
        argv = [str(self.bindir / "pg_ctl"), "-D", str(self.data), *args]
        proc = _run(argv, owner=_owner_of(self.data), cwd=self.home)
        if proc.returncode != 0:
            raise DevDbError(
                f"pg_ctl {args[0]} failed for {self.data}:\n{proc.stdout}{proc.stderr}"
                f"--- last lines of {self.log} ---\n{_tail(self.log)}"
            )

    def _postmaster(self) -> list[str] | None:
        """The lines of postmaster.pid if the postmaster it names is alive and serves root/pg."""
        try:
            lines = (self.data / "postmaster.pid").read_text().splitlines()
            cmdline = Path(f"/proc/{int(lines[0])}/cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            return None
        # We always start it with this exact -D, so a pid reused by another process won't match.
        return lines if b"\0" + bytes(self.data) + b"\0" in b"\0" + cmdline else None


def server_home(root: Path, bindir: Path) -> tuple[Path, Owner]:
    """Create the directory for root's server files; (that directory, the user to run servers as).

    PostgreSQL refuses to run as root, and so do the tools around it (`chatsvc.ha`): when we are
    root they run as an unprivileged user, in root if that user can reach it, else in a directory
    of its own (see `_home`). No directory's permissions are widened. The user is None when we are
    not root: the servers run as ourselves, in root.
    """
    root.mkdir(parents=True, exist_ok=True)
    owner = _service_user() if os.geteuid() == 0 else None
    home = _home(root, owner)
    if owner:
        if home == root and not _reachable(root, owner):
            _chown(root, owner)  # the server's own directory (a mkdtemp one is 0700)
        elif home != root:
            home.parent.mkdir(mode=0o700, exist_ok=True)
            _chown(home.parent, owner)
            home.mkdir(mode=0o700, exist_ok=True)
            _chown(home, owner)
        if not _reachable(bindir / "postgres", owner):
            raise DevDbError(f"user {owner[0]} cannot reach the PostgreSQL binaries in {bindir};"
                             " install PostgreSQL system-wide, or run as another user than root")
    return home, owner


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


def find_bindir() -> Path:
    """The system's PostgreSQL bin directory, else the pgserver wheel's."""
    for bindir in _system_bindirs():
        if all((bindir / tool).is_file() for tool in _TOOLS):
            return bindir
    try:
        with warnings.catch_warnings():
            # pgserver warns on import (no XDG_RUNTIME_DIR) and the tests make warnings errors
            warnings.simplefilter("ignore")
            from pgserver._commands import POSTGRES_BIN_PATH
    except ImportError:
        raise DevDbError(
            "no PostgreSQL binaries found: install PostgreSQL or `pip install pgserver`"
        ) from None
    return Path(POSTGRES_BIN_PATH)


def _system_bindirs() -> Iterator[Path]:
    """Candidate bin directories: initdb on PATH, pg_config --bindir, /usr/lib/postgresql/*/bin."""
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        yield Path(initdb).resolve().parent  # Debian links them from elsewhere, without psql
    pg_config = shutil.which("pg_config")
    if pg_config:
        bindir = _run([pg_config, "--bindir"]).stdout.strip()
        if bindir:
            yield Path(bindir)
    yield from sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version, reverse=True)


def _version(bindir: Path) -> tuple[int, ...]:
    """The version in /usr/lib/postgresql/<version>/bin, for sorting."""
    return tuple(int(part) for part in bindir.parent.name.split(".") if part.isdigit())


def _existing_service_user() -> Owner:
    """The unprivileged user to run PostgreSQL as (it refuses root): postgres, else chatsvc-pg."""
    for name in ("postgres", SERVICE_USER):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return entry.pw_uid, entry.pw_gid
    return None


def _service_user() -> tuple[int, int]:
    """The existing service user, else a new system user chatsvc-pg."""
    if owner := _existing_service_user():
        return owner
    argv = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER]
    proc = _run(argv)
    if proc.returncode != 0:
        raise DevDbError(f"could not create user {SERVICE_USER}:\n{proc.stdout}{proc.stderr}")
    entry = pwd.getpwnam(SERVICE_USER)
    return entry.pw_uid, entry.pw_gid


def _owner_of(path: Path) -> Owner:
    """Whom to run PostgreSQL as for path: its owner if we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    info = path.stat()
    return info.st_uid, info.st_gid


def _home(root: Path, owner: Owner) -> Path:
    """root, or, when owner cannot reach root's parent, a directory under /var/tmp of its own."""
    if owner and not _reachable(root.parent, owner):
        tag = hashlib.sha256(bytes(root)).hexdigest()[:16]
        return UNREACHABLE_ROOT_FALLBACK / f"chatsvc-devdb-{owner[0]}" / tag
    return root


def _reachable(path: Path, owner: tuple[int, int]) -> bool:
    """Whether `owner` can reach path (every ancestor searchable) and, for a directory, enter it."""
    if not path.exists():
        return _reachable(path.parent, owner) if path.parent != path else True
    return _run(["test", "-x", str(path)], owner=owner).returncode == 0


def _chown(path: Path, owner: Owner) -> None:
    if owner:
        os.chown(path, *owner)


def _chown_tree(top: Path, owner: Owner) -> None:
    for directory, _, files in os.walk(top):
        _chown(Path(directory), owner)
        for name in files:
            _chown(Path(directory, name), owner)


def _free_port(sockdir: Path) -> int:
    """The first port from 5432 with no socket in sockdir (the port only names the socket)."""
    return next(port for port in range(5432, 65536) if not (sockdir / f".s.PGSQL.{port}").exists())


def _options(sockdir: Path, port: int, durable: bool) -> str:
    """postgres settings for pg_ctl -o, quoted because pg_ctl hands them to /bin/sh."""
    settings = {"listen_addresses": "", "port": str(port), "unix_socket_directories": str(sockdir)}
    settings |= SETTINGS if durable else SETTINGS | NOT_DURABLE
    return " ".join(f"-c {shlex.quote(f'{name}={value}')}" for name, value in settings.items())


def _dsn(sockdir: Path, port: int, database: str = DATABASE) -> str:
    """A Unix-socket URL that both libpq (psql) and asyncpg accept."""
    return f"postgresql://{SUPERUSER}@/{database}?host={quote(str(sockdir), safe='/')}&port={port}"


def _run(
    argv: list[str], *, owner: Owner = None, cwd: Path | None = None, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a tool to completion in its own session, so a terminal Ctrl-C does not reach it."""
    return subprocess.run(
        argv,
        input=input,
        stdin=subprocess.DEVNULL if input is None else None,
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        start_new_session=True,
        user=owner[0] if owner else None,
        group=owner[1] if owner else None,
        extra_groups=[] if owner else None,
    )


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
