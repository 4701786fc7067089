"""Long-running servers of `chatsvc.ha` (etcd, Patroni, HAProxy, PgBouncer), each in its own process group."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from string import Template

from chatsvc.devdb import Owner, remove_home

# Where the configuration templates live: deploy/ha of the source tree (tests and benchmarks only).
TEMPLATES = Path(__file__).resolve().parents[3] / "deploy" / "ha"
STOP_SECONDS = 20.0
SBIN = ("/usr/sbin", "/usr/local/sbin", "/sbin")


class HaError(RuntimeError):
    """A server of the HA set-up could not be started or did not become ready."""


def render(template: str, destination: Path, owner: Owner, **values: object) -> Path:
    """Write deploy/ha/<template> with its ${...} filled in, readable by `owner`."""
    source = TEMPLATES / template
    if not source.exists():
        raise HaError(f"{source} is missing: chatsvc.ha runs from a source checkout")
    destination.write_text(Template(source.read_text()).substitute(values))
    chown(destination, owner)
    return destination


def chown(path: Path, owner: Owner) -> None:
    if owner:
        os.chown(path, *owner)


def program(name: str, package: str) -> str:
    """The path of one of the servers' programs, or an error naming the Debian package to install."""
    found = shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), *SBIN]))
    if found is None:
        raise HaError(f"{name} is not installed: apt-get install -y {package} (or run bin/system-deps)")
    return found


class Daemon:
    """One server started in a session of its own, as `owner`, its output in root/<name>.log.

    The process group id is written to root/<name>.pgid, so that `reap` can end what a killed
    run left behind, and nothing else.
    """

    def __init__(self, name: str, argv: list[str], root: Path, owner: Owner,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = argv
        self.root = root
        self.owner = owner
        self.env = env
        self.log_path = root / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.root, env=self.env, start_new_session=True,
                user=self.owner[0] if self.owner else None, group=self.owner[1] if self.owner else None,
                extra_groups=[] if self.owner else None)
        (self.root / f"{self.name}.pgid").write_text(str(self.process.pid))
        return self

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def check_alive(self) -> None:
        if not self.alive:
            raise HaError(f"{self.name} exited ({self.process and self.process.returncode}):\n{self.log()}")

    def stop(self, timeout: float = STOP_SECONDS) -> None:
        """SIGTERM to the process group (Patroni then stops its PostgreSQL), SIGKILL if it lingers."""
        if self.process is None:
            return
        if self.process.poll() is None:
            _signal_group(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(self.process.pid, signal.SIGKILL)
                self.process.wait()
        _signal_group(self.process.pid, signal.SIGKILL)  # children left in the group
        (self.root / f"{self.name}.pgid").unlink(missing_ok=True)

    def log(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def reap(root: Path) -> None:
    """End what a killed earlier run left under root: process groups, then postmasters.

    Each is checked to still name root in its command line, so a reused pid is left alone.
    """
    for pgid_file in root.rglob("*.pgid"):
        with suppress(ValueError, OSError):
            pgid = int(pgid_file.read_text())
            if _runs_under(pgid, root):
                _signal_group(pgid, signal.SIGKILL)
        pgid_file.unlink(missing_ok=True)
    for pidfile in root.rglob("postmaster.pid"):
        kill_postmaster(pidfile.parent)  # Patroni starts it in a session of its own


def remove_root(root: Path, requested_root: Path) -> None:
    """Remove a daemon's directory, all of it (its start writes everything anew), and the emptied
    directories server_home made for it."""
    shutil.rmtree(root, ignore_errors=True)
    remove_home(root, requested_root)


def kill_postmaster(data_dir: Path, sig: int = signal.SIGKILL) -> int | None:
    """Signal the postmaster serving data_dir (Patroni starts it in a session of its own); its pid."""
    pid = postmaster_pid(data_dir)
    if pid is not None:
        with suppress(ProcessLookupError):
            os.kill(pid, sig)
    return pid


def postmaster_pid(data_dir: Path) -> int | None:
    """The live postmaster of data_dir, checked against its command line (pids get reused)."""
    try:
        pid = int((data_dir / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if _runs_under(pid, data_dir) else None


def wait_until(what: str, ready: Callable[[], object], timeout: float, *daemons: Daemon) -> None:
    """Poll `ready()` until true; fail early if one of `daemons` has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for daemon in daemons:
            daemon.check_alive()
        with suppress(OSError, ValueError, KeyError, HaError):
            if ready():
                return
        time.sleep(0.1)
    logs = "\n".join(f"--- {d.name} ---\n{d.log()}" for d in daemons)
    raise HaError(f"{what}: not within {timeout:g} s\n{logs}")


def _runs_under(pid: int, path: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return bytes(path) in cmdline


def _signal_group(pgid: int, sig: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
