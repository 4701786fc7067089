"""README.md's generated sections match the code; `make readme` (bin/update-readme) rewrites them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from chatsvc import admin, app
from chatsvc.config import describe
from tests import PROJECT_ROOT

UPDATE_README = PROJECT_ROOT / "bin" / "update-readme"
README = PROJECT_ROOT / "README.md"


def update_readme(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(UPDATE_README), *map(str, args)], capture_output=True,
                          text=True, timeout=120, check=False, cwd=PROJECT_ROOT)


def section(readme: str, name: str) -> str:
    (body,) = re.findall(rf"<!-- BEGIN {name} -->\n(.*?)<!-- END {name} -->", readme, re.DOTALL)
    return body


def test_readme_is_up_to_date():
    checked = update_readme("--check")
    assert checked.returncode == 0, (
        f"README.md is stale: run `make readme` (or `.venv/bin/python bin/update-readme`) and commit "
        f"the result.\n{checked.stdout}{checked.stderr}")


def test_generated_sections_cover_every_route_setting_target_and_the_script():
    readme = README.read_text()
    routes = section(readme, "ROUTES")
    for route in [*app.ROUTES, *admin.ROUTES]:
        assert f" {route.path}` |" in routes, f"{route.path} is missing from the route table"
    config = section(readme, "CONFIG")
    for name, _, _ in describe():
        assert f"| `{name}` |" in config, f"{name} is missing from the configuration table"
    targets = section(readme, "MAKE HELP")
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    for target in re.findall(r"^([a-z][a-z-]*):.*## ", makefile, re.MULTILINE):
        assert re.search(rf"^  {target} ", targets, re.MULTILINE), f"make {target} is missing"
    script = (PROJECT_ROOT / "bin" / "integration-test").read_text()
    assert script.rstrip() in section(readme, "INTEGRATION TEST")


def test_a_stale_section_is_reported_with_the_fix_and_then_rewritten(tmp_path: Path):
    fresh = README.read_text()
    stale = fresh.replace("| `CHATSVC_DRAIN_DELAY` |", "| `CHATSVC_DRAIN_DELAY_OLD` |", 1)
    gone = "| public | `GET /gone` | A removed route. |\n"
    stale = stale.replace("<!-- END ROUTES -->", gone + "<!-- END ROUTES -->")
    stale += "\nProse outside the markers stays as it is.\n"
    copy = tmp_path / "README.md"
    copy.write_text(stale)

    checked = update_readme("--check", "--readme", copy)
    assert checked.returncode == 1
    assert "make readme" in checked.stderr and "ROUTES, CONFIG" in checked.stderr, checked.stderr
    assert copy.read_text() == stale, "--check must not write"

    rewritten = update_readme("--readme", copy)
    assert rewritten.returncode == 0, rewritten.stderr
    assert copy.read_text() == fresh + "\nProse outside the markers stays as it is.\n"
    assert update_readme("--check", "--readme", copy).returncode == 0


def test_missing_markers_are_an_error_not_a_silent_skip(tmp_path: Path):
    copy = tmp_path / "README.md"
    copy.write_text(README.read_text().replace("<!-- END CONFIG -->", ""))
    checked = update_readme("--check", "--readme", copy)
    assert checked.returncode == 2
    assert "<!-- BEGIN CONFIG -->" in checked.stderr


def test_a_route_without_a_docstring_stops_the_generator(monkeypatch):
    import importlib.machinery
    import importlib.util

    from starlette.routing import Route

    loader = importlib.machinery.SourceFileLoader("update_readme", str(UPDATE_README))
    spec = importlib.util.spec_from_loader("update_readme", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)

    async def undocumented(request):  # pragma: no cover - never served
        raise NotImplementedError

    monkeypatch.setattr(app, "ROUTES", [*app.ROUTES, Route("/undocumented", undocumented, methods=["GET"])])
    with pytest.raises(module.StaleSource, match="GET /undocumented"):
        module.routes_section()
