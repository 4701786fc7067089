"""The private cluster: start, reuse, restart after a killed run, exec, long paths, durability,
destroying a throwaway one (never the durable one), permissions, and `make run` stopped by a
signal to its process group."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from chatsvc.devdb import DevDbError, PrivateCluster, exec_with_database, remove
from chatsvc.migrate import migrate
from chatsvc.testing import ServerProcess, free_port, sign_up_and_log_in
from tests import PROJECT_ROOT
from tests.live.drain_support import stored_message_ids


@pytest.fixture(autouse=True)
def remove_clusters_kept_outside(tmp_path: Path) -> Iterator[None]:
    """As root, a cluster whose user cannot reach tmp_path lives elsewhere: remove it too, for a
    root at any depth below tmp_path (they are durable: destroy() refuses them)."""
    yield
    for directory, subdirectories, _ in os.walk(tmp_path):
        subdirectories[:] = [name for name in subdirectories if name not in ("pg", "run")]
        root = Path(directory)
        home = PrivateCluster(root).home
        if home != root.resolve():
            PrivateCluster(root).stop()
            shutil.rmtree(home, ignore_errors=True)


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


def test_destroy_removes_a_throwaway_cluster_and_its_directory(tmp_path: Path) -> None:
    root = tmp_path / "test"
    cluster = PrivateCluster(root, durable=False)
    assert _select_one(cluster, cluster.start()) == "1"
    home, data = cluster.home, cluster.data
    assert (data / "PG_VERSION").is_file()
    cluster.destroy()
    assert not _postgres_running(data)
    # As root, home is a directory of its own under /var/tmp when the server's user cannot reach root.
    assert not home.exists() and not root.exists()


def test_the_durable_cluster_is_never_destroyed(tmp_path: Path) -> None:
    """Not by a throwaway cluster's destroy beside it, nor when taken for a throwaway one."""
    durable = PrivateCluster(tmp_path / "dev")  # as `make run` starts it
    try:
        dsn = durable.start()
        _psql(durable, dsn, "CREATE TABLE kept AS SELECT 'still here' AS note")
        throwaway = PrivateCluster(tmp_path / "test", durable=False)
        throwaway.start()
        throwaway.destroy()
        with pytest.raises(DevDbError, match="durable"):
            durable.destroy()
        with pytest.raises(DevDbError, match="durable"):
            PrivateCluster(tmp_path / "dev", durable=False).destroy()  # the mark in its data refuses
        assert durable.url() == dsn, "a refused destroy() stopped the cluster"
        assert _psql(durable, dsn, "SELECT note FROM kept") == "still here"
    finally:
        durable.stop()


def _select_one(cluster: PrivateCluster, dsn: str | None) -> str:
    return _psql(cluster, dsn, "SELECT 1")


def _psql(cluster: PrivateCluster, dsn: str | None, sql: str) -> str:
    argv = [str(cluster.bindir / "psql"), "-X", "-tA", "-v", "ON_ERROR_STOP=1", "-c", sql, str(dsn)]
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


def test_make_runs_cluster_is_durable_and_its_log_private(tmp_path: Path) -> None:
    """A crash of the server (`-m immediate`) under a send loop loses no message answered 201."""
    cluster = PrivateCluster(tmp_path / "dev")  # durable, as `make run` starts it
    try:
        dsn = cluster.start()
        asyncio.run(migrate(dsn))
        with ServerProcess(dsn, tmp_path / "serve.log", CHATSVC_RATE="0", CHATSVC_AUTH_RATE="0",
                           CHATSVC_HEALTH_INTERVAL="0.2") as server:
            acknowledged = asyncio.run(_send_through_a_crash(server, cluster))
        assert acknowledged, "no message was answered 201"
        stored = asyncio.run(stored_message_ids(cluster.start(), acknowledged))
        assert sorted(set(acknowledged) - stored) == [], "answered 201 but lost in the crash"
        assert stat.S_IMODE(cluster.log.stat().st_mode) == 0o600
    finally:
        cluster.stop()


async def _send_through_a_crash(server: ServerProcess, cluster: PrivateCluster) -> list[int]:
    acknowledged: list[int] = []
    enough, crashed = asyncio.Event(), asyncio.Event()
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        user = await sign_up_and_log_in(client)
        body = {"recipient": user.id, "content": {"type": "text", "text": "keep me"}}

        async def send_until_crashed() -> None:
            while not crashed.is_set():
                with contextlib.suppress(httpx.HTTPError):
                    answer = await client.post("/messages", json=body, headers=user.auth)
                    if answer.status_code == 201:
                        acknowledged.append(answer.json()["id"])
                        if len(acknowledged) >= 300:
                            enough.set()

        senders = [asyncio.create_task(send_until_crashed()) for _ in range(6)]
        await enough.wait()
        await asyncio.to_thread(cluster.stop, "immediate")
        crashed.set()
        await asyncio.gather(*senders)
    return acknowledged


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the cluster as another user")
def test_as_root_no_directory_permissions_are_widened(tmp_path: Path) -> None:
    parent = tmp_path / "private"
    parent.mkdir(mode=0o700)
    root = parent / "dev"
    before = {path: path.stat().st_mode for path in (tmp_path, parent)}
    with PrivateCluster(root) as cluster:
        assert _select_one(cluster, cluster.dsn) == "1"
        assert parent not in cluster.home.parents, "the cluster's user cannot reach it there"
    assert {path: path.stat().st_mode for path in before} == before


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_make_run_drains_when_its_process_group_is_signalled(tmp_path: Path, signum: int) -> None:
    """As a CI runner or a supervisor stops it: `kill -INT|-TERM -- -PGID`, with no terminal."""
    port, admin_port = free_port(), free_port()
    env = {name: value for name, value in os.environ.items() if name != "DATABASE_URL"}
    env |= {"CHATSVC_PORT": str(port), "CHATSVC_ADMIN_PORT": str(admin_port),
            "CHATSVC_HOST": "127.0.0.1", "CHATSVC_DRAIN_DELAY": "1", "CHATSVC_LOG_LEVEL": "info"}
    log = tmp_path / "make-run.log"
    with log.open("wb") as output:
        make = subprocess.Popen(["make", "--no-print-directory", "run", f"DEVDB={tmp_path / 'dev'}"],
                                cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=output,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_until_ready(f"http://127.0.0.1:{port}", make, log)
        os.killpg(make.pid, signum)
        # Draining: readiness is 503 while requests are still served.
        assert httpx.get(f"http://127.0.0.1:{port}/check", timeout=5).status_code == 503
        make.wait(60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(make.pid, signal.SIGKILL)
    text = log.read_text(errors="replace")
    assert "second signal" not in text, text
    assert text.count('"message":"draining"') == 1 and '"message":"stopped"' in text, text
    assert not _postgres_running(PrivateCluster(tmp_path / "dev").data), "the cluster was left running"


def _wait_until_ready(url: str, process: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"make run exited {process.returncode}:\n{log.read_text()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/check", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise AssertionError(f"make run was not ready in {timeout} s:\n{log.read_text()}")


def test_remove_takes_any_cluster_with_it_wherever_its_files_are(tmp_path: Path) -> None:
    """`chatsvc devdb remove` (`make clean`): the durable cluster too, and its files also when they
    were put under /var/tmp because PostgreSQL's user could not reach the root asked for (as here,
    run as root: pytest's directories are 0700)."""
    root = tmp_path / "dev"
    cluster = PrivateCluster(root)
    assert _select_one(cluster, cluster.start()) == "1"
    assert (cluster.data / "PG_VERSION").is_file()
    assert remove(root) == 0
    assert not _postgres_running(cluster.data)
    assert not cluster.home.exists() and not root.exists()
