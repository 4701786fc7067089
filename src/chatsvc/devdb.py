"""A private, throwaway PostgreSQL cluster for `make run` and the test suite."""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
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
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "128MB",
}

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
    """A PostgreSQL cluster in root/pg that listens only on a Unix socket."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.data = self.root / "pg"
        self.log = self.root / "pg.log"
        self.bindir = _find_bindir()
        self.dsn: str | None = None  # set while this object has the cluster running

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
            self._pg_ctl("start", "-w", "-t", "60", "-l", str(self.log), "-o", _options(sockdir, port))
            self._create_database(_dsn(sockdir, port, database="postgres"))
        except BaseException:
            self.stop()  # never leave a half-started postmaster behind
            raise
        self.dsn = _dsn(sockdir, port)
        return self.dsn

    def stop(self) -> None:
        """Stop the cluster if it is running."""
        self.dsn = None
        pidfile = self._postmaster()
        if pidfile is None:
            return
        self._pg_ctl("stop", "-m", "fast", "-w")
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
        """Create root, the cluster (first time only) and the log, owned by the server's user."""
        self.root.mkdir(parents=True, exist_ok=True)
        owner = _service_user() if os.geteuid() == 0 else None
        if owner:
            _grant_traverse(self.root, owner[0])
            _grant_traverse(self.bindir, owner[0])
        if not (self.data / "PG_VERSION").exists():
            self._initdb(owner)
        elif owner and self.data.stat().st_uid != owner[0]:
            _chown_tree(self.data, owner)  # made when another user was the server's user
        self.log.touch()
        _chown(self.log, owner)
        return owner

    def _initdb(self, owner: Owner) -> None:
        """Initialise the cluster next to root/pg and move it in place, so it is whole or absent."""
        staging = self.root / "pg.initdb"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(mode=0o700)
        _chown(staging, owner)
        argv = [str(self.bindir / "initdb"), "-D", str(staging), "--auth=trust", "-U", SUPERUSER]
        argv += ["--encoding=UTF8", "--locale=C", "--no-sync"]
        proc = _run(argv, owner=owner, cwd=self.root)
        if proc.returncode != 0:
            raise DevDbError(f"initdb failed for {self.data}:\n{proc.stdout}{proc.stderr}")
        staging.rename(self.data)

    def _socket_dir(self, owner: Owner) -> Path:
        """root/run, or a fresh directory under the temp dir if root/run is too long for a socket."""
        sockdir = self.root / "run"
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
        proc = _run(argv, owner=_owner_of(self.data), cwd=self.root)
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
    """Runs one child process, passing SIGINT and SIGTERM on to it while installed."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.caught: int | None = None
        self._saved: dict[int, Any] = {}

    def __enter__(self) -> _Child:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._saved[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)

    def run(self, argv: list[str], env: dict[str, str]) -> int:
        """Run argv and return its exit status (128 + N if signal N ended it, shell style)."""
        if self.caught is not None:  # interrupted while the cluster was starting
            return 128 + self.caught
        try:
            self.process = subprocess.Popen(argv, env=env)
        except OSError as exc:
            print(f"devdb: cannot run {argv[0]}: {exc.strerror}", file=sys.stderr)
            return 127
        if self.caught is not None:  # arrived while Popen was still returning
            self.process.send_signal(self.caught)
        status = self.process.wait()
        return 128 - status if status < 0 else status

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        self.caught = sig
        if self.process is None or (sig == signal.SIGINT and _in_foreground()):
            return  # no child yet, or the terminal's Ctrl-C already reached it directly
        self.process.send_signal(sig)


def _in_foreground() -> bool:
    """True if our process group (which the child shares) is the terminal's foreground group."""
    try:
        fd = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
    except OSError:
        return False
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    finally:
        os.close(fd)


def _find_bindir() -> Path:
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


def _service_user() -> tuple[int, int]:
    """The unprivileged user to run PostgreSQL as (it refuses root): postgres, else chatsvc-pg."""
    for name in ("postgres", SERVICE_USER):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return entry.pw_uid, entry.pw_gid
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


def _grant_traverse(path: Path, uid: int) -> None:
    """Add o+x (search, not read) to path and its ancestors where uid could not pass."""
    for directory in (path, *path.parents):
        info = directory.stat()
        if info.st_uid != uid and not info.st_mode & stat.S_IXOTH:
            directory.chmod(stat.S_IMODE(info.st_mode) | stat.S_IXOTH)


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


def _options(sockdir: Path, port: int) -> str:
    """postgres settings for pg_ctl -o, quoted because pg_ctl hands them to /bin/sh."""
    settings = {"listen_addresses": "", "port": str(port), "unix_socket_directories": str(sockdir)}
    settings |= SETTINGS
    return " ".join(f"-c {shlex.quote(f'{name}={value}')}" for name, value in settings.items())


def _dsn(sockdir: Path, port: int, database: str = DATABASE) -> str:
    """A Unix-socket URL that both libpq (psql) and asyncpg accept."""
    return f"postgresql://{SUPERUSER}@/{database}?host={quote(str(sockdir), safe='/')}&port={port}"


def _run(
    argv: list[str], *, owner: Owner = None, cwd: Path | None = None, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a tool to completion in its own session, so a terminal Ctrl-C does not reach it."""
    as_owner = {"user": owner[0], "group": owner[1], "extra_groups": []} if owner else {}
    return subprocess.run(
        argv,
        input=input,
        stdin=subprocess.DEVNULL if input is None else None,
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        start_new_session=True,
        **as_owner,
    )


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
