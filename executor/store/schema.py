"""The SQLite store's schema: its tables, versioned migrations, and the check of a file.

The schema is versioned by `PRAGMA user_version` and migrated on open by the
steps in `MIGRATIONS`, all pending ones in one transaction. A file written by
a newer taskorch is refused (`SchemaTooNewError`); a file that is not a
taskorch database (`PRAGMA application_id`), or is damaged, is refused
(`CorruptDatabaseError`) and never modified.
"""

from __future__ import annotations

import sqlite3
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from executor.errors import CorruptDatabaseError, InternalError, SchemaTooNewError

if TYPE_CHECKING:
    # The versions alone are read without an event loop (the command line's reads).
    import aiosqlite

__all__ = [
    "APPLICATION_ID",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Migration",
    "check_migrations",
    "migrate",
    "probe",
]

APPLICATION_ID: Final = 0x544B4F52
"""`PRAGMA application_id` of a taskorch database ("TKOR"), to tell it from other SQLite files."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One step of the schema's history, applied inside the migrating transaction."""

    version: int
    """The `user_version` the database has once this step is applied."""
    description: str
    """What the step changes, for people."""
    statements: tuple[str, ...]
    """SQL run in order; no transaction control (the migrator owns the transaction)."""


_SCHEMA_1: Final = (
    f"PRAGMA application_id = {APPLICATION_ID}",
    # Plan content is immutable once saved; status, approval and run times change.
    # `content` keeps every Plan field but steps, status and approved_hash, so a field
    # added to Plan later is kept without a schema change; the other columns exist to
    # be queried.
    """
    CREATE TABLE plans (
        plan_id TEXT NOT NULL,
        version INTEGER NOT NULL CHECK (version >= 1),
        query TEXT NOT NULL,
        strategy TEXT NOT NULL,
        agent TEXT,
        session_id TEXT,
        deadline_s REAL,
        status TEXT NOT NULL,
        approved_hash TEXT,
        plan_hash TEXT NOT NULL,
        considered_tools TEXT NOT NULL,
        content TEXT NOT NULL,
        created_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (plan_id, version)
    )
    """,
    "CREATE INDEX plans_by_created ON plans (created_at)",
    "CREATE INDEX plans_by_status ON plans (status, created_at)",
    "CREATE INDEX plans_by_session ON plans (session_id, created_at)",
    """
    CREATE TABLE steps (
        plan_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        step_id TEXT NOT NULL,
        position INTEGER NOT NULL,
        server TEXT NOT NULL,
        tool TEXT NOT NULL,
        content TEXT NOT NULL,
        PRIMARY KEY (plan_id, version, step_id),
        UNIQUE (plan_id, version, position),
        FOREIGN KEY (plan_id, version) REFERENCES plans (plan_id, version) ON DELETE CASCADE
    )
    """,
    "CREATE INDEX steps_by_tool ON steps (server, tool)",
    # The full MCP result of the last finished attempt lives with the step state.
    """
    CREATE TABLE step_states (
        plan_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        step_id TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        output TEXT NOT NULL,
        result TEXT,
        error TEXT,
        started_at TEXT,
        finished_at TEXT,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (plan_id, version, step_id),
        FOREIGN KEY (plan_id, version, step_id)
            REFERENCES steps (plan_id, version, step_id) ON DELETE CASCADE
    )
    """,
    """
    CREATE TABLE attempts (
        plan_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        step_id TEXT NOT NULL,
        attempt INTEGER NOT NULL CHECK (attempt >= 1),
        status TEXT NOT NULL,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        error TEXT,
        PRIMARY KEY (plan_id, version, step_id, attempt),
        FOREIGN KEY (plan_id, version, step_id)
            REFERENCES steps (plan_id, version, step_id) ON DELETE CASCADE
    )
    """,
    # AUTOINCREMENT: a seq is never reused, even after the newest events are deleted,
    # so a reader paging with `after_seq` never misses or repeats one.
    """
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        plan_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        step_id TEXT,
        at TEXT NOT NULL,
        data TEXT NOT NULL
    )
    """,
    "CREATE INDEX events_by_plan ON events (plan_id, seq)",
    """
    CREATE TABLE agents (
        name TEXT PRIMARY KEY NOT NULL,
        content TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )
    """,
    """
    CREATE TABLE tool_stats (
        server TEXT NOT NULL,
        tool TEXT NOT NULL,
        count INTEGER NOT NULL,
        mean_s REAL NOT NULL,
        m2 REAL NOT NULL,
        last_s REAL NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (server, tool)
    )
    """,
    """
    CREATE TABLE planner_attempts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        plan_id TEXT,
        attempt INTEGER NOT NULL,
        model TEXT NOT NULL,
        prompt_tokens INTEGER,
        completion_tokens INTEGER,
        latency_s REAL NOT NULL,
        errors TEXT NOT NULL,
        at TEXT NOT NULL
    )
    """,
    "CREATE INDEX planner_attempts_by_plan ON planner_attempts (plan_id, id)",
)

# Who runs an `executing` plan version, and until when (see `RunLease`). NULL owner:
# nobody holds it (rows from before this migration, or a run that was released).
_SCHEMA_2: Final = (
    "ALTER TABLE plans ADD COLUMN lease_owner TEXT",
    "ALTER TABLE plans ADD COLUMN lease_until TEXT",
)

# When another process asked the owner of an executing plan version to cancel it;
# NULL when nobody has. Cleared by every status change.
_SCHEMA_3: Final = ("ALTER TABLE plans ADD COLUMN cancel_requested_at TEXT",)

# A step's result, stored once. `skeleton` is the result's JSON with every long string
# (at least `_PART_MIN` characters) emptied; `parts` lists, as JSON, where each one goes
# ([[path, part], ...]) and `result_parts` holds each distinct long string once (TEXT, or
# a UTF-8 BLOB when it has lone surrogates), so a tool that repeats its text in its
# structured content costs one copy. The step state keeps only a summary and, when
# small, the output itself (column `output`).
_SCHEMA_4: Final = (
    "ALTER TABLE step_states ADD COLUMN summary TEXT",
    """
    CREATE TABLE step_results (
        plan_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        step_id TEXT NOT NULL,
        skeleton TEXT NOT NULL,
        parts TEXT NOT NULL,
        PRIMARY KEY (plan_id, version, step_id),
        FOREIGN KEY (plan_id, version, step_id)
            REFERENCES steps (plan_id, version, step_id) ON DELETE CASCADE
    )
    """,
    """
    CREATE TABLE result_parts (
        id INTEGER PRIMARY KEY,
        plan_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        step_id TEXT NOT NULL,
        part INTEGER NOT NULL,
        data BLOB NOT NULL,
        UNIQUE (plan_id, version, step_id, part),
        FOREIGN KEY (plan_id, version, step_id)
            REFERENCES step_results (plan_id, version, step_id) ON DELETE CASCADE
    )
    """,
)

# Statistics: each attempt's own call time (monotonic, without the wait for the server's
# call limit), attempts by start time (the `since` of every statistic), and what the
# pool saw of each server's availability (restarts, time down).
_SCHEMA_8: Final = (
    "ALTER TABLE attempts ADD COLUMN call_s REAL",
    "CREATE INDEX attempts_by_started ON attempts (started_at)",
    """
    CREATE TABLE server_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        owner TEXT NOT NULL,
        server TEXT NOT NULL,
        kind TEXT NOT NULL,
        at TEXT NOT NULL,
        restart INTEGER NOT NULL DEFAULT 0,
        reason TEXT
    )
    """,
    "CREATE INDEX server_events_by_server ON server_events (server, at)",
)

# Why a step is skipped (`executor.status.SkipReason`); NULL for any other status. A
# skip by decision used to be told by its error's kind alone: such rows get their reason.
_SCHEMA_9: Final = (
    "ALTER TABLE step_states ADD COLUMN skip_reason TEXT",
    """
    UPDATE step_states SET skip_reason = 'decision'
    WHERE status = 'skipped' AND json_extract(error, '$.kind') = 'interrupted'
    """,
)

# MCP Tasks: the downstream task an attempt became (so a restart follows it instead of
# calling again); the tasks taskorch itself answered hosts with (a task is a run, bound
# to its caller); and keys taskorch keeps across restarts (the requestState sealing key).
_SCHEMA_12: Final = (
    "ALTER TABLE attempts ADD COLUMN task_id TEXT",
    """
    CREATE TABLE host_tasks (
        task_id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        plan_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        FOREIGN KEY (plan_id, version) REFERENCES plans (plan_id, version) ON DELETE CASCADE
    )
    """,
    "CREATE INDEX host_tasks_by_plan ON host_tasks (plan_id, version)",
    """
    CREATE TABLE server_keys (
        name TEXT PRIMARY KEY,
        secret BLOB NOT NULL,
        created_at TEXT NOT NULL
    )
    """,
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial schema", _SCHEMA_1),
    Migration(2, "run leases: owner and expiry per executing plan version", _SCHEMA_2),
    Migration(3, "cancel requests to the process that runs a plan version", _SCHEMA_3),
    Migration(4, "results stored once: a result table, its long strings apart", _SCHEMA_4),
    # 5 to 7 are taken by work on other branches; they are filled in when it merges.
    Migration(5, "reserved", ()),
    Migration(6, "reserved", ()),
    Migration(7, "reserved", ()),
    Migration(8, "statistics: call times, attempts by start, server availability", _SCHEMA_8),
    Migration(9, "skip reasons: a step skipped by decision says so", _SCHEMA_9),
    Migration(10, "reserved", ()),
    Migration(11, "reserved", ()),
    Migration(12, "MCP tasks: downstream task ids, host tasks, kept keys", _SCHEMA_12),
)
"""The schema's history, oldest first; `MIGRATIONS[i].version == i + 1`."""

SCHEMA_VERSION: Final = len(MIGRATIONS)
"""The newest schema version this taskorch knows."""


async def probe(db: aiosqlite.Connection, path: Path) -> int:
    """Check, without writing, that the file is a taskorch database we may use.

    Returns:
        The file's schema version (0 for a new, empty file).
    """
    rows = list(
        await db.execute_fetchall(
            "SELECT (SELECT count(*) FROM sqlite_master),"
            " (SELECT user_version FROM pragma_user_version),"
            " (SELECT application_id FROM pragma_application_id)"
        )
    )
    tables, version, app_id = rows[0]
    pristine = tables == 0 and version == 0 and app_id == 0
    if not pristine and app_id != APPLICATION_ID:
        raise CorruptDatabaseError(
            f"{path} is an SQLite database but not a taskorch one (application_id {app_id}, "
            f"{tables} schema object(s)); it was left untouched: point taskorch at another file"
        )
    _check_not_too_new(path, version)
    return int(version)


def _check_not_too_new(path: Path, version: int) -> None:
    if version > SCHEMA_VERSION:
        raise SchemaTooNewError(
            f"{path} has schema version {version}, written by a newer taskorch; this "
            f"taskorch supports schema versions up to {SCHEMA_VERSION}: upgrade taskorch "
            "(or point it at another database file)"
        )


async def migrate(db: aiosqlite.Connection, path: Path, version: int) -> None:
    """Apply every pending migration in one transaction: all of them, or none.

    Args:
        db: The connection, outside a transaction.
        path: The file, for messages.
        version: The file's schema version, as `probe` read it; nothing is written
            when it is current.
    """
    if version >= SCHEMA_VERSION:
        return
    await db.execute("BEGIN IMMEDIATE")
    try:
        # Read again under the write lock: another process may have migrated meanwhile.
        rows = list(await db.execute_fetchall("PRAGMA user_version"))
        current = int(rows[0][0])
        _check_not_too_new(path, current)
        for migration in MIGRATIONS[current:]:
            for statement in migration.statements:
                await db.execute(statement)
            # PRAGMA takes no parameters; the version is an int from our own table.
            await db.execute(f"PRAGMA user_version = {int(migration.version)}")
        await db.execute("COMMIT")
    except BaseException:
        import anyio

        with anyio.CancelScope(shield=True), suppress(sqlite3.Error):
            await db.rollback()
        raise


def check_migrations(migrations: tuple[Migration, ...], label: str) -> None:
    """Check that `migrations` numbers its steps 1, 2, 3, ... in order.

    Args:
        migrations: A store's schema history (`MIGRATIONS`, or PostgreSQL's).
        label: How the message names it.

    Raises:
        InternalError: A step is out of place.
    """
    for index, migration in enumerate(migrations):
        if migration.version != index + 1:
            raise InternalError(
                f"{label}[{index}] has version {migration.version}; expected {index + 1}"
            )


check_migrations(MIGRATIONS, "MIGRATIONS")
