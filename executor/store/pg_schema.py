"""The PostgreSQL store's schema: its tables, versioned migrations, and the check of a database.

The tables live in the connection's current schema (the first of its
`search_path`; `public` by default). The version is kept in the one row of
`taskorch_schema`, and pending migrations run in one transaction under an
advisory lock, so replicas starting together migrate once. A database written
by a newer taskorch is refused naming both versions (`SchemaTooNewError`); a
schema that holds other tables but no `taskorch_schema` is refused and left
untouched (`CorruptDatabaseError`).

The history is PostgreSQL's own: its version 1 holds what SQLite's versions 1
to 9 built (statistics included), its version 2 SQLite's 12 (MCP tasks). A
later change to the SQLite schema needs its counterpart here.
"""

from __future__ import annotations

from typing import Any, Final

from psycopg import AsyncConnection

from executor.errors import CorruptDatabaseError, SchemaTooNewError, StoreError
from executor.store.schema import Migration, check_migrations

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "prepare"]

_MIGRATION_LOCK: Final = 0x544B4F52_0001
"""The advisory lock held while migrating ("TKOR", 1): one replica migrates at a time."""

# Time columns are timestamptz; JSON is kept as text (compact, as SQLite keeps it): it is
# written and read whole, never queried inside. `id` columns give rows the insertion order
# SQLite's rowid gives (the tie-break of plans created in the same microsecond).
_SCHEMA_1: Final = (
    "CREATE TABLE taskorch_schema (one boolean PRIMARY KEY DEFAULT true CHECK (one),"
    " version integer NOT NULL)",
    """
    CREATE TABLE plans (
        id bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
        plan_id text NOT NULL,
        version integer NOT NULL CHECK (version >= 1),
        query text NOT NULL,
        strategy text NOT NULL,
        agent text,
        session_id text,
        deadline_s double precision,
        status text NOT NULL,
        approved_hash text,
        plan_hash text NOT NULL,
        considered_tools text NOT NULL,
        content text NOT NULL,
        created_at timestamptz NOT NULL,
        started_at timestamptz,
        finished_at timestamptz,
        updated_at timestamptz NOT NULL,
        lease_owner text,
        lease_until timestamptz,
        cancel_requested_at timestamptz,
        PRIMARY KEY (plan_id, version)
    )
    """,
    "CREATE INDEX plans_by_created ON plans (created_at, id)",
    "CREATE INDEX plans_by_status ON plans (status, created_at)",
    "CREATE INDEX plans_by_session ON plans (session_id, created_at)",
    """
    CREATE TABLE steps (
        plan_id text NOT NULL,
        version integer NOT NULL,
        step_id text NOT NULL,
        position integer NOT NULL,
        server text NOT NULL,
        tool text NOT NULL,
        content text NOT NULL,
        PRIMARY KEY (plan_id, version, step_id),
        UNIQUE (plan_id, version, position),
        FOREIGN KEY (plan_id, version) REFERENCES plans (plan_id, version) ON DELETE CASCADE
    )
    """,
    "CREATE INDEX steps_by_tool ON steps (server, tool)",
    """
    CREATE TABLE step_states (
        plan_id text NOT NULL,
        version integer NOT NULL,
        step_id text NOT NULL,
        status text NOT NULL,
        attempts integer NOT NULL,
        output text NOT NULL,
        result text,
        error text,
        started_at timestamptz,
        finished_at timestamptz,
        updated_at timestamptz NOT NULL,
        summary text,
        skip_reason text,
        PRIMARY KEY (plan_id, version, step_id),
        FOREIGN KEY (plan_id, version, step_id)
            REFERENCES steps (plan_id, version, step_id) ON DELETE CASCADE
    )
    """,
    """
    CREATE TABLE attempts (
        plan_id text NOT NULL,
        version integer NOT NULL,
        step_id text NOT NULL,
        attempt integer NOT NULL CHECK (attempt >= 1),
        status text NOT NULL,
        started_at timestamptz NOT NULL,
        finished_at timestamptz,
        error text,
        call_s double precision,
        PRIMARY KEY (plan_id, version, step_id, attempt),
        FOREIGN KEY (plan_id, version, step_id)
            REFERENCES steps (plan_id, version, step_id) ON DELETE CASCADE
    )
    """,
    "CREATE INDEX attempts_by_started ON attempts (started_at)",
    # What the pool saw of each server's availability (restarts, time down).
    """
    CREATE TABLE server_events (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        owner text NOT NULL,
        server text NOT NULL,
        kind text NOT NULL,
        at timestamptz NOT NULL,
        restart boolean NOT NULL DEFAULT false,
        reason text
    )
    """,
    "CREATE INDEX server_events_by_server ON server_events (server, at)",
    # An identity is never reused, so a reader paging with `after_seq` never sees a seq
    # twice; the store writes one plan's events under a lock per plan, so their seqs
    # also grow in commit order and a reader never misses one (see `PostgresStore`).
    """
    CREATE TABLE events (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        plan_id text NOT NULL,
        kind text NOT NULL,
        step_id text,
        at timestamptz NOT NULL,
        data text NOT NULL
    )
    """,
    "CREATE INDEX events_by_plan ON events (plan_id, seq)",
    """
    CREATE TABLE agents (
        name text PRIMARY KEY,
        content text NOT NULL,
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL
    )
    """,
    """
    CREATE TABLE tool_stats (
        server text NOT NULL,
        tool text NOT NULL,
        count bigint NOT NULL,
        mean_s double precision NOT NULL,
        m2 double precision NOT NULL,
        last_s double precision NOT NULL,
        updated_at timestamptz NOT NULL,
        PRIMARY KEY (server, tool)
    )
    """,
    """
    CREATE TABLE planner_attempts (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        plan_id text,
        attempt integer NOT NULL,
        model text NOT NULL,
        prompt_tokens bigint,
        completion_tokens bigint,
        latency_s double precision NOT NULL,
        errors text NOT NULL,
        at timestamptz NOT NULL
    )
    """,
    "CREATE INDEX planner_attempts_by_plan ON planner_attempts (plan_id, id)",
    # A step's result, stored once (see `executor.store.results`): each distinct long
    # string is a row of `result_parts`, as UTF-8 bytes ("surrogatepass": a tool's text
    # may hold lone surrogates, and PostgreSQL's text may hold neither those nor NUL).
    """
    CREATE TABLE step_results (
        plan_id text NOT NULL,
        version integer NOT NULL,
        step_id text NOT NULL,
        skeleton text NOT NULL,
        parts text NOT NULL,
        PRIMARY KEY (plan_id, version, step_id),
        FOREIGN KEY (plan_id, version, step_id)
            REFERENCES steps (plan_id, version, step_id) ON DELETE CASCADE
    )
    """,
    """
    CREATE TABLE result_parts (
        plan_id text NOT NULL,
        version integer NOT NULL,
        step_id text NOT NULL,
        part integer NOT NULL,
        data bytea NOT NULL,
        PRIMARY KEY (plan_id, version, step_id, part),
        FOREIGN KEY (plan_id, version, step_id)
            REFERENCES step_results (plan_id, version, step_id) ON DELETE CASCADE
    )
    """,
)

# A batch's conditions are statements that fail (SQLSTATE TK001, naming the condition)
# when they do not hold, so that a whole batch is sent at once: nothing after a failed
# condition is done, and the transaction is rolled back.
_SCHEMA_1_REQUIRE: Final = """
    CREATE FUNCTION taskorch_require(ok boolean, what text) RETURNS boolean
    LANGUAGE plpgsql AS $$
    BEGIN
        IF NOT ok THEN
            RAISE EXCEPTION 'taskorch: % does not hold', what USING ERRCODE = 'TK001';
        END IF;
        RETURN true;
    END
    $$
"""

# MCP Tasks (SQLite's migration 12): the downstream task an attempt became (a replica
# taking the run over follows it instead of calling again); the tasks taskorch answered
# hosts with (any replica answers for them); and keys kept across restarts, the same for
# every replica (the requestState sealing key).
_SCHEMA_2: Final = (
    "ALTER TABLE attempts ADD COLUMN task_id text",
    """
    CREATE TABLE host_tasks (
        task_id text PRIMARY KEY,
        owner text NOT NULL,
        plan_id text NOT NULL,
        version integer NOT NULL,
        created_at timestamptz NOT NULL,
        FOREIGN KEY (plan_id, version) REFERENCES plans (plan_id, version) ON DELETE CASCADE
    )
    """,
    "CREATE INDEX host_tasks_by_plan ON host_tasks (plan_id, version)",
    """
    CREATE TABLE server_keys (
        name text PRIMARY KEY,
        secret bytea NOT NULL,
        created_at timestamptz NOT NULL
    )
    """,
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "initial schema: plans, runs and their leases, results, agents, stats",
        (*_SCHEMA_1, _SCHEMA_1_REQUIRE),
    ),
    Migration(2, "MCP tasks: downstream task ids, host tasks, kept keys", _SCHEMA_2),
)
"""The PostgreSQL schema's history, oldest first; `MIGRATIONS[i].version == i + 1`."""

SCHEMA_VERSION: Final = len(MIGRATIONS)
"""The newest PostgreSQL schema version this taskorch knows."""

_PROBE: Final = """
SELECT current_schema() AS schema,
       (SELECT count(*) FROM pg_catalog.pg_class AS c
        JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm', 'f'))
           AS tables,
       to_regclass(quote_ident(current_schema()) || '.taskorch_schema') IS NOT NULL AS ours
"""


async def _version(conn: AsyncConnection[Any], where: str) -> int:
    """The schema version of the database; 0 for an empty schema. Writes nothing."""
    cur = await conn.execute(_PROBE)
    row = await cur.fetchone()
    assert row is not None
    schema, tables, ours = row
    if schema is None:
        raise StoreError(
            f"database {where}: its search_path names no schema that exists; create the "
            "schema, or fix the search_path (options=-csearch_path=... in the URL)"
        )
    if not ours:
        if tables:
            raise CorruptDatabaseError(
                f"database {where}: schema {schema!r} holds {tables} table(s) but is not a "
                "taskorch database; it was left untouched: point taskorch at an empty "
                "database, or at a schema of its own (options=-csearch_path=... in the URL)"
            )
        return 0
    cur = await conn.execute("SELECT version FROM taskorch_schema")
    found = await cur.fetchone()
    version = int(found[0]) if found is not None else 0
    if version > SCHEMA_VERSION:
        raise SchemaTooNewError(
            f"database {where} has schema version {version}, written by a newer taskorch; "
            f"this taskorch supports PostgreSQL schema versions up to {SCHEMA_VERSION}: "
            "upgrade taskorch (or point it at another database)"
        )
    return version


async def prepare(conn: AsyncConnection[Any], where: str) -> None:
    """Check the database and apply every pending migration, in one transaction.

    Args:
        conn: A connection in autocommit mode, outside a transaction.
        where: The database, as messages name it (the URL without its password).

    Raises:
        SchemaTooNewError: The database was written by a newer taskorch.
        CorruptDatabaseError: The schema holds tables that are not taskorch's.
        StoreError: The search_path names no schema.
        psycopg.Error: What the server refused (no right to create tables, say).
    """
    if await _version(conn, where) >= SCHEMA_VERSION:
        return
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        # Read again under the lock: another replica may have migrated meanwhile.
        current = await _version(conn, where)
        for migration in MIGRATIONS[current:]:
            for statement in migration.statements:
                await conn.execute(statement.encode())
        await conn.execute(
            "INSERT INTO taskorch_schema (one, version) VALUES (true, %s)"
            " ON CONFLICT (one) DO UPDATE SET version = excluded.version",
            (SCHEMA_VERSION,),
        )


check_migrations(MIGRATIONS, "PostgreSQL MIGRATIONS")
