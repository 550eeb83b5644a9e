"""Persistence: the `Store` protocol the runtime and the face depend on, and its backends.

`SqliteStore` (`executor.store.sqlite`) is the embedded default; the protocol
and the values it speaks (`WriteBatch`, `RunLease`, ...) are in
`executor.store.base`. Nothing outside this package touches SQL or SQLite.
Names are imported on first use, so that `executor.store.base` does not load
aiosqlite.
"""

from __future__ import annotations

import typing

from executor._utils import export_lazily as _export_lazily

if typing.TYPE_CHECKING or not _export_lazily(globals()):
    from executor.store.base import ExpectedPlanStatus as ExpectedPlanStatus
    from executor.store.base import HostTask as HostTask
    from executor.store.base import LeaseInfo as LeaseInfo
    from executor.store.base import PlanStatusChange as PlanStatusChange
    from executor.store.base import RunKey as RunKey
    from executor.store.base import RunLease as RunLease
    from executor.store.base import Store as Store
    from executor.store.base import WriteBatch as WriteBatch
    from executor.store.schema import APPLICATION_ID as APPLICATION_ID
    from executor.store.schema import MIGRATIONS as MIGRATIONS
    from executor.store.schema import SCHEMA_VERSION as SCHEMA_VERSION
    from executor.store.schema import Migration as Migration
    from executor.store.sqlite import SqliteStore as SqliteStore
