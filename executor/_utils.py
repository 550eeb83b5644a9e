"""Small helpers shared across the packages; they import nothing heavy.

- `export_lazily`: a package's `__init__` names its exports once, in an
  `if TYPE_CHECKING or not export_lazily(globals()):` block of imports, and
  each is loaded only when first used, so the CLI and `taskorch serve` start
  faster when, say, jsonschema or the SDK's client load only when needed.
- `leaf_exceptions`: what anyio's task groups wrapped, unwrapped.
- `json_kind`: a JSON value's type, for error messages.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["export_lazily", "json_kind", "lazy_exports", "leaf_exceptions"]


def export_lazily(namespace: dict[str, Any]) -> bool:
    """Make a package export, lazily, the names its `TYPE_CHECKING` block imports.

    Call it as `if TYPE_CHECKING or not export_lazily(globals()):` above the
    block of `from module import Name as Name` lines: type checkers read the
    imports, and at run time each name is imported from its module on first
    use (at once when a submodule has its name). The package's `__all__`
    becomes the sorted names.

    Args:
        namespace: The package's `globals()`.

    Returns:
        `True`, or `False` when the package's source cannot be read (a frozen
        build): the block then runs and imports everything at once.
    """
    try:
        source = Path(namespace["__file__"]).read_text(encoding="utf-8")
    except (KeyError, TypeError, OSError):
        return False
    homes: dict[str, str] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.If) and _names_type_checking(node.test):
            for stmt in node.body:
                if isinstance(stmt, ast.ImportFrom) and stmt.module and stmt.level == 0:
                    homes.update((a.asname or a.name, stmt.module) for a in stmt.names)
    package = namespace["__name__"]
    getattr_, dir_ = lazy_exports(package, homes, namespace)
    namespace.update(__getattr__=getattr_, __dir__=dir_, __all__=sorted(homes))
    for name, home in homes.items():
        if home == f"{package}.{name}":
            # A submodule of the export's name: importing it (as a sibling may)
            # would bind the module under that name, so the export is bound now.
            namespace[name] = getattr(importlib.import_module(home), name)
    return True


def _names_type_checking(test: ast.expr) -> bool:
    return any(
        (isinstance(n, ast.Name) and n.id == "TYPE_CHECKING")
        or (isinstance(n, ast.Attribute) and n.attr == "TYPE_CHECKING")
        for n in ast.walk(test)
    )


def lazy_exports(
    package: str, homes: Mapping[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Build a package's module-level `__getattr__` and `__dir__` (see `export_lazily`).

    Args:
        package: The package's name, for error messages.
        homes: Each exported name and the module that defines it.
        namespace: The package's `globals()`; a name is cached there once loaded.

    Returns:
        `(__getattr__, __dir__)` to assign at the package's module level.
    """

    def getattr_(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home), name)
        namespace[name] = value
        return value

    def dir_() -> list[str]:
        return sorted({*namespace, *homes})

    return getattr_, dir_


def leaf_exceptions(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (possibly nested) exception groups, or `[exc]` itself."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaf_exceptions(inner)]
    return [exc]


def json_kind(value: object) -> str:
    """Name a JSON value's type with its article ("a string", "an object", "null")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "an array"
    return f"a {type(value).__name__}"
