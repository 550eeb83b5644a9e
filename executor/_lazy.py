"""Lazy package exports, shared by the three packages' `__init__` modules.

Importing a package should not import every module behind its exports: the
CLI and `taskorch serve` start faster when, say, jsonschema or the SDK's
client load only when first used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


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
