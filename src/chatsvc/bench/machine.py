"""What the figures were measured on: the machine, the tools, the packages and the commit."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from chatsvc.bench.options import ROOT

PACKAGES = ("hypercorn", "uvicorn", "starlette", "asyncpg", "uvloop", "msgspec", "argon2-cffi")


def describe_machine(wrk: str, pgbench: str, postgresql: str) -> dict[str, str]:
    memory = _field("/proc/meminfo", "MemTotal")
    versions = {}
    for package in PACKAGES:
        with contextlib.suppress(PackageNotFoundError):
            versions[package] = version(package)
    return {
        "cores (nproc)": str(os.cpu_count()),
        "CPU": _field("/proc/cpuinfo", "model name") or platform.processor() or "?",
        "memory": f"{int(memory.split()[0]) / 1024 / 1024:.1f} GiB" if memory else "?",
        "kernel": platform.release(),
        "OS": _os_name(),
        "Python": platform.python_version(),
        "PostgreSQL": postgresql,
        "wrk": tool_version([wrk, "-v"]),
        "pgbench": tool_version([pgbench, "--version"]),
        "packages": ", ".join(f"{k} {v}" for k, v in versions.items()),
        "load average at start": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        "commit": _git_commit(),
    }


def machine_line(machine: dict[str, str]) -> str:
    """The machine in one line, for a section measured apart from the rest."""
    return (
        f"{machine.get('cores (nproc)')} cores ({machine.get('CPU')}), {machine.get('memory')}, "
        f"Linux {machine.get('kernel')}, Python {machine.get('Python')}, PostgreSQL "
        f"{machine.get('PostgreSQL')}"
    )


def tool_version(argv: list[str]) -> str:
    """The first line a tool prints about its version, "?" when it cannot be run."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    lines = (proc.stdout or proc.stderr).strip().splitlines()
    return lines[0] if lines else "?"


def _field(path: str, key: str) -> str:
    """The value of the first `key:` line of a /proc file (cpuinfo pads keys with tabs)."""
    for line in Path(path).read_text().splitlines():
        if line.startswith(key) and ":" in line:
            return line.split(":", 1)[1].strip()
    return ""


def _os_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    return platform.system()


def _git_commit() -> str:
    head = tool_version(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return head + (" with uncommitted changes" if dirty else "")
