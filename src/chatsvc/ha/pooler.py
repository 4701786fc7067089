"""PgBouncer in transaction pooling mode (deploy/ha/pgbouncer.ini), in front of one PostgreSQL address."""

from __future__ import annotations

import socket
from pathlib import Path

from chatsvc.devdb import find_bindir, server_home
from chatsvc.ha.daemons import Daemon, chown, program, reap, remove_root, render, wait_until
from chatsvc.ports import free_port

# PgBouncer 1.18 looks users up in this file even with auth_type trust; the password is unused.
AUTH_FILE = '"postgres" ""\n'


class PgBouncer:
    """One PgBouncer in root, pooling `dbname` on upstream host:port; a context manager.

    `upstream_host` is an address or a Unix socket directory, as in libpq.
    """

    def __init__(self, root: Path, upstream_host: str, upstream_port: int, dbname: str = "chatsvc") -> None:
        self.root = self.requested_root = Path(root).resolve()  # root: where it is, once started
        self.upstream = (upstream_host, upstream_port)
        self.dbname = dbname
        self.port = 0
        self.daemon: Daemon | None = None

    @property
    def url(self) -> str:
        """The URL for CHATSVC_POOLER_URL: the database is named chatsvc in PgBouncer's own table."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/chatsvc"

    def __enter__(self) -> PgBouncer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> str:
        binary = program("pgbouncer", "pgbouncer")
        self.root, owner = server_home(self.root, find_bindir())
        chown(self.root, owner)  # its servers write their own files here
        reap(self.root)  # what a killed earlier run left
        auth_file = self.root / "userlist.txt"
        auth_file.write_text(AUTH_FILE)
        chown(auth_file, owner)
        self.port = free_port()
        config = render("pgbouncer.ini", self.root / "pgbouncer.ini", owner, port=self.port,
                        upstream_host=self.upstream[0], upstream_port=self.upstream[1],
                        dbname=self.dbname, pidfile=self.root / "pgbouncer.pid", auth_file=auth_file)
        self.daemon = Daemon("pgbouncer", [binary, str(config)], self.root, owner).start()
        try:
            wait_until("PgBouncer listens", self._listening, 30, self.daemon)
        except BaseException:
            self.stop()
            raise
        return self.url

    def stop(self) -> None:
        if self.daemon:
            self.daemon.stop()

    def destroy(self) -> None:
        """Stop, then remove root (its configuration and log are written anew by every start)."""
        self.stop()
        remove_root(self.root, self.requested_root)

    def _listening(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=1):
            return True
