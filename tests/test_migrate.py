"""`chatsvc migrate`: each file once, in order, safe when replicas start together, edits refused."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path

import asyncpg
import pytest

from chatsvc.migrate import MigrationError, load_migrations, migrate
from chatsvc.testing import DatabaseFactory
from tests import PROJECT_ROOT


@pytest.fixture
def sql_dir(tmp_path: Path) -> Path:
    """A copy of sql/ plus a slow second migration, so two migrators overlap for certain."""
    directory = tmp_path / "sql"
    shutil.copytree(PROJECT_ROOT / "sql", directory)
    (directory / "9001_slow.sql").write_text(
        "SELECT pg_sleep(1);\nCREATE TABLE slow_marker (id int);\n")
    return directory


async def run_migrate(database_url: str, sql_dir: Path) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "chatsvc", "migrate", "--sql-dir", str(sql_dir),
        env={**os.environ, "DATABASE_URL": database_url},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await process.communicate()
    return process.returncode, output.decode()


async def applied_names(database_url: str) -> list[str]:
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch("SELECT name FROM schema_migrations ORDER BY name")
        return [row["name"] for row in rows]
    finally:
        await connection.close()


async def test_two_processes_migrating_at_once_apply_each_file_once(
        databases: DatabaseFactory, sql_dir: Path) -> None:
    url = await databases.create()
    (code_a, out_a), (code_b, out_b) = await asyncio.gather(
        run_migrate(url, sql_dir), run_migrate(url, sql_dir))
    assert (code_a, code_b) == (0, 0), out_a + out_b
    names = [migration.name for migration in load_migrations(sql_dir)]
    outputs = sorted([out_a, out_b])
    assert "applied 0 migration(s)" in outputs[0]
    assert f"applied {len(names)} migration(s): {', '.join(names)}" in outputs[1]
    assert await applied_names(url) == names


async def test_migrating_again_changes_nothing(databases: DatabaseFactory, sql_dir: Path) -> None:
    url = await databases.create()
    assert await migrate(url, sql_dir) == [migration.name for migration in load_migrations(sql_dir)]
    assert await migrate(url, sql_dir) == []


async def test_a_new_file_is_applied_after_the_old_ones(databases: DatabaseFactory, sql_dir: Path) -> None:
    url = await databases.create()
    await migrate(url, sql_dir)
    (sql_dir / "9002_more.sql").write_text("ALTER TABLE slow_marker ADD COLUMN note text;\n")
    assert await migrate(url, sql_dir) == ["9002_more.sql"]


async def test_an_edited_applied_file_is_refused(databases: DatabaseFactory, sql_dir: Path) -> None:
    url = await databases.create()
    await migrate(url, sql_dir)
    slow = sql_dir / "9001_slow.sql"
    slow.write_text(slow.read_text() + "-- an innocent-looking edit\n")
    code, output = await run_migrate(url, sql_dir)
    assert code == 1
    assert "9001_slow.sql was edited after it was applied" in output
    assert "restore the file and add a new one" in output


async def test_a_failing_migration_leaves_nothing_behind(databases: DatabaseFactory, sql_dir: Path) -> None:
    url = await databases.create()
    (sql_dir / "9002_broken.sql").write_text("CREATE TABLE half (id int);\nSELECT no_such_function();\n")
    with pytest.raises(asyncpg.UndefinedFunctionError):
        await migrate(url, sql_dir)
    connection = await asyncpg.connect(url)
    try:
        assert await connection.fetchval("SELECT to_regclass('schema_migrations')") is None
        assert await connection.fetchval("SELECT to_regclass('half')") is None
    finally:
        await connection.close()


def test_badly_named_files_are_an_error(tmp_path: Path) -> None:
    (tmp_path / "init.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=r"NNNN_lowercase_words\.sql"):
        load_migrations(tmp_path)


def test_files_sharing_a_number_are_an_error(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    (tmp_path / "0001_b.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="share a number"):
        load_migrations(tmp_path)
