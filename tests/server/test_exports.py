"""`server` exports its public names, sorted, each resolving to the object of its module.

(Ruff's RUF022 keeps every module's `__all__` sorted.)
"""

from __future__ import annotations

import importlib

import server


def test_all_is_sorted_and_every_name_resolves() -> None:
    assert server.__all__ == sorted(server.__all__)
    for name in server.__all__:
        value = getattr(server, name)
        home = importlib.import_module(value.__module__)
        assert getattr(home, name) is value, name


def test_submodules_export_what_they_define() -> None:
    for module in ("server.app", "server.orchestrator", "server.render", "server.views"):
        mod = importlib.import_module(module)
        for name in mod.__all__:
            assert hasattr(mod, name), (module, name)
