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


def run_with_an_absent_program(tmp_path: Path, *arguments: str, **env: str
                               ) -> subprocess.CompletedProcess[str]:
    """The script with one more line in its table, for a program no machine has."""
    text = SCRIPT.read_text()
    table_end = text.index("\nTABLE\n")
    copy = tmp_path / "system-deps"
    copy.write_text(text[:table_end] + f"\n{ABSENT[0]}  {ABSENT[1]}  a test" + text[table_end:])
    copy.chmod(0o755)
    environment = {key: value for key, value in os.environ.items() if key != "CI"} | env
    return subprocess.run([copy, *arguments], capture_output=True, text=True, timeout=30,
                          env=environment, check=False)


# Stands in for apt-get: records its arguments and the service policy in force, and "installs"
# the absent program by putting it on PATH.
FAKE_APT_GET = """#!/bin/sh
echo "$*" >> "$FAKE_APT_LOG"
if [ "$1" = install ]; then
  cat "$SYSTEM_DEPS_POLICY_RC" >> "$FAKE_APT_LOG" 2>/dev/null || echo "no policy" >> "$FAKE_APT_LOG"
  printf '#!/bin/sh\\n' > "$FAKE_BIN/{program}" && chmod 755 "$FAKE_BIN/{program}"
fi
"""


@pytest.fixture
def fake_apt(tmp_path: Path) -> dict[str, str]:
    """The environment that makes the script install through the stand-in apt-get."""
    if os.geteuid() != 0:
        pytest.skip("the script installs only as root")
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    apt_get = fake_bin / "-".join(("apt", "get"))  # in pieces: the check above reads this file
    apt_get.write_text(FAKE_APT_GET.replace("{program}", ABSENT[0]))
    apt_get.chmod(0o755)
    return {"PATH": f"{fake_bin}:{os.environ['PATH']}", "FAKE_BIN": str(fake_bin),
            "FAKE_APT_LOG": str(tmp_path / "apt.log"), "SYSTEM_DEPS_POLICY_RC": str(tmp_path / "policy-rc.d")}


def test_as_root_it_installs_with_services_kept_from_starting(tmp_path: Path, fake_apt: dict[str, str]
                                                             ) -> None:
    result = run_with_an_absent_program(tmp_path, **fake_apt)
    assert result.returncode == 0, result.stderr
    calls = Path(fake_apt["FAKE_APT_LOG"]).read_text()
    assert calls.startswith(f"install -y --no-install-recommends {ABSENT[1]}\n"), calls
    assert "exit 101" in calls, "no policy kept services from starting during the install"
    assert not Path(fake_apt["SYSTEM_DEPS_POLICY_RC"]).exists(), "its own policy was left behind"
    assert "missing" not in run_with_an_absent_program(tmp_path, "--check", **fake_apt).stderr


def test_an_existing_service_policy_is_left_as_it_was(tmp_path: Path, fake_apt: dict[str, str]) -> None:
    policy = Path(fake_apt["SYSTEM_DEPS_POLICY_RC"])
    policy.write_text("#!/bin/sh\n# the machine's own\nexit 0\n")
    result = run_with_an_absent_program(tmp_path, **fake_apt)
    assert result.returncode == 0, result.stderr
    assert policy.read_text() == "#!/bin/sh\n# the machine's own\nexit 0\n"
    assert "the machine's own" in Path(fake_apt["FAKE_APT_LOG"]).read_text()


def test_a_missing_program_is_reported_with_the_command_that_installs_it(tmp_path: Path) -> None:
    result = run_with_an_absent_program(tmp_path, "--check")
    assert result.returncode == 0, result.stderr
    assert f"sudo apt-get install -y {ABSENT[1]}" in result.stderr
    assert f"{ABSENT[0]} ({ABSENT[1]}: a test)" in result.stderr


def test_in_ci_a_missing_program_fails_the_check(tmp_path: Path) -> None:
    result = run_with_an_absent_program(tmp_path, "--check", CI="true")
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
