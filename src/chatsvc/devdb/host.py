"""The machine a private cluster runs on: PostgreSQL's binaries, the unprivileged user servers run
as when we are root, directories that user can reach, and running the tools."""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import shutil
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

SERVICE_USER = "chatsvc-pg"
# Where the cluster goes when we are root and its user cannot reach the requested root (a home
# directory of mode 0700, say): a directory of its own, instead of widening the path's permissions.
UNREACHABLE_ROOT_FALLBACK = Path("/var/tmp")  # noqa: S108 (kept across reboots, unlike /tmp)
_TOOLS = ("initdb", "pg_ctl", "postgres")

Owner = tuple[int, int] | None


class DevDbError(RuntimeError):
    """The private cluster could not be set up, started or stopped."""


def server_home(root: Path, bindir: Path) -> tuple[Path, Owner]:
    """Create the directory for root's server files; (that directory, the user to run servers as).

    PostgreSQL refuses to run as root, and so do the tools around it (`chatsvc.ha`): when we are
    root they run as an unprivileged user, in root if that user can reach it, else in a directory
    of its own (see `home_for`). No directory's permissions are widened. The user is None when we are
    not root: the servers run as ourselves, in root.
    """
    root.mkdir(parents=True, exist_ok=True)
    owner = _service_user() if os.geteuid() == 0 else None
    home = home_for(root, owner)
    if owner:
        if home == root and not _reachable(root, owner):
            chown(root, owner)  # the server's own directory (a mkdtemp one is 0700)
        elif home != root:
            home.parent.mkdir(mode=0o700, exist_ok=True)
            chown(home.parent, owner)
            home.mkdir(mode=0o700, exist_ok=True)
            chown(home, owner)
        if not _reachable(bindir / "postgres", owner):
            raise DevDbError(f"user {owner[0]} cannot reach the PostgreSQL binaries in {bindir};"
                             " install PostgreSQL system-wide, or run as another user than root")
    return home, owner


def find_bindir() -> Path:
    """The system's PostgreSQL bin directory, else the pgserver wheel's."""
    for bindir in _system_bindirs():
        if all((bindir / tool).is_file() for tool in _TOOLS):
            return bindir
    try:
        with warnings.catch_warnings():
            # pgserver warns on import (no XDG_RUNTIME_DIR) and the tests make warnings errors
            warnings.simplefilter("ignore")
            from pgserver._commands import POSTGRES_BIN_PATH
    except ImportError:
        raise DevDbError(
            "no PostgreSQL binaries found: install PostgreSQL or `pip install pgserver`"
        ) from None
    return Path(POSTGRES_BIN_PATH)


def _system_bindirs() -> Iterator[Path]:
    """Candidate bin directories: initdb on PATH, pg_config --bindir, /usr/lib/postgresql/*/bin."""
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        yield Path(initdb).resolve().parent  # Debian links them from elsewhere, without psql
    pg_config = shutil.which("pg_config")
    if pg_config:
        bindir = run_tool([pg_config, "--bindir"]).stdout.strip()
        if bindir:
            yield Path(bindir)
    yield from sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version, reverse=True)


def _version(bindir: Path) -> tuple[int, ...]:
    """The version in /usr/lib/postgresql/<version>/bin, for sorting."""
    return tuple(int(part) for part in bindir.parent.name.split(".") if part.isdigit())


def existing_service_user() -> Owner:
    """The unprivileged user to run PostgreSQL as (it refuses root): postgres, else chatsvc-pg."""
    for name in ("postgres", SERVICE_USER):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return entry.pw_uid, entry.pw_gid
    return None


def _service_user() -> tuple[int, int]:
    """The existing service user, else a new system user chatsvc-pg."""
    if owner := existing_service_user():
        return owner
    argv = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER]
    proc = run_tool(argv)
    if proc.returncode != 0:
        raise DevDbError(f"could not create user {SERVICE_USER}:\n{proc.stdout}{proc.stderr}")
    entry = pwd.getpwnam(SERVICE_USER)
    return entry.pw_uid, entry.pw_gid


def owner_of(path: Path) -> Owner:
    """Whom to run PostgreSQL as for path: its owner if we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    info = path.stat()
    return info.st_uid, info.st_gid


def home_for(root: Path, owner: Owner) -> Path:
    """root, or, when owner cannot reach root's parent, a directory under /var/tmp of its own."""
    if owner and not _reachable(root.parent, owner):
        tag = hashlib.sha256(bytes(root)).hexdigest()[:16]
        return UNREACHABLE_ROOT_FALLBACK / f"chatsvc-devdb-{owner[0]}" / tag
    return root


def remove_home(home: Path, root: Path) -> None:
    """Remove a server's emptied directory: home, root, and the per-user directory of the
    fallback once nothing else is in it (another cluster's files keep a directory)."""
    for directory in (home, root, home.parent if home != root else None):
        if directory is not None:
            with contextlib.suppress(OSError):  # not empty, or gone already
                directory.rmdir()


def _reachable(path: Path, owner: tuple[int, int]) -> bool:
    """Whether `owner` can reach path (every ancestor searchable) and, for a directory, enter it."""
    if not path.exists():
        return _reachable(path.parent, owner) if path.parent != path else True
    return run_tool(["test", "-x", str(path)], owner=owner).returncode == 0


def chown(path: Path, owner: Owner) -> None:
    if owner:
        os.chown(path, *owner)


def chown_tree(top: Path, owner: Owner) -> None:
    for directory, _, files in os.walk(top):
        chown(Path(directory), owner)
        for name in files:
            chown(Path(directory, name), owner)


def run_tool(
    argv: list[str], *, owner: Owner = None, cwd: Path | None = None, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a tool to completion in its own session, so a terminal Ctrl-C does not reach it."""
    return subprocess.run(
        argv,
        input=input,
        stdin=subprocess.DEVNULL if input is None else None,
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        start_new_session=True,
        user=owner[0] if owner else None,
        group=owner[1] if owner else None,
        extra_groups=[] if owner else None,
    )


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
