"""A private, throwaway PostgreSQL cluster in a directory of the project, on a Unix socket."""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile
from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

from chatsvc.devdb.host import (
    DevDbError,
    Owner,
    chown,
    chown_tree,
    existing_service_user,
    find_bindir,
    home_for,
    owner_of,
    remove_home,
    run_tool,
    server_home,
    tail,
)

DATABASE = "chatsvc"
SUPERUSER = "postgres"
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
# In the data directory of a cluster ever started durable: destroy() refuses it, whatever the
# object at hand was told, so `make run`'s cluster cannot be taken for a throwaway one.
DURABLE_MARK = "chatsvc-durable"
# sun_path holds 108 bytes, and the socket directory must leave room for "/.s.PGSQL.<port>".
_SOCKET_DIR_MAX = 90
_CREATE_DATABASE = (
    "SELECT 'CREATE DATABASE chatsvc'"
    " WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'chatsvc')\\gexec\n"
)


class PrivateCluster:
    """A PostgreSQL cluster in root/pg that listens only on a Unix socket.

    `durable=False` turns fsync, synchronous_commit and full_page_writes off, for clusters whose
    data does not matter (the test suite, the benchmark); `make run`'s cluster is durable. Only a
    throwaway cluster can be destroyed (`destroy`).
    """

    def __init__(
        self, root: Path, *, durable: bool = True, settings: Mapping[str, str] | None = None
    ) -> None:
        self.root = Path(root).resolve()
        self.durable = durable
        self.settings = {**SETTINGS, **(settings or {})}  # over SETTINGS, for this cluster only
        self.bindir = find_bindir()
        self._place(existing_service_user() if os.geteuid() == 0 else None)
        self.dsn: str | None = None  # set while this object has the cluster running

    def _place(self, owner: Owner) -> None:
        """Put the cluster in root, or, when its user cannot reach root's parent, in a directory it owns."""
        self.home = home_for(self.root, owner)
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
            if self.durable:
                self._mark_durable(owner)
            self.stop()  # a postmaster left running by a killed previous run
            # stop() found no live postmaster of ours, so any pid file left is stale
            (self.data / "postmaster.pid").unlink(missing_ok=True)
            sockdir = self._socket_dir(owner)
            port = _free_port(sockdir)
            options = _options(sockdir, port, self.durable, self.settings)
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

    def destroy(self) -> None:
        """Stop a throwaway cluster and remove its files; DevDbError for a durable one.

        Each run that makes a throwaway cluster removes it: kept, they piled up (some 45 MB each),
        out of sight under /var/tmp when the server's user cannot reach root (see `home_for`).
        """
        if self.durable or (self.data / DURABLE_MARK).exists():
            raise DevDbError(f"{self.data} is a durable cluster: it is never destroyed")
        self.remove()

    def remove(self) -> None:
        """Stop the cluster and remove its files wherever they are, durable or not: only for one
        the user asked to be rid of (`chatsvc devdb remove`, which `make clean` runs)."""
        self.stop()
        for directory in (self.data, self.home / "pg.initdb", self.home / "run"):
            shutil.rmtree(directory, ignore_errors=True)
        self.log.unlink(missing_ok=True)
        remove_home(self.home, self.root)

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
            chown_tree(self.data, owner)  # made when another user was the server's user
        # Errors in the log may quote data: readable by the cluster's owner only.
        self.log.touch(mode=0o600)
        self.log.chmod(0o600)
        chown(self.log, owner)
        return owner

    def _mark_durable(self, owner: Owner) -> None:
        mark = self.data / DURABLE_MARK
        if not mark.exists():
            mark.write_text("chatsvc: a durable cluster; chatsvc.devdb never destroys it\n")
            chown(mark, owner)

    def _initdb(self, owner: Owner) -> None:
        """Initialise the cluster next to root/pg and move it in place, so it is whole or absent."""
        staging = self.home / "pg.initdb"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(mode=0o700)
        chown(staging, owner)
        argv = [str(self.bindir / "initdb"), "-D", str(staging), "--auth=trust", "-U", SUPERUSER]
        argv += ["--encoding=UTF8", "--locale=C", "--no-sync"]
        proc = run_tool(argv, owner=owner, cwd=self.home)
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
        chown(sockdir, owner)
        return sockdir

    def _create_database(self, dsn: str) -> None:
        """Create the chatsvc database unless it exists."""
        psql = self.bindir / "psql"
        argv = [str(psql) if psql.exists() else "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", dsn]
        proc = run_tool(argv, input=_CREATE_DATABASE)
        if proc.returncode != 0:
            raise DevDbError(f"could not create database {DATABASE}:\n{proc.stdout}{proc.stderr}")

    def _pg_ctl(self, *args: str) -> None:
        """Run pg_ctl on the cluster as its owner; on failure, raise with the tail of pg.log."""
        argv = [str(self.bindir / "pg_ctl"), "-D", str(self.data), *args]
        proc = run_tool(argv, owner=owner_of(self.data), cwd=self.home)
        if proc.returncode != 0:
            raise DevDbError(
                f"pg_ctl {args[0]} failed for {self.data}:\n{proc.stdout}{proc.stderr}"
                f"--- last lines of {self.log} ---\n{tail(self.log)}"
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


def _free_port(sockdir: Path) -> int:
    """The first port from 5432 with no socket in sockdir (the port only names the socket)."""
    return next(port for port in range(5432, 65536) if not (sockdir / f".s.PGSQL.{port}").exists())


def _options(sockdir: Path, port: int, durable: bool, chosen: Mapping[str, str]) -> str:
    """postgres settings for pg_ctl -o, quoted because pg_ctl hands them to /bin/sh."""
    settings = {"listen_addresses": "", "port": str(port), "unix_socket_directories": str(sockdir)}
    settings |= chosen if durable else {**chosen, **NOT_DURABLE}
    return " ".join(f"-c {shlex.quote(f'{name}={value}')}" for name, value in settings.items())


def _dsn(sockdir: Path, port: int, database: str = DATABASE) -> str:
    """A Unix-socket URL that both libpq (psql) and asyncpg accept."""
    return f"postgresql://{SUPERUSER}@/{database}?host={quote(str(sockdir), safe='/')}&port={port}"
