"""chatsvc.ha's process handling: what a killed run left is ended, and nothing that is not ours."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chatsvc.ha.daemons import Daemon, HaError, program, reap

SLEEP = "import time; time.sleep(60)"


def test_reap_ends_a_left_behind_group_and_nothing_else(tmp_path: Path):
    root = tmp_path / "ha"
    root.mkdir()
    left = Daemon("left", [sys.executable, "-c", SLEEP, str(root)], root, None).start()
    # Not ours: its command line does not name root, though a pgid file under root names it.
    other = subprocess.Popen([sys.executable, "-c", SLEEP], start_new_session=True)
    try:
        (root / "other.pgid").write_text(str(other.pid))
        reap(root)
        assert left.process is not None and left.process.wait(10) == -signal.SIGKILL
        assert other.poll() is None
        assert not list(root.glob("*.pgid"))
    finally:
        other.kill()
        other.wait()


def test_stop_ends_the_whole_group(tmp_path: Path):
    child_pid = tmp_path / "child.pid"
    spawner = (f"import subprocess, sys; child = subprocess.Popen([sys.executable, '-c', {SLEEP!r}]); "
               f"open({str(child_pid)!r}, 'w').write(str(child.pid)); {SLEEP}")
    daemon = Daemon("parent", [sys.executable, "-c", spawner], tmp_path, None).start()
    assert daemon.process is not None
    for _ in range(100):
        if child_pid.exists() and child_pid.read_text():
            break
        time.sleep(0.05)
    daemon.stop(timeout=30)  # SIGKILL only for a hang: the returncode says which ended it
    assert daemon.process.returncode == -signal.SIGTERM
    # The child got the group's SIGTERM too; a loaded machine may take a moment to end it.
    child = int(child_pid.read_text())
    for _ in range(600):
        if not alive(child):
            break
        time.sleep(0.05)
    assert not alive(child), "a process of the group outlived stop()"


def alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie waiting for whoever adopted it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_missing_program_names_its_debian_package():
    with pytest.raises(HaError, match="install -y no-such-package"):
        program("no-such-program-chatsvc", "no-such-package")
