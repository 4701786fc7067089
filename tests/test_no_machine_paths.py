"""No tracked file names a path that exists only on one machine, or a file outside the repository.

A reader has the repository and nothing else: a home directory, the workspace it was written in,
a temporary directory of one run, or a document beside the checkout means nothing to them.
Paths every machine has (`/tmp/<scratch file>` in an example, `/opt/chatsvc` in the image) are fine.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests import PROJECT_ROOT

# Each pattern is written so that it does not match its own source text.
MACHINE_PATHS = {
    "a workspace": r"(?<![\w.~-])/wor[k]/",
    "a home directory": r"(?<![\w.~-])/(?:hom[e]|User[s])/(?!<)[\w.-]+",
    "root's home": r"(?<![\w.~-])/roo[t]/",
    "one run's temporary directory": r"/tm[p]/(?:pytest-of-(?!<)\w|tmp[a-z0-9_]{6}|bash_job[s])",
    "a macOS temporary directory": r"/va[r]/folders/",
    "a file beside the repository": r"\.\./share[d]/",
}
PATTERN = re.compile("|".join(f"(?P<p{n}>{regex})" for n, regex in enumerate(MACHINE_PATHS.values())))


def tracked_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=PROJECT_ROOT, capture_output=True,
                            timeout=60, check=False)
    if listed.returncode != 0:
        pytest.skip(f"not a git checkout: {listed.stderr.decode(errors='replace').strip()}")
    return [PROJECT_ROOT / name for name in listed.stdout.decode().split("\0") if name]


def machine_paths(text: str) -> list[tuple[int, str, str]]:
    """(line number, what it names, the line) for each line naming a machine's path."""
    kinds = list(MACHINE_PATHS)
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for match in PATTERN.finditer(line):
            kind = kinds[int(next(name for name, value in match.groupdict().items() if value)[1:])]
            found.append((number, kind, line.strip()))
    return found


def test_no_tracked_file_names_a_path_of_a_particular_machine() -> None:
    offenders = []
    for path in tracked_files():
        if not path.is_file():  # deleted in the work tree, not yet in the index
            continue
        data = path.read_bytes()
        if b"\0" in data:
            continue  # binary
        for number, kind, line in machine_paths(data.decode(errors="replace")):
            offenders.append(f"{path.relative_to(PROJECT_ROOT)}:{number}: {kind}: {line[:160]}")
    assert offenders == [], "\n".join(offenders)


@pytest.mark.parametrize("line", [
    "see /wor" "k/shared/API.md",
    "cd /hom" "e/alice/chatsvc",
    "open(\"/User" "s/bob/notes.txt\")",
    "export PATH=/roo" "t/.pyenv/shims:$PATH",
    "left in /tm" "p/pytest-of-root/pytest-3",
    "written to /tm" "p/tmpab12cd_x",
    "the contract, ../share" "d/API.md",
])
def test_the_check_catches_each_kind(line: str) -> None:
    assert machine_paths(line), line


@pytest.mark.parametrize("line", [
    "BENCH_OUTPUT=/tmp/b.md bin/bench",
    "COPY sql /opt/chatsvc/sql",
    "a concurrent run makes /tmp/pytest-of-<user> private",
    "the home directory of <user> in /home/<user>",
    "https://example.com/work/items",
    "src/chatsvc/work/queue.py",
])
def test_paths_every_machine_has_pass(line: str) -> None:
    assert machine_paths(line) == [], line
