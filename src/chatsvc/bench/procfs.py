"""CPU time, memory and children of processes, read from Linux's /proc."""

from __future__ import annotations

import os
import time
from pathlib import Path

from chatsvc.testing import descendants

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def tree(pid: int) -> list[int]:
    """The process and its live descendants."""
    return [pid, *descendants(pid)]


def await_exits(root: int, before: set[int], timeout: float = 5.0) -> None:
    """Wait until the descendants of `root` that were not among `before` have exited and been
    reaped: only then is their CPU time in `root`'s (its children's) and counted. PostgreSQL's
    backends outlive their client's exit by a moment; read too early, a run would miss their CPU."""
    deadline = time.monotonic() + timeout
    while set(descendants(root)) - before and time.monotonic() < deadline:
        time.sleep(0.02)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes, and of their children that already exited."""
    return sum(cpu_split(pids))


def cpu_split(pids: list[int]) -> tuple[float, float]:
    """(user, system) CPU seconds of these processes and of their children that already exited."""
    user = system = 0
    for pid in pids:
        if fields := _stat_fields(pid):
            utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
            user += utime + cutime
            system += stime + cstime
    return user / CLOCK_TICKS, system / CLOCK_TICKS


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def status_kib(pid: int, key: str) -> int:
    """A kibibyte figure of /proc/<pid>/status (VmRSS, VmHWM), 0 once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def reset_peak_rss(pids: list[int]) -> bool:
    """Restart VmHWM from the current RSS (Linux >= 4.0), so each run reports its own peak."""
    ok = True
    for pid in pids:
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        except OSError:
            ok = False
    return ok


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # field n of proc(5) is [n - 3]
