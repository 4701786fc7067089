"""The test harness stays out of the runtime: only chatsvc.testing itself and the benchmark import it.

chatsvc.testing needs the development extras (httpx, pytest); a runtime module importing it would
fail in the image, or carry the harness along. Read from the import statements (ast), wherever
they stand in a module (inside functions and `if TYPE_CHECKING:` too), not from the text.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "src" / "chatsvc"
HARNESS = "chatsvc.testing"
MAY_IMPORT_HARNESS = ("chatsvc.testing", "chatsvc.bench")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, *, is_package: bool = False) -> set[str]:
    """Every module `source` (the text of `module`) imports, relative imports resolved; for
    `from a import b`, both `a` and `a.b` (b may be a module)."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[:len(base) - node.level + 1]
                origin = ".".join([*base, node.module] if node.module else base)
            else:
                origin = node.module or ""
            found.add(origin)
            found.update(f"{origin}.{alias.name}" for alias in node.names)
    return found


def is_harness(name: str) -> bool:
    return name == HARNESS or name.startswith(HARNESS + ".")


def test_no_module_outside_the_harness_and_the_benchmark_imports_the_harness() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        if any(module == allowed or module.startswith(allowed + ".") for allowed in MAY_IMPORT_HARNESS):
            continue
        imported = imported_modules(path.read_text(), module, is_package=path.name == "__init__.py")
        offenders += [f"{module} imports {name}" for name in sorted(imported) if is_harness(name)]
    assert offenders == []


def test_the_package_is_all_read() -> None:
    modules = {module_name(path) for path in PACKAGE.rglob("*.py")}
    assert {"chatsvc", "chatsvc.ha.cluster", "chatsvc.ha.pooler", "chatsvc.testing.servers"} <= modules


@pytest.mark.parametrize(("source", "module"), [
    ("import chatsvc.testing", "chatsvc.ha.cluster"),
    ("import chatsvc.testing.servers as servers", "chatsvc.ha.cluster"),
    ("from chatsvc.testing import free_port", "chatsvc.ha.cluster"),
    ("from chatsvc.testing.servers import free_port", "chatsvc.ha.cluster"),
    ("from chatsvc import testing", "chatsvc.ha.cluster"),
    ("from ..testing import free_port", "chatsvc.ha.cluster"),
    ("from .. import testing", "chatsvc.ha.cluster"),
    ("from . import testing", "chatsvc.app"),
    ("def later():\n    from chatsvc.testing import free_port\n", "chatsvc.ha.cluster"),
    ("if TYPE_CHECKING:\n    import chatsvc.testing\n", "chatsvc.app"),
])
def test_every_spelling_of_an_import_of_the_harness_is_seen(source: str, module: str) -> None:
    assert any(is_harness(name) for name in imported_modules(source, module))


@pytest.mark.parametrize("source", [
    "# from chatsvc.testing import free_port",
    '"""Uses chatsvc.testing in its tests."""',
    "from chatsvc.ports import free_port",
    "import chatsvc.testingground",
    "from chatsvc import test_data",
])
def test_mentions_and_look_alikes_are_not_imports_of_the_harness(source: str) -> None:
    assert not any(is_harness(name) for name in imported_modules(source, "chatsvc.ha.cluster"))
