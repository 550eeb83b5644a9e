"""The runtime's packages export their public names, sorted, each from its one home.

`executor.run` and `executor.store` name each export once, in their
`TYPE_CHECKING` block (`executor._utils.export_lazily`); `executor` still
writes them three times (that block, `__all__`, the lazy loader's homes).
Either way, what is exported is what the block imports, from where it says.
(Ruff's RUF022 keeps every written `__all__` sorted.)
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PACKAGES = ("executor", "executor.run", "executor.store")


def _type_checking_imports(package: str) -> dict[str, str]:
    """Each name the package's `if TYPE_CHECKING:` block imports, and from where."""
    module = importlib.import_module(package)
    assert module.__file__ is not None
    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    names: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for stmt in node.body:
                assert isinstance(stmt, ast.ImportFrom) and stmt.module is not None
                names.update({alias.name: stmt.module for alias in stmt.names})
    return names


@pytest.mark.parametrize("package", PACKAGES)
def test_all_homes_and_type_checking_imports_agree(package: str) -> None:
    module = importlib.import_module(package)
    exported = list(module.__all__)
    imports = _type_checking_imports(package)
    homes: dict[str, str] = vars(module).get("_HOME", imports)
    assert len(exported) == len(set(exported))
    assert set(exported) == set(imports) == set(homes)
    for name in exported:
        home = importlib.import_module(homes[name])
        assert getattr(module, name) is getattr(home, name), name
        # The home is the module that defines it, or the subpackage that exports it.
        assert imports[name] == homes[name] or homes[name].startswith(imports[name]), name


@pytest.mark.parametrize("package", ["executor.run", "executor.store"])
def test_submodules_export_what_they_define(package: str) -> None:
    module = importlib.import_module(package)
    assert module.__file__ is not None
    for path in sorted(Path(module.__file__).parent.glob("[!_]*.py")):
        sub = importlib.import_module(f"{package}.{path.stem}")
        assert sub.__doc__, f"{sub.__name__} says what it is for"
        for name in sub.__all__:
            assert hasattr(sub, name), (sub.__name__, name)
