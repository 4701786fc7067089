"""A highly available PostgreSQL on this machine: etcd, two Patroni nodes, HAProxy to the primary.

The primary and its synchronous standby are run by Patroni from deploy/ha/patroni.yml, with the
leader lock in etcd (deploy/ha/etcd.yml); HAProxy (deploy/ha/haproxy.cfg) offers one port that
leads to whichever node is primary. Everything lives under one directory of the project, on free
loopback ports, as the unprivileged user the private cluster of `chatsvc.devdb` runs as.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatsvc.devdb import find_bindir, server_home
from chatsvc.ha.daemons import (
    Daemon,
    HaError,
    chown,
    kill_postmaster,
    postmaster_pid,
    program,
    reap,
    remove_root,
    render,
    wait_until,
)
from chatsvc.ports import free_port

DATABASE = "chatsvc"
NODES = ("node1", "node2")
START_SECONDS = 120.0
REST_TIMEOUT = 2.0


@dataclass
class Node:
    name: str
    pg_port: int
    rest_port: int
    config: Path
    data_dir: Path
    daemon: Daemon | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.pg_port}/{DATABASE}"


class PatroniCluster:
    """A primary and a synchronous standby under Patroni, in root; a context manager."""

    def __init__(self, root: Path) -> None:
        self.root = self.requested_root = Path(root).resolve()  # root: where it is, once started
        self.bindir = find_bindir()
        self.nodes: dict[str, Node] = {}
        self.etcd: Daemon | None = None
        self.haproxy: Daemon | None = None
        self.primary_port = 0

    def __enter__(self) -> PatroniCluster:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def database_url(self) -> str:
        """Both nodes in one URL: the client itself connects to whichever accepts writes."""
        hosts = ",".join(f"127.0.0.1:{node.pg_port}" for node in self.nodes.values())
        return f"postgresql://postgres@{hosts}/{DATABASE}?target_session_attrs=read-write"

    @property
    def primary_url(self) -> str:
        """HAProxy's port, which leads to the primary (what PgBouncer connects to)."""
        return f"postgresql://postgres@127.0.0.1:{self.primary_port}/{DATABASE}"

    def start(self) -> None:
        """Start etcd, both nodes (the first to get the lock initialises) and HAProxy; wait for sync."""
        self.root, owner = server_home(self.root, self.bindir)
        chown(self.root, owner)  # its servers write their own files here
        # What a killed earlier run left: its processes, then its files.
        reap(self.root)
        for entry in self.root.iterdir():
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        try:
            self._start(owner)
        except BaseException:
            self.stop()
            raise

    def _start(self, owner: tuple[int, int] | None) -> None:
        etcd_port = free_port()
        etcd_config = render("etcd.yml", self.root / "etcd.yml", owner, data_dir=self.root / "etcd",
                             client_port=etcd_port, peer_port=free_port())
        etcd = [program("etcd", "etcd-server"), "--config-file", str(etcd_config)]
        self.etcd = Daemon("etcd", etcd, self.root, owner).start()
        wait_until("etcd answers", lambda: _get_json(f"http://127.0.0.1:{etcd_port}/health")["health"]
                   == "true", 30, self.etcd)
        for name in NODES:
            node_dir = self.root / name
            node_dir.mkdir(mode=0o700)
            chown(node_dir, owner)
            node = Node(name, free_port(), free_port(), node_dir / "patroni.yml", node_dir / "data")
            render("patroni.yml", node.config, owner, name=name, rest_port=node.rest_port,
                   etcd_port=etcd_port, pg_port=node.pg_port, data_dir=node.data_dir,
                   bin_dir=self.bindir, pgpass=node_dir / "pgpass", socket_dir=node_dir)
            patroni = [program("patroni", "patroni"), str(node.config)]
            node.daemon = Daemon(name, patroni, self.root, owner).start()
            self.nodes[name] = node
        wait_until("a primary and a streaming synchronous standby", self._in_sync, START_SECONDS,
                   self.etcd, *self.daemons())
        self._create_database()
        self.primary_port = free_port()
        servers = "\n".join(f"    server {n.name} 127.0.0.1:{n.pg_port} check port {n.rest_port}"
                            for n in self.nodes.values())
        haproxy_config = render("haproxy.cfg", self.root / "haproxy.cfg", owner,
                                primary_port=self.primary_port, servers=servers)
        haproxy = [program("haproxy", "haproxy"), "-db", "-f", str(haproxy_config)]
        self.haproxy = Daemon("haproxy", haproxy, self.root, owner).start()
        wait_until("HAProxy leads to the primary", self._routed, 30, self.haproxy)

    def stop(self) -> None:
        """Stop HAProxy, the nodes (each Patroni stops its PostgreSQL) and etcd; leave nothing running."""
        if self.haproxy:
            self.haproxy.stop()
        with ThreadPoolExecutor() as stopping:  # each Patroni waits for its PostgreSQL: together
            list(stopping.map(Daemon.stop, self.daemons()))
        for node in self.nodes.values():
            kill_postmaster(node.data_dir)  # a Patroni that had to be killed left it running
        if self.etcd:
            self.etcd.stop()

    def destroy(self) -> None:
        """Stop, then remove root: its nodes' data (some 100 MB) is made anew by every start."""
        self.stop()
        remove_root(self.root, self.requested_root)

    def daemons(self) -> list[Daemon]:
        return [node.daemon for node in self.nodes.values() if node.daemon]

    def members(self) -> list[dict[str, Any]]:
        """Patroni's view of the cluster (`GET /cluster`), from the first node that answers."""
        for node in self.nodes.values():
            try:
                members: list[dict[str, Any]] = _get_json(f"http://127.0.0.1:{node.rest_port}/cluster")["members"]
                return members
            except OSError:
                continue
        raise HaError("no Patroni REST API answers")

    def leader(self) -> str | None:
        return next((m["name"] for m in self.members()
                     if m["role"] == "leader" and m["state"] == "running"), None)

    def sync_standby(self) -> str | None:
        return next((m["name"] for m in self.members()
                     if m["role"] == "sync_standby" and m["state"] in ("running", "streaming")), None)

    def wait_in_sync(self, timeout: float = START_SECONDS) -> None:
        """Wait for a running leader and a synchronous standby (the old primary, after a failover)."""
        wait_until("a primary and a streaming synchronous standby", self._in_sync, timeout,
                   self.etcd, *self.daemons())  # type: ignore[arg-type]

    def kill_primary_postmaster(self) -> str:
        """SIGKILL the primary's postmaster, as a host would lose it; the name of the node it was."""
        leader = self.leader()
        if leader is None or kill_postmaster(self.nodes[leader].data_dir, signal.SIGKILL) is None:
            raise HaError(f"no running primary to kill (members: {self.members()})")
        return leader

    def switchover(self, candidate: str) -> None:
        """Patroni's planned switchover to `candidate`: the primary is demoted only once it is in sync."""
        leader = self.leader()
        config = self.nodes[candidate].config
        argv = [program("patronictl", "patroni"), "-c", str(config), "switchover", "--leader", str(leader),
                "--candidate", candidate, "--force"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise HaError(f"patronictl switchover failed:\n{done.stdout}{done.stderr}")

    def postmaster_pid(self, name: str) -> int | None:
        return postmaster_pid(self.nodes[name].data_dir)

    def _in_sync(self) -> bool:
        return self.leader() is not None and self.sync_standby() is not None

    def _create_database(self) -> None:
        leader = self.nodes[self.leader() or ""]
        psql = self.bindir / "psql"
        argv = [str(psql) if psql.exists() else "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1",
                f"postgresql://postgres@127.0.0.1:{leader.pg_port}/postgres",
                "-c", f"CREATE DATABASE {DATABASE}"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise HaError(f"could not create database {DATABASE}:\n{done.stdout}{done.stderr}")

    def _routed(self) -> bool:
        """HAProxy has seen the primary's check succeed (its port accepts a PostgreSQL session)."""
        psql = self.bindir / "psql"
        argv = [str(psql) if psql.exists() else "psql", "-X", "-A", "-t", self.primary_url,
                "-c", "SELECT pg_is_in_recovery()"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
        if done.returncode != 0:
            time.sleep(0.2)
        return done.returncode == 0 and done.stdout.strip() == "f"


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=REST_TIMEOUT) as response:  # noqa: S310 (loopback only)
        return json.loads(response.read())
