"""The benchmark's CPU accounting (chatsvc.bench.procfs): a run's processes are counted only once
they have exited and been reaped, so it waits for them."""

from __future__ import annotations

import os
import subprocess
import threading
import time

from chatsvc.bench.procfs import await_exits, cpu_seconds, tree


def test_it_waits_until_the_processes_started_meanwhile_have_been_reaped() -> None:
    before = set(tree(os.getpid()))
    child = subprocess.Popen(["sleep", "0.3"])
    reaper = threading.Thread(target=child.wait)  # as the postmaster reaps its backends
    reaper.start()
    started = time.monotonic()
    await_exits(os.getpid(), before)
    assert 0.2 <= time.monotonic() - started < 5
    assert not set(tree(os.getpid())) - before
    reaper.join(5)
    assert child.returncode == 0


def test_a_reaped_child_s_cpu_is_counted_in_its_parent_s() -> None:
    before = cpu_seconds([os.getpid()])
    subprocess.run(["sh", "-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"], check=True)
    assert cpu_seconds([os.getpid()]) - before > 0.05
