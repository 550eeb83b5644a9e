"""The package layering and public exports hold (ARCHITECTURE.md, "Layers")."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("executor", "planner", "server")
# Imports point down only: the runtime knows nothing of the compiler or the face.
FORBIDDEN = {
    "executor": {"planner", "server"},
    "planner": {"server"},
    "server": set(),
}


def _imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_point_down_only(package: str) -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {sorted(bad)}"
        for path in sorted((ROOT / package).rglob("*.py"))
        if (bad := _imported_top_levels(path) & FORBIDDEN[package])
    ]
    assert offenders == []


@pytest.mark.parametrize("package", PACKAGES)
def test_all_is_unique_and_resolvable(package: str) -> None:
    # Its order is ruff's (RUF022, isort-style), checked by `make lint`.
    module = importlib.import_module(package)
    exported = list(module.__all__)
    assert len(exported) == len(set(exported))
    missing = [name for name in exported if not hasattr(module, name)]
    assert missing == []


# What each import must leave unloaded: `taskorch --help` and `taskorch serve`
# start faster when nothing the first answer does not need is imported.
_LAZY = {
    "server.cli": ("mcp", "jsonschema", "aiosqlite", "rich", "litellm"),
    "server.mcp.build": ("typer", "rich", "litellm"),
    "server.cli.main": ("mcp", "jsonschema", "aiosqlite", "rich", "litellm"),
    "executor": ("mcp", "jsonschema", "aiosqlite", "websockets"),
    "executor.errors": ("mcp", "jsonschema", "pydantic"),
    "planner": ("mcp", "jsonschema", "litellm"),
    "server": ("mcp", "jsonschema", "aiosqlite", "litellm"),
}


@pytest.mark.parametrize("module", sorted(_LAZY))
def test_importing_a_module_leaves_heavy_libraries_unloaded(module: str) -> None:
    code = (
        f"import sys, {module}; print(' '.join(m for m in {_LAZY[module]!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == [], f"import {module} loaded {out.stdout.strip()}"
