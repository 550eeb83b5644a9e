"""Small helpers shared across the packages; they import nothing heavy.

- `lazy_exports`: the packages' `__init__` modules load a name only when it
  is first used, so the CLI and `taskorch serve` start faster when, say,
  jsonschema or the SDK's client load only when needed.
- `leaf_exceptions`: what anyio's task groups wrapped, unwrapped.
- `json_kind`: a JSON value's type, for error messages.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["json_kind", "lazy_exports", "leaf_exceptions"]


def lazy_exports(
    package: str, homes: Mapping[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Build a package's module-level `__getattr__` and `__dir__`.

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
