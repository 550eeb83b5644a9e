"""Each package of the face exports, lazily, exactly the names its `TYPE_CHECKING` block imports.

(Ruff's RUF022 keeps every module's own `__all__` sorted.)
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = sorted(
    ".".join(init.parent.relative_to(ROOT).parts) for init in ROOT.glob("server/**/__init__.py")
)
MODULES = sorted(
    ".".join(path.with_suffix("").relative_to(ROOT).parts)
    for path in ROOT.glob("server/**/*.py")
    if not path.name.startswith("__")
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


def test_every_package_is_checked() -> None:
    assert {"server", "server.cli", "server.config", "server.mcp"} <= set(PACKAGES)


@pytest.mark.parametrize("package", PACKAGES)
def test_all_is_the_sorted_block_and_every_name_is_its_modules(package: str) -> None:
    module = importlib.import_module(package)
    assert module.__all__ == sorted(_block_names(package))
    for name in module.__all__:
        value = getattr(module, name)
        home = importlib.import_module(getattr(value, "__module__", package))
        assert getattr(home, name, value) is value, name
    assert set(module.__all__) <= set(dir(module))


@pytest.mark.parametrize("module", MODULES)
def test_modules_export_what_they_define(module: str) -> None:
    mod = importlib.import_module(module)
    for name in getattr(mod, "__all__", ()):
        assert hasattr(mod, name), (module, name)
