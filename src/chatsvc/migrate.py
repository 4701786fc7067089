"""Applies the numbered SQL files of `sql/` in order, each once, under an advisory lock."""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

log = logging.getLogger("chatsvc.migrate")

# Any constant works; it only has to be the same for every replica.
ADVISORY_LOCK_KEY = 0x63686174737663  # "chatsvc"

MIGRATION_NAME = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")

CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    name       text        PRIMARY KEY,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(Exception):
    """The database and the files of `sql/` disagree in a way that needs a person."""


@dataclass(frozen=True, slots=True)
class Migration:
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def default_sql_dir() -> Path:
    """`CHATSVC_SQL_DIR`, else `sql/` of a source checkout, else `./sql`."""
    if configured := os.environ.get("CHATSVC_SQL_DIR"):
        return Path(configured)
    checkout = Path(__file__).resolve().parents[2] / "sql"
    return checkout if checkout.is_dir() else Path.cwd() / "sql"


def load_migrations(sql_dir: Path) -> list[Migration]:
    """The migration files in apply order; a stray name is an error, not a silent skip."""
    if not sql_dir.is_dir():
        raise MigrationError(f"migrations directory {sql_dir} does not exist")
    migrations = []
    for path in sorted(sql_dir.iterdir()):
        if path.suffix != ".sql":
            continue
        if not MIGRATION_NAME.fullmatch(path.name):
            raise MigrationError(f"{path.name}: migration files are named NNNN_lowercase_words.sql")
        migrations.append(Migration(path.name, path.read_text(encoding="utf-8")))
    numbers = [m.name[:4] for m in migrations]
    if len(set(numbers)) != len(numbers):
        raise MigrationError("two migration files share a number")
    return migrations


async def migrate(dsn: str, sql_dir: Path | None = None) -> list[str]:
    """Apply every pending migration, then the data steps SQL cannot do; returns the names applied."""
    migrations = load_migrations(sql_dir or default_sql_dir())
    # A role may carry the request pool's statement_timeout (deploy/cnpg); a migration may take longer.
    connection = await asyncpg.connect(dsn, server_settings={"statement_timeout": "0"})
    try:
        applied = await apply_pending(connection, migrations)
        await fill_username_skeletons(connection)
        return applied
    finally:
        await connection.close()


# Accounts from before sql/0004 whose TR39 skeleton is not computed yet, a batch at a time.
_SKELETONLESS = """
SELECT id, username, username_key FROM users
WHERE legacy_key AND username_skeleton IS NULL ORDER BY id LIMIT $1
"""
_SET_SKELETONS = """
UPDATE users SET username_skeleton = filled.skeleton
FROM unnest($1::bigint[], $2::text[]) AS filled (id, skeleton) WHERE users.id = filled.id
"""
SKELETON_BATCH = 1000


async def fill_username_skeletons(connection: asyncpg.Connection) -> int:
    """Compute the skeleton of every older account that lacks one (chatsvc.usernames); how many."""
    from chatsvc import usernames

    has_column = await connection.fetchval(
        "SELECT EXISTS (SELECT FROM information_schema.columns"
        " WHERE table_name = 'users' AND column_name = 'username_skeleton'"
        " AND table_schema = current_schema())")
    if not has_column:  # migrating with an older sql/ directory
        return 0
    filled = 0
    while rows := await connection.fetch(_SKELETONLESS, SKELETON_BATCH):
        skeletons = [usernames.skeleton_of_account(row["username"], row["username_key"]) for row in rows]
        await connection.execute(_SET_SKELETONS, [row["id"] for row in rows], skeletons)
        filled += len(rows)
    if filled:
        log.info("filled username skeletons", extra={"accounts": filled})
    return filled


async def apply_pending(connection: asyncpg.Connection, migrations: list[Migration]) -> list[str]:
    """All pending migrations in one transaction, so replicas starting together cannot race."""
    applied_now = []
    async with connection.transaction():
        # The lock serialises concurrent migrators; the loser then sees the
        # winner's ledger rows and has nothing left to do.
        await connection.execute("SELECT pg_advisory_xact_lock($1)", ADVISORY_LOCK_KEY)
        await connection.execute(CREATE_LEDGER)
        rows = await connection.fetch("SELECT name, checksum FROM schema_migrations")
        applied = {row["name"]: row["checksum"] for row in rows}
        known = {m.name for m in migrations}
        if unknown := sorted(set(applied) - known):
            raise MigrationError(
                f"the database has migrations these files lack: {', '.join(unknown)}; "
                "is this an older release?")
        for migration in migrations:
            checksum = applied.get(migration.name)
            if checksum is None:
                log.info("applying migration", extra={"migration": migration.name})
                await connection.execute(migration.sql)
                await connection.execute(
                    "INSERT INTO schema_migrations (name, checksum) VALUES ($1, $2)",
                    migration.name, migration.checksum)
                applied_now.append(migration.name)
            elif checksum != migration.checksum:
                raise MigrationError(
                    f"{migration.name} was edited after it was applied "
                    f"(checksum {checksum[:12]} in the database, {migration.checksum[:12]} on "
                    "disk); migrations are forward-only: restore the file and add a new one")
    return applied_now
