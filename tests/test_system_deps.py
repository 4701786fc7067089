"""System packages: one table in bin/system-deps, and tests that skip (or fail in CI) naming them."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from chatsvc.testing import require_program
from tests import PROJECT_ROOT

SCRIPT = PROJECT_ROOT / "bin" / "system-deps"
ABSENT = ("chatsvc-absent-program", "chatsvc-absent-package")
PRESENT = ("sh", "dash")


def listed() -> set[tuple[str, str]]:
    result = subprocess.run([SCRIPT, "--list"], capture_output=True, text=True, timeout=30, check=True)
    return {tuple(line.split()) for line in result.stdout.splitlines()}  # type: ignore[misc]


def python_files() -> list[Path]:
    return [path for top in ("tests", "src") for path in (PROJECT_ROOT / top).rglob("*.py")]


def test_every_required_program_is_in_the_table() -> None:
    required = {match for path in python_files() for match in
                re.findall(r'require_program\(\s*"([^"]+)",\s*"([^"]+)"\s*\)', path.read_text())}
    assert ("haproxy", "haproxy") in required  # the search finds the calls
    assert required <= listed(), f"add these to bin/system-deps: {sorted(required - listed())}"


def test_no_test_installs_packages_or_users() -> None:
    # Spelled in pieces, so this file does not find itself.
    commands = re.compile("[\"'](" + "apt" + "-get|" + "user" + "add|dnf|yum|apk)[\"' ]")
    offenders = [f"{path.relative_to(PROJECT_ROOT)}: {line.strip()}"
                 for path in (PROJECT_ROOT / "tests").rglob("*.py")
                 for line in path.read_text().splitlines() if commands.search(line)]
    assert offenders == []


def run_with_an_absent_program(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The script with one more line in its table, for a program no machine has; never installs."""
    text = SCRIPT.read_text()
    table_end = text.index("\nTABLE\n")
    copy = tmp_path / "system-deps"
    copy.write_text(text[:table_end] + f"\n{ABSENT[0]}  {ABSENT[1]}  a test" + text[table_end:])
    copy.chmod(0o755)
    environment = {key: value for key, value in os.environ.items() if key != "CI"} | env
    return subprocess.run([copy, "--check"], capture_output=True, text=True, timeout=30,
                          env=environment, check=False)


def test_a_missing_program_is_reported_with_the_command_that_installs_it(tmp_path: Path) -> None:
    result = run_with_an_absent_program(tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"sudo apt-get install -y {ABSENT[1]}" in result.stderr
    assert f"{ABSENT[0]} ({ABSENT[1]}: a test)" in result.stderr


def test_in_ci_a_missing_program_fails_the_check(tmp_path: Path) -> None:
    result = run_with_an_absent_program(tmp_path, CI="true")
    assert result.returncode == 1
    assert f"sudo apt-get install -y {ABSENT[1]}" in result.stderr


def test_a_present_program_is_found() -> None:
    assert require_program(*PRESENT).endswith("/sh")


def test_a_missing_program_skips_naming_its_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=f"install the Debian package {ABSENT[1]}"):
        require_program(*ABSENT)


def test_a_missing_program_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=f"CI=true: {ABSENT[0]} is not installed"):
        require_program(*ABSENT)
