"""The private throwaway cluster: start, reuse, restart after a killed run, exec, long paths."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from chatsvc.devdb import PrivateCluster, exec_with_database


def test_start_connect_stop_and_reuse(tmp_path: Path) -> None:
    cluster = PrivateCluster(tmp_path)
    dsn = cluster.start()
    assert dsn == cluster.dsn == cluster.url()
    assert _select_one(cluster, dsn) == "1"
    cluster.stop()
    assert cluster.url() is None
    assert not _postgres_running(tmp_path / "pg")

    with PrivateCluster(tmp_path) as again:  # reuses root/pg: no second initdb
        assert again.dsn == dsn
        assert _select_one(again, dsn) == "1"
    assert not _postgres_running(tmp_path / "pg")


def test_start_replaces_a_postmaster_left_running(tmp_path: Path) -> None:
    PrivateCluster(tmp_path).start()  # never stopped, as when its owner was killed
    with PrivateCluster(tmp_path) as cluster:
        assert _select_one(cluster, cluster.dsn) == "1"
    assert not _postgres_running(tmp_path / "pg")


def test_exec_with_database_runs_the_command_and_stops(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    root = tmp_path / ("long-" * 20)  # too long for a socket path: the socket goes to the temp dir
    argv = ["sh", "-c", "psql \"$DATABASE_URL\" -tAc 'select 1' | grep -qx 1"]
    assert exec_with_database(argv, root) == 0
    assert not _postgres_running(root / "pg")
    assert exec_with_database(["sh", "-c", "exit 3"], root) == 3


def test_exec_shares_a_running_cluster_and_leaves_it_running(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with PrivateCluster(tmp_path) as owner:  # as `make run` holds it while `make psql` runs
        argv = ["sh", "-c", f'test "$DATABASE_URL" = "{owner.dsn}"']
        assert exec_with_database(argv, tmp_path) == 0
        assert _select_one(owner, owner.dsn) == "1"
    assert not _postgres_running(tmp_path / "pg")


def test_exec_with_database_uses_database_url_when_set(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://elsewhere/db")
    argv = ["sh", "-c", 'test "$DATABASE_URL" = postgresql://elsewhere/db']
    assert exec_with_database(argv, tmp_path) == 0
    assert not (tmp_path / "pg").exists()


def _select_one(cluster: PrivateCluster, dsn: str | None) -> str:
    psql = cluster.bindir / "psql"
    argv = [str(psql), "-X", "-tA", "-c", "SELECT 1", str(dsn)]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()


def _postgres_running(data: Path) -> bool:
    """Whether any process has the data directory on its command line."""
    needle = b"\0" + bytes(data) + b"\0"
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if needle in b"\0" + cmdline.read_bytes():
                return True
        except OSError:
            continue
    return False


def test_the_command_line_runs_a_command_with_the_private_database(tmp_path: Path, monkeypatch) -> None:
    """As `make run`, `make migrate` and `make psql` call it."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "chatsvc", "devdb", "--root", str(tmp_path), "exec", "--",
         "sh", "-c", "psql \"$DATABASE_URL\" -tAc 'select 41 + 1'"],
        capture_output=True, text=True, env=env, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "42"
    assert not _postgres_running(tmp_path / "pg")
