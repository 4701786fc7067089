"""README.md's generated sections match the code (`make readme`, bin/update-readme, rewrites them);
docs/API.md describes every route and error code; every link between the documents leads somewhere."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from starlette.routing import Route

from chatsvc import admin, app
from chatsvc.admin import debug
from chatsvc.config import describe
from chatsvc.errors import STATUS
from tests import PROJECT_ROOT

UPDATE_README = PROJECT_ROOT / "bin" / "update-readme"
README = PROJECT_ROOT / "README.md"
API_REFERENCE = PROJECT_ROOT / "docs" / "API.md"
DOCUMENTS = [README, API_REFERENCE, PROJECT_ROOT / "docs" / "ARCHITECTURE.md"]


def update_readme(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(UPDATE_README), *map(str, args)], capture_output=True,
                          text=True, timeout=120, check=False, cwd=PROJECT_ROOT)


def load_update_readme() -> Any:
    """bin/update-readme as a module (it has no .py suffix to import it by)."""
    loader = importlib.machinery.SourceFileLoader("update_readme", str(UPDATE_README))
    spec = importlib.util.spec_from_loader("update_readme", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def section(readme: str, name: str) -> str:
    (body,) = re.findall(rf"<!-- BEGIN {name} -->\n(.*?)<!-- END {name} -->", readme, re.DOTALL)
    return body


def test_readme_is_up_to_date():
    checked = update_readme("--check")
    assert checked.returncode == 0, (
        f"README.md is stale: run `make readme` (or `.venv/bin/python bin/update-readme`) and commit "
        f"the result.\n{checked.stdout}{checked.stderr}")


def test_generated_sections_cover_every_route_setting_and_target():
    readme = README.read_text()
    routes = section(readme, "ROUTES")
    for route in [*app.ROUTES, *admin.ROUTES, *debug.ROUTES]:
        assert f" {route.path_format}` |" in routes, f"{route.path_format} is missing from the route table"
    config = section(readme, "CONFIG")
    for name, _, _ in describe():
        assert f"| `{name}` |" in config, f"{name} is missing from the configuration table"
    targets = section(readme, "MAKE HELP")
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    for target in re.findall(r"^([a-z][a-z-]*):.*## ", makefile, re.MULTILINE):
        assert re.search(rf"^  {target} ", targets, re.MULTILINE), f"make {target} is missing"


def test_the_readme_links_the_script_and_the_references_instead_of_copying_them():
    readme = README.read_text()
    for target in ["bin/integration-test", "docs/API.md", "docs/ARCHITECTURE.md", "BENCHMARKS.md"]:
        assert f"]({target})" in readme, f"README.md does not link {target}"
    script = (PROJECT_ROOT / "bin" / "integration-test").read_text().splitlines()
    body = [line for line in script if len(line.strip()) > 40]
    copied = [line for line in body if line in readme.splitlines()]
    assert len(copied) < 5, f"README.md copies bin/integration-test again: {copied[:5]}"


def test_the_api_reference_describes_every_route_and_error_code():
    reference = API_REFERENCE.read_text()
    update_readme = load_update_readme()
    for listener, routes in update_readme.listeners():
        for methods, path, _ in update_readme._flatten(routes):
            for method in methods:
                assert f"{method} {path}" in reference, f"docs/API.md lacks {listener} {method} {path}"
    for code, status in STATUS.items():
        assert f"| {status} | `{code}` |" in reference, f"docs/API.md's error table lacks {status} {code}"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(PROJECT_ROOT)))
def test_every_relative_link_leads_to_a_file_and_heading_that_exist(document: Path):
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", document.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # an absolute URL
        path, _, anchor = target.partition("#")
        linked = (document.parent / path).resolve() if path else document
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in heading_anchors(linked.read_text()):
            broken.append(f"{target}: no such heading in {linked.name}")
    assert broken == [], f"{document.name}: " + "; ".join(broken)


def heading_anchors(markdown: str) -> set[str]:
    """The anchors GitHub makes of the headings: lower case, punctuation dropped, spaces as hyphens."""
    outside_code = re.sub(r"^```.*?^```", "", markdown, flags=re.MULTILINE | re.DOTALL)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
            for heading in re.findall(r"^#{1,6} (.+)$", outside_code, re.MULTILINE)}


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
    module = load_update_readme()

    async def undocumented(request):  # pragma: no cover - never served
        raise NotImplementedError

    monkeypatch.setattr(app, "ROUTES", [*app.ROUTES, Route("/undocumented", undocumented, methods=["GET"])])
    with pytest.raises(module.StaleSource, match="GET /undocumented"):
        module.routes_section()
