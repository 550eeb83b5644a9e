"""Persistence: the `Store` protocol the runtime and the face depend on, and its backends.

`SqliteStore` (`executor.store.sqlite`) is the embedded default;
`PostgresStore` (`executor.store.postgres`, the `postgres` extra: import it
from there) serves several replicas; `open_store` opens the one a database
setting names. The protocol and the values it speaks (`WriteBatch`,
`RunLease`, ...) are in `executor.store.base`. Nothing outside this package
touches SQL. Names are imported on first use, so that `executor.store.base`
does not load aiosqlite.
"""

from __future__ import annotations

import typing

from executor._utils import export_lazily as _export_lazily

if typing.TYPE_CHECKING or not _export_lazily(globals()):
    from executor.store.base import EventFeed as EventFeed
    from executor.store.base import ExpectedPlanStatus as ExpectedPlanStatus
    from executor.store.base import HostTask as HostTask
    from executor.store.base import LeaseInfo as LeaseInfo
    from executor.store.base import OpenStore as OpenStore
    from executor.store.base import PlanStatusChange as PlanStatusChange
    from executor.store.base import RunKey as RunKey
    from executor.store.base import RunLease as RunLease
    from executor.store.base import Store as Store
    from executor.store.base import WriteBatch as WriteBatch
    from executor.store.location import DatabaseUrl as DatabaseUrl
    from executor.store.location import locate as locate
    from executor.store.location import open_store as open_store
    from executor.store.schema import APPLICATION_ID as APPLICATION_ID
    from executor.store.schema import MIGRATIONS as MIGRATIONS
    from executor.store.schema import SCHEMA_VERSION as SCHEMA_VERSION
    from executor.store.schema import Migration as Migration
    from executor.store.sqlite import SqliteStore as SqliteStore
