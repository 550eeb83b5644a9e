"""Each package exports, lazily, exactly the names its `TYPE_CHECKING` block imports."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from executor._utils import export_lazily

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = sorted(
    ".".join(init.parent.relative_to(ROOT).parts)
    for top in ("executor", "planner", "server")
    for init in ROOT.glob(f"{top}/**/__init__.py")
    # A package that exports nothing (`server.examples`: servers to run) has no block.
    if "export_lazily" in init.read_text(encoding="utf-8")
)


def _block_names(package: str) -> list[str]:
    path = ROOT / package.replace(".", "/") / "__init__.py"
    names: list[str] = []
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.If):
            for stmt in node.body:
                assert isinstance(stmt, ast.ImportFrom), ast.dump(stmt)
                for alias in stmt.names:
                    assert alias.asname == alias.name, "re-export as `Name as Name`"
                    names.append(alias.name)
    return names


@pytest.mark.parametrize("package", PACKAGES)
def test_all_is_the_sorted_block_and_every_name_is_its_modules(package: str) -> None:
    module = importlib.import_module(package)
    names = _block_names(package)
    assert module.__all__ == sorted(names)
    for name in module.__all__:
        value = getattr(module, name)
        home = getattr(value, "__module__", None)
        if isinstance(home, str) and home.startswith(package):
            assert getattr(importlib.import_module(home), name) is value, name
    assert set(module.__all__) <= set(dir(module))


@pytest.mark.parametrize("package", PACKAGES)
def test_importing_a_package_imports_none_of_its_exports(package: str) -> None:
    code = f"import sys, {package}; print(*(m for m in sys.modules if m.startswith('{package}.')))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    # A submodule named like one of the exports is imported at once (see export_lazily).
    eager = {f"{package}.{name}" for name in importlib.import_module(package).__all__}
    assert [m for m in out.stdout.split() if not m.endswith("._utils") and m not in eager] == []


def test_without_its_source_a_package_imports_everything_at_once() -> None:
    namespace = {"__name__": "frozen"}
    assert export_lazily(namespace) is False
    assert "__getattr__" not in namespace
