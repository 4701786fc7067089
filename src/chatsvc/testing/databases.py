"""Throwaway databases on a PostgreSQL server: DATABASE_URL's, or a private cluster."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from chatsvc.migrate import migrate


def with_database(dsn: str, name: str) -> str:
    """`dsn` pointing at database `name` on the same server."""
    return urlunsplit(urlsplit(dsn)._replace(path="/" + name))


@contextlib.contextmanager
def postgres_server(root: Path) -> Iterator[str]:
    """A PostgreSQL server's DSN: DATABASE_URL's when set, else a private cluster under `root`,
    destroyed on the way out (each run makes its own: kept, they piled up)."""
    if url := os.environ.get("DATABASE_URL"):
        yield url
        return
    from chatsvc.devdb import PrivateCluster

    cluster = PrivateCluster(root, durable=False)  # throwaway: speed over crash safety
    if running := cluster.url():
        # Another run holds it: share it (each run makes databases of its own on it).
        yield running
        return
    try:
        yield cluster.start()
    finally:
        cluster.destroy()


class DatabaseFactory:
    """Creates throwaway databases on one server and drops them all at the end."""

    def __init__(self, server_dsn: str, prefix: str = "chatsvc_test") -> None:
        self.server_dsn = server_dsn
        self.prefix = prefix
        self.names: list[str] = []

    async def create(self, *, migrated: bool = False) -> str:
        """A new empty database's URL; with `migrated`, the schema applied."""
        name = f"{self.prefix}_{secrets.token_hex(4)}"
        connection = await asyncpg.connect(self.server_dsn)
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()
        self.names.append(name)
        url = with_database(self.server_dsn, name)
        if migrated:
            await migrate(url)
        return url

    async def drop_all(self) -> None:
        connection = await asyncpg.connect(self.server_dsn)
        try:
            for name in self.names:
                await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()
        self.names.clear()
