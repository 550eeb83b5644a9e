"""Persistence: the `Store` protocol the runtime and the face depend on, and its backends.

`SqliteStore` (`executor.store.sqlite`) is the embedded default; the protocol
and the values it speaks (`WriteBatch`, `RunLease`, ...) are in
`executor.store.base`. Nothing outside this package touches SQL or SQLite.
Names are imported on first use, so that `executor.store.base` does not load
aiosqlite.
"""

from __future__ import annotations

import typing

from executor._utils import lazy_exports as _lazy_exports

# `typing` itself, not its names: the package's namespace holds only its exports.
if typing.TYPE_CHECKING:
    from executor.store.base import (
        ExpectedPlanStatus,
        LeaseInfo,
        PlanStatusChange,
        RunKey,
        RunLease,
        Store,
        WriteBatch,
    )
    from executor.store.schema import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION, Migration
    from executor.store.sqlite import SqliteStore

__all__ = [
    "APPLICATION_ID",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "ExpectedPlanStatus",
    "LeaseInfo",
    "Migration",
    "PlanStatusChange",
    "RunKey",
    "RunLease",
    "SqliteStore",
    "Store",
    "WriteBatch",
]

_HOME = {
    "APPLICATION_ID": "executor.store.schema",
    "MIGRATIONS": "executor.store.schema",
    "SCHEMA_VERSION": "executor.store.schema",
    "ExpectedPlanStatus": "executor.store.base",
    "LeaseInfo": "executor.store.base",
    "Migration": "executor.store.schema",
    "PlanStatusChange": "executor.store.base",
    "RunKey": "executor.store.base",
    "RunLease": "executor.store.base",
    "SqliteStore": "executor.store.sqlite",
    "Store": "executor.store.base",
    "WriteBatch": "executor.store.base",
}

__getattr__, __dir__ = _lazy_exports(__name__, _HOME, globals())
