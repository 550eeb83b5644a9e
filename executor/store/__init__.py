"""Persistence: the `Store` protocol the runtime and the face depend on, and its backends.

`SqliteStore` (`executor.store.sqlite`) is the embedded default and
`PostgresStore` (`executor.store.postgres`, the `postgres` extra) serves
several replicas; `open_store` opens the one a database setting names. The protocol
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
        EventFeed,
        ExpectedPlanStatus,
        LeaseInfo,
        OpenStore,
        PlanStatusChange,
        RunKey,
        RunLease,
        Store,
        WriteBatch,
    )
    from executor.store.location import DatabaseUrl, locate, open_store
    from executor.store.postgres import PostgresStore
    from executor.store.schema import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION, Migration
    from executor.store.sqlite import SqliteStore

__all__ = [
    "APPLICATION_ID",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "DatabaseUrl",
    "EventFeed",
    "ExpectedPlanStatus",
    "LeaseInfo",
    "Migration",
    "OpenStore",
    "PlanStatusChange",
    "PostgresStore",
    "RunKey",
    "RunLease",
    "SqliteStore",
    "Store",
    "WriteBatch",
    "locate",
    "open_store",
]

_HOME = {
    "APPLICATION_ID": "executor.store.schema",
    "MIGRATIONS": "executor.store.schema",
    "SCHEMA_VERSION": "executor.store.schema",
    "DatabaseUrl": "executor.store.location",
    "EventFeed": "executor.store.base",
    "ExpectedPlanStatus": "executor.store.base",
    "LeaseInfo": "executor.store.base",
    "Migration": "executor.store.schema",
    "OpenStore": "executor.store.base",
    "PlanStatusChange": "executor.store.base",
    "PostgresStore": "executor.store.postgres",
    "RunKey": "executor.store.base",
    "RunLease": "executor.store.base",
    "SqliteStore": "executor.store.sqlite",
    "Store": "executor.store.base",
    "WriteBatch": "executor.store.base",
    "locate": "executor.store.location",
    "open_store": "executor.store.location",
}

__getattr__, __dir__ = _lazy_exports(__name__, _HOME, globals())
