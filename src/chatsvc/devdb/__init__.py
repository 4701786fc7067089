"""A private PostgreSQL cluster for `make run`, the test suite and the benchmark.

- cluster: `PrivateCluster`, the cluster itself (initdb, pg_ctl, a Unix socket, its DSN; `destroy()`
  removes a throwaway one)
- host: the machine around it (PostgreSQL's binaries, the user servers run as when we are root)
- commands: `chatsvc devdb start|stop|remove|url|exec`
"""

from chatsvc.devdb.cluster import DATABASE, DURABLE_MARK, NOT_DURABLE, SETTINGS, SUPERUSER, PrivateCluster
from chatsvc.devdb.commands import exec_with_database, remove, start, stop, url
from chatsvc.devdb.host import DevDbError, Owner, find_bindir, remove_home, server_home

__all__ = [
    "DATABASE", "DURABLE_MARK", "NOT_DURABLE", "SETTINGS", "SUPERUSER", "DevDbError", "Owner",
    "PrivateCluster", "exec_with_database", "find_bindir", "remove", "remove_home", "server_home", "start",
    "stop", "url",
]
