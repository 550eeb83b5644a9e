"""What the wheel promises: every library the code imports is declared, with bounds."""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("executor", "planner", "server")


def _declared(*, extras: bool = False) -> dict[str, Requirement]:
    """The `[project]` dependencies; with `extras`, also those of the user-facing extras.

    An extra (`otel`, `postgres`) declares what its optional modules import; they load
    it only when the feature is used (tests/test_layers.py checks that). `dev` declares
    the tools, not what the code imports, and is left out.
    """
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    lines = list(project["dependencies"])
    if extras:
        for extra, more in project.get("optional-dependencies", {}).items():
            if extra != "dev":
                lines += more
    requirements = (Requirement(line) for line in lines)
    return {_normal(r.name): r for r in requirements if _normal(r.name) != "taskorch"}


def _normal(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _imported() -> dict[str, set[str]]:
    """Top-level modules imported by the packages (anywhere in a file), and by which files."""
    found: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in (*PACKAGES, "__future__"):
                        found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_imported_library_is_a_declared_dependency() -> None:
    declared = _declared(extras=True)
    owners = packages_distributions()
    undeclared = {
        module: sorted(files)
        for module, files in _imported().items()
        if not any(_normal(d) in declared for d in owners.get(module, [module]))
    }
    assert undeclared == {}, "imported but not in [project] dependencies"


def test_every_dependency_has_an_upper_bound() -> None:
    unbounded = [
        str(r)
        for r in _declared(extras=True).values()
        if not any(s.operator in ("<", "<=", "==", "~=") for s in r.specifier)
    ]
    assert unbounded == []


def test_aiosqlite_is_held_to_the_minor_version_whose_private_api_the_store_uses() -> None:
    spec = _declared()["aiosqlite"].specifier
    assert spec.contains("0.22.1")
    assert not spec.contains("0.23.0")
    assert not spec.contains("0.21.0")


def test_the_compromised_litellm_releases_stay_excluded() -> None:
    spec = _declared()["litellm"].specifier
    assert not spec.contains("1.82.7")
    assert not spec.contains("1.82.8")
