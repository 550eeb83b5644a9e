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


def test_only_the_store_touches_a_database_driver() -> None:
    # The store is the seam another database plugs into: SQL stays behind it.
    store = ROOT / "executor" / "store"
    offenders = [
        f"{path.relative_to(ROOT)} imports {sorted(bad)}"
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if store not in path.parents
        and (
            bad := _imported_top_levels(path) & {"sqlite3", "aiosqlite", "psycopg", "psycopg_pool"}
        )
    ]
    assert offenders == []


def _names_sqlite_store(path: Path) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "executor.store.sqlite":
            return True
        if isinstance(node, ast.ImportFrom) and any(a.name == "SqliteStore" for a in node.names):
            return True
    return False


# Where the concrete store is made, and the package that re-exports it.
_MAKES_THE_STORE = {Path("server/service.py"), Path("executor/__init__.py")}


def test_only_where_the_store_is_made_names_sqlite_store() -> None:
    # The engine and the face speak the `Store` protocol: any store can stand in.
    store = ROOT / "executor" / "store"
    offenders = [
        str(path.relative_to(ROOT))
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if store not in path.parents
        and path.relative_to(ROOT) not in _MAKES_THE_STORE
        and _names_sqlite_store(path)
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
    "server.cli": ("mcp", "jsonschema", "aiosqlite", "rich", "litellm", "opentelemetry", "psycopg"),
    "server.mcp.build": ("typer", "rich", "litellm", "psycopg"),
    "server.cli.main": (
        "mcp",
        "jsonschema",
        "aiosqlite",
        "rich",
        "litellm",
        "opentelemetry",
        "psycopg",
    ),
    "server.cli.commands": ("mcp", "jsonschema", "litellm", "opentelemetry"),
    "server.config": ("aiosqlite", "psycopg"),
    "executor": ("mcp", "jsonschema", "aiosqlite", "websockets", "opentelemetry", "psycopg"),
    "executor.store.location": ("aiosqlite", "psycopg", "pydantic"),
    "executor.errors": ("mcp", "jsonschema", "pydantic"),
    "executor.run.scheduler": ("aiosqlite", "opentelemetry", "psycopg"),
    "planner": ("mcp", "jsonschema", "litellm", "opentelemetry"),
    "server": ("mcp", "jsonschema", "aiosqlite", "litellm", "opentelemetry", "psycopg"),
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
