"""SQLite persistence: plans, steps, step states, attempts, events, agents, statistics.

One `Store` owns one aiosqlite connection. Every public write is one
transaction (`BEGIN IMMEDIATE` ... `COMMIT`, rolled back on any error), and
transactions are serialised on the connection by an `anyio.Lock`, so a
concurrent task never sees or commits another's half-written transaction.
A transaction runs whole as one call on aiosqlite's worker thread (one
cross-thread round trip, not one per statement): see `Store._transact`.
The file is in WAL mode: readers never block the writer, and several `Store`s
(in one process or several) may share a file; the store keeps no state in
memory that another process could make stale.

An `executing` plan version carries a lease (`lease_owner`, `lease_until`):
the process that runs it, and until when its claim holds unless renewed
(`RunLease`, `claim_runs`, `renew_leases`, `release_leases`), and may carry a
cancel request from another process (`request_cancel`, which the owner sees
through `wait_cancel_requests`). Leaving `executing` releases the lease and
clears the request.

The schema is versioned by `PRAGMA user_version` and migrated on open by the
steps in `MIGRATIONS`. A file written by a newer taskorch is refused
(`SchemaTooNewError`); a file that is not a taskorch database, or is damaged,
is refused (`CorruptDatabaseError`) and never modified.

Timestamps are ISO-8601 text in UTC with microseconds, so they sort as text;
structured values are compact JSON. aiosqlite needs anyio's asyncio backend.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import secrets
import sqlite3
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TypeVar

import aiosqlite
import anyio

from executor.calls import ToolResult
from executor.errors import (
    ConfigError,
    CorruptDatabaseError,
    InternalError,
    NotFoundError,
    SchemaTooNewError,
    StoreError,
    TransitionError,
    UserError,
)
from executor.ids import PlanId
from executor.plan import Plan, PlanStatus, StepError, StepStatus, check_transition, utc_now
from executor.policy import AgentConfig
from executor.records import (
    AttemptRecord,
    Event,
    LastFailure,
    PlannerAttempt,
    ServerEvent,
    StepState,
    ToolCallStats,
    ToolStats,
)

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "ExpectedPlanStatus",
    "HostTask",
    "LeaseInfo",
    "Migration",
    "PlanStatusChange",
    "RunLease",
    "Store",
    "WriteBatch",
]

APPLICATION_ID: Final = 0x544B4F52
"""`PRAGMA application_id` of a taskorch database ("TKOR"), to tell it from other SQLite files."""

_SYNCHRONOUS_MODES: Final = ("OFF", "NORMAL", "FULL", "EXTRA")

_T = TypeVar("_T")


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
    Migration(5, "reserved", ()),
    Migration(6, "reserved", ()),
    Migration(7, "reserved", ()),
    Migration(8, "statistics: call times, attempts by start, server availability", _SCHEMA_8),
    Migration(9, "reserved", ()),
    Migration(10, "reserved", ()),
    Migration(11, "reserved", ()),
    Migration(12, "MCP tasks: downstream task ids, host tasks, kept keys", _SCHEMA_12),
)
"""The schema's history, oldest first; `MIGRATIONS[i].version == i + 1`."""

SCHEMA_VERSION: Final = len(MIGRATIONS)
"""The newest schema version this taskorch knows."""


@dataclass(frozen=True, slots=True)
class HostTask:
    """A task taskorch answered a host with (MCP Tasks): the run of a plan version."""

    task_id: str
    """The task's id (random, unguessable)."""
    owner: str
    """Who may read it (a hash of the caller's credential; empty for the local user)."""
    plan_id: str
    """The plan that runs."""
    version: int
    """Its version."""
    created_at: datetime
    """When the task was created."""


@dataclass(frozen=True, slots=True)
class RunLease:
    """Who runs a plan version, and for how long a renewal holds.

    A process takes an `executing` plan version by writing its owner id and an
    expiry (`lease_until`, now + `lease_s`) on the row; it renews the expiry while
    it runs, and another process may take the run over only once it has passed.
    """

    owner: str
    """The running process's (scheduler's) unique id."""
    lease_s: float
    """How long a claim or renewal holds, in seconds."""

    def __post_init__(self) -> None:
        """Refuse an empty owner or a lease that is not a positive number of seconds."""
        if not self.owner:
            raise InternalError("a run lease needs a non-empty owner id")
        if not (math.isfinite(self.lease_s) and self.lease_s > 0):
            raise InternalError(f"lease_s must be > 0 seconds, got {self.lease_s!r}")


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """The lease on one `executing` plan version, as stored."""

    plan_id: PlanId
    """The plan."""
    version: int
    """The plan version."""
    owner: str | None
    """Who holds it; `None` when nobody does (it may be claimed at once)."""
    until: datetime | None
    """When it expires unless renewed."""
    cancel_requested_at: datetime | None = None
    """When another process asked its owner to cancel the run, if one did."""


@dataclass(frozen=True, slots=True)
class PlanStatusChange:
    """A plan status change carried by a `WriteBatch`."""

    plan_id: str
    """The plan."""
    version: int
    """The plan version."""
    status: PlanStatus
    """The new status; checked against the stored one with `check_transition`."""
    started_at: datetime | None = None
    """Set when given (a run starts); a new start also clears the previous run's end."""
    finished_at: datetime | None = None
    """Set when given (a run ends)."""
    lease: RunLease | None = None
    """With `status` executing: the run is claimed for this owner. Any other status
    releases the lease, whoever held it."""


@dataclass(frozen=True, slots=True)
class ExpectedPlanStatus:
    """A condition on a `WriteBatch`: the plan version still has this status.

    A run sets it on every batch, so that once another process has changed the
    plan (cancelled it, say) the run's next write fails instead of carrying on.
    """

    plan_id: str
    """The plan."""
    version: int
    """The plan version."""
    status: PlanStatus
    """The status the plan must have for the batch to be written."""
    lease: RunLease | None = None
    """When given, the plan version's lease must be held by `lease.owner` too, and
    the write renews it (now + `lease.lease_s`)."""


@dataclass(slots=True)
class WriteBatch:
    """Everything in it is committed in one transaction, or nothing is."""

    step_states: list[StepState] = field(default_factory=list)
    """Upserted whole, keyed by (plan_id, version, step_id)."""
    attempts: list[AttemptRecord] = field(default_factory=list)
    """Upserted whole, keyed by (plan_id, version, step_id, attempt)."""
    events: list[Event] = field(default_factory=list)
    """Appended in order; the store assigns each its `seq` (global and increasing)."""
    durations: list[tuple[str, str, float]] = field(default_factory=list)
    """(server, tool, seconds) of successful calls, folded into `ToolStats`."""
    plan_status: PlanStatusChange | None = None
    """A plan status change, checked against the stored status inside the transaction."""
    expect: ExpectedPlanStatus | None = None
    """Checked first inside the transaction; when the stored status differs, nothing
    is written and `TransitionError` is raised. Not something to write on its own."""

    def __bool__(self) -> bool:
        """Whether there is anything to write."""
        return bool(
            self.step_states
            or self.attempts
            or self.events
            or self.durations
            or self.plan_status is not None
        )


# --- encoding ------------------------------------------------------------------------------


# ensure_ascii (the default) keeps lone surrogates, which a tool's JSON may carry,
# from failing the UTF-8 encoding sqlite3 applies to text. Encoders are made once:
# `json.dumps` with any option builds a new one per call, which costs microseconds.
_ENCODER: Final = json.JSONEncoder(separators=(",", ":"))
_STRICT_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def _dumps(value: Any) -> str:
    return _ENCODER.encode(value)


def _ts(value: datetime | None) -> str | None:
    """Encode a time as sortable ISO-8601 UTC text; a naive time is taken as UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    elif value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat(timespec="microseconds")


def _parse_ts(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _now() -> str:
    stamp = _ts(utc_now())
    assert stamp is not None
    return stamp


def _plan_row(plan: Plan, now: str) -> dict[str, Any]:
    content = plan.model_dump(mode="json", exclude={"steps", "status", "approved_hash"})
    return {
        "plan_id": plan.id,
        "version": plan.version,
        "query": plan.query,
        "strategy": plan.strategy,
        "agent": plan.agent,
        "session_id": plan.session_id,
        "deadline_s": plan.deadline_s,
        "status": plan.status.value,
        "approved_hash": plan.approved_hash,
        "plan_hash": plan.plan_hash,
        "considered_tools": _dumps(list(plan.considered_tools)),
        "content": _dumps(content),
        "created_at": _ts(plan.created_at),
        "updated_at": now,
    }


def _fast_json(value: Any) -> str | None:
    """`value` as compact JSON when it is plain JSON already, else `None`.

    On the hot path (every transition of every step) this skips pydantic's
    `model_dump(mode="json")`, which costs several times more. Anything plain JSON
    cannot say as pydantic would (bytes, datetimes, models, NaN or infinities) makes
    the caller fall back to pydantic, so what is stored is the same either way.
    """
    try:
        return _STRICT_ENCODER.encode(value)
    except (TypeError, ValueError):
        return None


def _error_json(error: StepError | None) -> str | None:
    if error is None:
        return None
    # Both fields are plain text (the kind a str enum): no fallback is needed.
    return _dumps({"kind": error.kind.value, "message": error.message})


def _output_json(state: StepState) -> str:
    if state.summary is not None and not state.summary.inline:
        return "null"  # kept once, in the result table
    fast = _fast_json(state.output)
    if fast is not None:
        return fast
    return _dumps(state.model_dump(mode="json", include={"output"})["output"])


def _state_row(state: StepState, now: str) -> tuple[Any, ...]:
    return (
        state.plan_id,
        state.version,
        state.step_id,
        state.status.value,
        state.attempts,
        _output_json(state),
        None,  # the result goes to step_results (`_result_rows`)
        _error_json(state.error),
        _ts(state.started_at),
        _ts(state.finished_at),
        now,
        None if state.summary is None else _dumps(state.summary.model_dump(mode="json")),
    )


_PART_MIN: Final = 1024
"""Strings of at least this many characters are stored apart, each distinct one once."""


@dataclass(frozen=True, slots=True)
class _ResultRows:
    key: tuple[str, int, str]
    skeleton: str
    parts: str
    blobs: list[str | bytes]


def _result_rows(state: StepState) -> _ResultRows | None:
    """Split a state's result into its skeleton and its long strings (`_SCHEMA_4`)."""
    if state.result is None:
        return None
    result = state.result
    # A copy of the containers only: the long strings are shared, not duplicated.
    value = copy.deepcopy(
        {
            "content": result.content,
            "structured_content": result.structured_content,
            "is_error": result.is_error,
        }
    )
    split = _split_long_strings(value)
    if split is None:
        # Not plain JSON (bytes, datetimes, models...): encode it as pydantic would.
        value = result.model_dump(mode="json")
        split = _split_long_strings(value)
        assert split is not None
    places, blobs = split
    return _ResultRows(
        key=(state.plan_id, state.version, state.step_id),
        skeleton=_dumps(value),
        parts=_dumps(places),
        blobs=blobs,
    )


def _split_long_strings(
    value: dict[str, Any],
) -> tuple[list[tuple[list[str | int], int]], list[str | bytes]] | None:
    """Empty every long string of `value` in place; `None` when it is not plain JSON.

    Returns:
        Where each string was (path, part number) and each distinct string, as the
        string itself (stored as TEXT: sqlite3 reads an ASCII string's own buffer, so
        a large part is not copied here first) or, when it holds lone surrogates
        that UTF-8 cannot say, as bytes (a BLOB, "surrogatepass").
    """
    places: list[tuple[list[str | int], int]] = []
    index: dict[str, int] = {}
    blobs: list[str | bytes] = []
    stack: list[tuple[Any, list[str | int]]] = [(value, [])]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            if not all(isinstance(k, str) for k in node):
                return None
            items: Iterable[tuple[Any, Any]] = node.items()
        else:
            items = enumerate(node)
        for key, item in items:
            if isinstance(item, str):
                if len(item) < _PART_MIN:
                    continue
                part = index.get(item)
                if part is None:
                    part = index[item] = len(blobs)
                    blobs.append(
                        item if _utf8_safe(item) else item.encode("utf-8", "surrogatepass")
                    )
                places.append(([*path, key], part))
                node[key] = ""
            elif isinstance(item, dict | list):
                stack.append((item, [*path, key]))
            elif not _plain_scalar(item):
                return None
    return places, blobs


_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def _utf8_safe(text: str) -> bool:
    """Whether UTF-8 can say `text` (no lone surrogates), checked without a copy."""
    return text.isascii() or _SURROGATE.search(text) is None


def _plain_scalar(item: Any) -> bool:
    if item is None or isinstance(item, bool | int):
        return True
    return isinstance(item, float) and math.isfinite(item)


_DELETE_RESULT: Final = "DELETE FROM step_results WHERE plan_id = ? AND version = ? AND step_id = ?"


def _write_result(conn: sqlite3.Connection, rows: _ResultRows) -> None:
    # The step's previous result (and its parts, by cascade) gives way to this one.
    conn.execute(_DELETE_RESULT, rows.key)
    conn.execute(
        "INSERT INTO step_results (plan_id, version, step_id, skeleton, parts)"
        " VALUES (?, ?, ?, ?, ?)",
        (*rows.key, rows.skeleton, rows.parts),
    )
    conn.executemany(
        "INSERT INTO result_parts (plan_id, version, step_id, part, data) VALUES (?, ?, ?, ?, ?)",
        ((*rows.key, i, blob) for i, blob in enumerate(rows.blobs)),
    )


def _read_result(conn: sqlite3.Connection, key: tuple[str, int, str]) -> ToolResult | None:
    """Rebuild a stored result (worker thread); `None` when the step has none."""
    where = " WHERE plan_id = ? AND version = ? AND step_id = ?"
    row = conn.execute("SELECT skeleton, parts FROM step_results" + where, key).fetchone()
    if row is None:
        # Rows written before results had their own table keep them with the state.
        old = conn.execute("SELECT result FROM step_states" + where, key).fetchone()
        if old is None or old[0] is None:
            return None
        return ToolResult.model_validate_json(old[0])
    value = json.loads(row[0])
    strings = {
        int(part): data if isinstance(data, str) else bytes(data).decode("utf-8", "surrogatepass")
        for part, data in conn.execute("SELECT part, data FROM result_parts" + where, key)
    }
    for path, part in json.loads(row[1]):
        node = value
        for key_ in path[:-1]:
            node = node[key_]
        node[path[-1]] = strings[part]
    return ToolResult.model_construct(
        content=value["content"],
        structured_content=value["structured_content"],
        is_error=value["is_error"],
    )


def _attempt_row(record: AttemptRecord) -> tuple[Any, ...]:
    return (
        record.plan_id,
        record.version,
        record.step_id,
        record.attempt,
        record.status.value,
        _ts(record.started_at),
        _ts(record.finished_at),
        _error_json(record.error),
        record.call_s,
        record.task_id,
    )


def _event_row(event: Event) -> tuple[Any, ...]:
    data = _fast_json(event.data)
    if data is None:
        data = _dumps(event.model_dump(mode="json", include={"data"})["data"])
    return (event.plan_id, event.kind.value, event.step_id, _ts(event.at), data)


def _duration_row(server: str, tool: str, seconds: float, now: str) -> tuple[Any, ...]:
    if not (isinstance(seconds, int | float) and math.isfinite(seconds) and seconds >= 0):
        raise InternalError(
            f"duration of {server}.{tool} must be a finite number of seconds >= 0, got {seconds!r}"
        )
    return (server, tool, float(seconds), now)


def _state_from_row(row: sqlite3.Row) -> StepState:
    return StepState.model_validate(
        {
            "plan_id": row["plan_id"],
            "version": row["version"],
            "step_id": row["step_id"],
            "status": row["status"],
            "attempts": row["attempts"],
            "output": json.loads(row["output"]),
            "result": None if row["result"] is None else json.loads(row["result"]),
            "summary": None if row["summary"] is None else json.loads(row["summary"]),
            "error": None if row["error"] is None else json.loads(row["error"]),
            "started_at": _parse_ts(row["started_at"]),
            "finished_at": _parse_ts(row["finished_at"]),
        }
    )


def _attempt_from_row(row: sqlite3.Row) -> AttemptRecord:
    return AttemptRecord.model_validate(
        {
            "plan_id": row["plan_id"],
            "version": row["version"],
            "step_id": row["step_id"],
            "attempt": row["attempt"],
            "status": row["status"],
            "started_at": _parse_ts(row["started_at"]),
            "finished_at": _parse_ts(row["finished_at"]),
            "error": None if row["error"] is None else json.loads(row["error"]),
            "call_s": row["call_s"],
            "task_id": row["task_id"],
        }
    )


def _event_from_row(row: sqlite3.Row) -> Event:
    return Event.model_validate(
        {
            "seq": row["seq"],
            "plan_id": row["plan_id"],
            "kind": row["kind"],
            "step_id": row["step_id"],
            "at": _parse_ts(row["at"]),
            "data": json.loads(row["data"]),
        }
    )


def _lease_from_row(row: sqlite3.Row) -> LeaseInfo:
    return LeaseInfo(
        plan_id=PlanId(row["plan_id"]),
        version=int(row["version"]),
        owner=row["lease_owner"],
        until=_parse_ts(row["lease_until"]),
        cancel_requested_at=_parse_ts(row["cancel_requested_at"]),
    )


def _plans_from_rows(rows: Sequence[sqlite3.Row]) -> list[Plan]:
    """Rebuild plans from rows of `_PLAN_SELECT`: one row per step, grouped by plan."""
    plans: list[Plan] = []
    key: tuple[str, int] | None = None
    head: sqlite3.Row | None = None
    steps: list[Any] = []

    def flush() -> None:
        if head is None:
            return
        content = json.loads(head["content"])
        content["steps"] = steps
        content["status"] = head["status"]
        content["approved_hash"] = head["approved_hash"]
        plans.append(Plan.model_validate(content))

    for row in rows:
        row_key = (row["plan_id"], row["version"])
        if row_key != key:
            flush()
            key, head, steps = row_key, row, []
        if row["step_content"] is not None:
            steps.append(json.loads(row["step_content"]))
    flush()
    return plans


# --- SQL -----------------------------------------------------------------------------------

_INSERT_PLAN: Final = """
INSERT INTO plans (plan_id, version, query, strategy, agent, session_id, deadline_s, status,
                   approved_hash, plan_hash, considered_tools, content, created_at, updated_at)
VALUES (:plan_id, :version, :query, :strategy, :agent, :session_id, :deadline_s, :status,
        :approved_hash, :plan_hash, :considered_tools, :content, :created_at, :updated_at)
ON CONFLICT (plan_id, version) DO NOTHING
"""

_INSERT_STEP: Final = """
INSERT INTO steps (plan_id, version, step_id, position, server, tool, content)
VALUES (?, ?, ?, ?, ?, ?, ?)
"""

_UPSERT_STATE: Final = """
INSERT INTO step_states (plan_id, version, step_id, status, attempts, output, result, error,
                         started_at, finished_at, updated_at, summary)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (plan_id, version, step_id) DO UPDATE SET
    status = excluded.status, attempts = excluded.attempts, output = excluded.output,
    result = excluded.result, error = excluded.error, started_at = excluded.started_at,
    finished_at = excluded.finished_at, updated_at = excluded.updated_at,
    summary = excluded.summary
"""

_UPSERT_ATTEMPT: Final = """
INSERT INTO attempts (plan_id, version, step_id, attempt, status, started_at, finished_at, error,
                      call_s, task_id)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (plan_id, version, step_id, attempt) DO UPDATE SET
    status = excluded.status, started_at = excluded.started_at,
    finished_at = excluded.finished_at, error = excluded.error, call_s = excluded.call_s,
    task_id = COALESCE(excluded.task_id, task_id)
"""

_INSERT_EVENT: Final = (
    "INSERT INTO events (plan_id, kind, step_id, at, data) VALUES (?, ?, ?, ?, ?)"
)

# Welford's update in one statement: in DO UPDATE every bare column is the row's old
# value, so `mean_s` and `count` below are the values before this duration. executemany
# applies rows one by one, so several durations of one tool in a batch fold correctly.
_FOLD_DURATION: Final = """
INSERT INTO tool_stats (server, tool, count, mean_s, m2, last_s, updated_at)
VALUES (?1, ?2, 1, ?3, 0.0, ?3, ?4)
ON CONFLICT (server, tool) DO UPDATE SET
    count = count + 1,
    mean_s = mean_s + (excluded.last_s - mean_s) / (count + 1),
    m2 = m2 + (excluded.last_s - mean_s)
              * (excluded.last_s - (mean_s + (excluded.last_s - mean_s) / (count + 1))),
    last_s = excluded.last_s,
    updated_at = excluded.updated_at
"""

# A new run start (started_at given) clears the previous run's end. Only an executing
# plan version has a lease: leaving `executing` releases it; entering it with an owner
# claims it. A cancel request is about the run in progress: any change ends it.
_UPDATE_STATUS: Final = """
UPDATE plans SET
    status = :status,
    approved_hash = COALESCE(:approved_hash, approved_hash),
    started_at = COALESCE(:started_at, started_at),
    finished_at = CASE WHEN :started_at IS NOT NULL THEN :finished_at
                       ELSE COALESCE(:finished_at, finished_at) END,
    lease_owner = CASE WHEN :status = 'executing' THEN COALESCE(:lease_owner, lease_owner) END,
    lease_until = CASE WHEN :status = 'executing' THEN COALESCE(:lease_until, lease_until) END,
    cancel_requested_at = NULL,
    updated_at = :now
WHERE plan_id = :plan_id AND version = :version
"""

# Renews the lease only while the run is still ours and still executing.
_RENEW_ONE: Final = """
UPDATE plans SET lease_until = :until
WHERE plan_id = :plan_id AND version = :version AND status = :status AND lease_owner = :owner
"""

_LATEST_VERSION: Final = (
    "p.version = (SELECT MAX(v.version) FROM plans AS v WHERE v.plan_id = p.plan_id)"
)

_PLAN_SELECT: Final = """
WITH chosen AS (
    SELECT p.rowid AS rid, p.plan_id, p.version, p.status, p.approved_hash, p.content,
           p.created_at
    FROM plans AS p
    WHERE {where}
    ORDER BY p.created_at DESC, p.rowid DESC
    LIMIT :limit
)
SELECT c.plan_id, c.version, c.status, c.approved_hash, c.content, s.content AS step_content
FROM chosen AS c
LEFT JOIN steps AS s ON s.plan_id = c.plan_id AND s.version = c.version
ORDER BY c.created_at DESC, c.rid DESC, s.position
"""


# --- statistics ----------------------------------------------------------------------------

_FAILURE_MESSAGE_CHARS: Final = 300

# CROSS JOIN keeps attempts the outer loop (read in table order, or by start time for
# a window, each step looked up by its key): the planner's default, steps by tool then
# attempts at random, is several times slower, even for one server's tools.
#
# The attempts of the chosen window with their tools, sorted by tool and duration: a
# tool's rows are consecutive, its attempts without a duration (those that did not
# succeed) first, so its k-th fastest successful call is at id first + (n_all - n_ok)
# + k - 1. A successful attempt's duration is its own call time; rows from before
# `call_s` existed fall back to the attempt's span. Failure details are kept for failed
# attempts only.
_DROP_TOOL_ATTEMPTS: Final = "DROP TABLE IF EXISTS temp.stats_tool_attempts"

_CREATE_TOOL_ATTEMPTS: Final = """
CREATE TEMP TABLE stats_tool_attempts (
    id INTEGER PRIMARY KEY,
    server TEXT NOT NULL,
    tool TEXT NOT NULL,
    status TEXT NOT NULL,
    retry INTEGER NOT NULL,
    dur REAL,
    kind TEXT,
    failed_at TEXT,
    plan_id TEXT,
    step_id TEXT,
    error TEXT
)
"""

_FILL_TOOL_ATTEMPTS: Final = """
INSERT INTO temp.stats_tool_attempts
    (server, tool, status, retry, dur, kind, failed_at, plan_id, step_id, error)
SELECT s.server, s.tool, a.status, a.attempt > 1,
       CASE WHEN a.status = 'succeeded' THEN COALESCE(
           a.call_s, (julianday(a.finished_at) - julianday(a.started_at)) * 86400.0)
       END AS dur,
       CASE WHEN a.status = 'failed' THEN json_extract(a.error, '$.kind') END,
       CASE WHEN a.status = 'failed' THEN a.finished_at END,
       CASE WHEN a.status = 'failed' THEN a.plan_id END,
       CASE WHEN a.status = 'failed' THEN a.step_id END,
       CASE WHEN a.status = 'failed' THEN a.error END
FROM attempts AS a
CROSS JOIN steps AS s
    ON s.plan_id = a.plan_id AND s.version = a.version AND s.step_id = a.step_id
WHERE {where}
ORDER BY s.server, s.tool, dur
"""

_TOOL_TOTALS: Final = """
SELECT server, tool, min(id) AS first, count(*) AS calls, count(dur) AS n_ok,
       sum(status = 'succeeded') AS succeeded, sum(status = 'failed') AS failed,
       sum(status = 'cancelled') AS cancelled, sum(status = 'interrupted') AS interrupted,
       sum(status = 'running') AS running, sum(retry) AS retries, max(dur) AS max_s
FROM temp.stats_tool_attempts
GROUP BY server, tool
ORDER BY server, tool
"""

_TOOL_FAILURE_KINDS: Final = """
SELECT server, tool, kind, count(*) AS n
FROM temp.stats_tool_attempts WHERE status = 'failed'
GROUP BY server, tool, kind
"""

_TOOL_LAST_FAILURES: Final = """
SELECT server, tool, failed_at, plan_id, step_id, error FROM (
    SELECT *, row_number() OVER (
        PARTITION BY server, tool ORDER BY failed_at DESC, plan_id, step_id
    ) AS rn
    FROM temp.stats_tool_attempts WHERE status = 'failed'
) WHERE rn = 1
"""

_DURATION_AT: Final = "SELECT dur FROM temp.stats_tool_attempts WHERE id = ?"


def _tool_stats_from_temp(conn: sqlite3.Connection) -> list[ToolCallStats]:
    """Build each tool's figures from the filled `stats_tool_attempts` (worker thread)."""
    kinds: dict[tuple[str, str], dict[str, int]] = {}
    for server, tool, kind, n in conn.execute(_TOOL_FAILURE_KINDS):
        kinds.setdefault((server, tool), {})[kind or "unknown"] = n
    last: dict[tuple[str, str], LastFailure] = {}
    for server, tool, failed_at, plan_id, step_id, error_text in conn.execute(_TOOL_LAST_FAILURES):
        error = json.loads(error_text) if error_text else {}
        last[(server, tool)] = LastFailure(
            at=_parse_ts(failed_at),
            kind=str(error.get("kind") or "unknown"),
            message=_cut(str(error.get("message") or ""), _FAILURE_MESSAGE_CHARS),
            plan_id=PlanId(plan_id),
            step_id=step_id,
        )

    def nth_fastest(first_ok: int, k: int) -> float | None:
        row = conn.execute(_DURATION_AT, (first_ok + k - 1,)).fetchone()
        return None if row is None else float(row[0])

    stats: list[ToolCallStats] = []
    for r in conn.execute(_TOOL_TOTALS).fetchall():
        key = (r["server"], r["tool"])
        succeeded, failed, n_ok = int(r["succeeded"]), int(r["failed"]), int(r["n_ok"])
        first_ok = int(r["first"]) + int(r["calls"]) - n_ok
        ended = succeeded + failed
        stats.append(
            ToolCallStats(
                server=r["server"],
                tool=r["tool"],
                calls=int(r["calls"]),
                succeeded=succeeded,
                failed=failed,
                cancelled=int(r["cancelled"]),
                interrupted=int(r["interrupted"]),
                running=int(r["running"]),
                retries=int(r["retries"]),
                failure_rate=failed / ended if ended else 0.0,
                failed_by_kind=dict(sorted(kinds.get(key, {}).items())),
                # Nearest rank: the p-th percentile is the ceil(p * n)-th fastest.
                p50_s=nth_fastest(first_ok, (n_ok + 1) // 2) if n_ok else None,
                p95_s=nth_fastest(first_ok, (95 * n_ok + 99) // 100) if n_ok else None,
                max_s=r["max_s"],
                last_failure=last.get(key),
            )
        )
    return stats


def _cut(text: str, limit: int) -> str:
    # The first line says what happened; what follows (a server's stderr) stays with
    # the step's error in the plan.
    flat = " ".join(text.strip().split("\n", 1)[0].split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


# --- errors --------------------------------------------------------------------------------

_CORRUPT_MARKERS: Final = ("file is not a database", "malformed", "disk image", "corrupt")


def _store_error(path: Path, exc: sqlite3.Error) -> StoreError:
    """Turn an sqlite3 error into a StoreError that names the file and says what to do."""
    message = str(exc) or type(exc).__name__
    lowered = message.lower()
    if any(marker in lowered for marker in _CORRUPT_MARKERS):
        return CorruptDatabaseError(
            f"{path} is not a taskorch database or is damaged (sqlite: {message}); "
            "it was left untouched: move it aside, or point taskorch at another file"
        )
    if "locked" in lowered or "busy" in lowered:
        hint = "another process held the database's write lock too long; try again"
    elif "readonly" in lowered or "read-only" in lowered:
        hint = "make the file and its directory writable"
    elif "unable to open" in lowered:
        hint = "check that the path is a file you may read and write, in a writable directory"
    elif "full" in lowered:
        hint = "free some disk space"
    elif "i/o" in lowered:
        hint = "check the file system the database is on"
    else:
        hint = "see the sqlite message"
    return StoreError(f"database {path}: {message} ({hint})")


_SQLITE_MIN_INT: Final = -(2**63)
_SQLITE_MAX_INT: Final = 2**63 - 1


def _overflow_error(exc: OverflowError) -> UserError:
    """A number too large for SQLite's 64-bit integers is the caller's to fix."""
    return UserError(
        f"a number in the request is too large for the database ({exc}): integers "
        f"must lie between {_SQLITE_MIN_INT} and {_SQLITE_MAX_INT}"
    )


# --- migrations ----------------------------------------------------------------------------


async def _probe(db: aiosqlite.Connection, path: Path) -> int:
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


async def _migrate(db: aiosqlite.Connection, path: Path) -> None:
    """Apply every pending migration in one transaction: all of them, or none."""
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
        with anyio.CancelScope(shield=True), suppress(sqlite3.Error):
            await db.rollback()
        raise


def _check_migrations() -> None:
    for index, migration in enumerate(MIGRATIONS):
        if migration.version != index + 1:
            raise InternalError(
                f"MIGRATIONS[{index}] has version {migration.version}; expected {index + 1}"
            )


# --- the store -----------------------------------------------------------------------------


class Store:
    """SQLite persistence for plans, runs, agents and statistics.

    Open one with `await Store.open(path)` (or `async with await Store.open(path)`),
    and close it when done.

    Attributes:
        path: The database file.
    """

    path: Path

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        """Wrap an open, migrated connection; use `Store.open` instead."""
        self.path = path
        self._db: aiosqlite.Connection | None = db
        # Uncontended, taking the lock does not yield: a commit is on the path from a
        # step's end to its dependents' start, and a yield there is one event-loop turn.
        self._lock = anyio.Lock(fast_acquire=True)
        self._cancels_asked = 0
        # Long reads (statistics) go through a connection of their own, opened on first
        # use: in WAL mode they then never hold up a run's commits on the main one.
        self._apart: aiosqlite.Connection | None = None
        self._apart_lock = anyio.Lock()

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "NORMAL",
        busy_timeout_s: float = 10.0,
    ) -> Store:
        """Open (creating if needed) and migrate the database at `path`.

        Args:
            path: The database file; missing parent directories are created.
            synchronous: SQLite's `synchronous` setting. `NORMAL` (the default) survives
                a crash of taskorch; `FULL` also survives a power loss, at a cost per commit.
            busy_timeout_s: How long to wait for another process's write lock.

        Raises:
            ConfigError: `synchronous` or `busy_timeout_s` is not valid.
            SchemaTooNewError: The file was written by a newer taskorch.
            CorruptDatabaseError: The file is not a taskorch database, or is damaged.
            StoreError: The file cannot be opened or written.
        """
        mode = synchronous.upper()
        if mode not in _SYNCHRONOUS_MODES:
            raise ConfigError(
                f"synchronous must be one of {', '.join(_SYNCHRONOUS_MODES)}, got {synchronous!r}"
            )
        if not (math.isfinite(busy_timeout_s) and busy_timeout_s >= 0):
            raise ConfigError(f"busy_timeout_s must be >= 0 seconds, got {busy_timeout_s!r}")
        file = await anyio.to_thread.run_sync(_prepare_path, path)
        try:
            # isolation_level=None: sqlite3 issues no implicit BEGIN/COMMIT; we do.
            db = await aiosqlite.connect(file, isolation_level=None, timeout=busy_timeout_s)
        except sqlite3.Error as exc:
            raise _store_error(file, exc) from exc
        try:
            db.row_factory = sqlite3.Row
            await _setup(db, file, mode)
        except BaseException as exc:
            with anyio.CancelScope(shield=True), suppress(sqlite3.Error):
                await db.close()
            if isinstance(exc, sqlite3.Error):
                raise _store_error(file, exc) from exc
            raise
        return cls(db, file)

    async def close(self) -> None:
        """Finish the transaction in progress, if any, and close the connection(s)."""
        async with self._apart_lock:
            apart, self._apart = self._apart, None
            if apart is not None:
                with anyio.CancelScope(shield=True):
                    await apart.close()
        async with self._lock:
            db, self._db = self._db, None
            if db is None:
                return
            with anyio.CancelScope(shield=True):
                with suppress(sqlite3.Error):
                    # Lets SQLite refresh the query planner's statistics where useful.
                    await db.execute("PRAGMA optimize")
                await db.close()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- plumbing ---

    def _require_db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError(f"the store for {self.path} is closed")
        return self._db

    async def _transact(self, body: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run `body` as one write transaction, serialised with every other use of the store.

        The whole transaction (BEGIN IMMEDIATE, `body`, COMMIT, or ROLLBACK on any
        error) is ONE call on aiosqlite's worker thread, not an await per statement:
        each await is a round trip between threads, and a commit is on the path from a
        step's end to its dependent's start. `body` therefore runs on that thread: it
        must only use the sqlite3 connection it is given and data it owns.

        The wait is shielded from cancellation: a write either commits or fails with an
        error, so a cancelled caller never leaves the shared connection mid-transaction
        nor wonders whether its commit happened.
        """
        async with self._lock:
            db = self._require_db()
            with anyio.CancelScope(shield=True):
                try:
                    result = await _on_worker_thread(db, _in_transaction, body)
                except sqlite3.Error as exc:
                    raise _store_error(self.path, exc) from exc
                except OverflowError as exc:
                    raise _overflow_error(exc) from exc
        return result

    async def _read_apart(self, body: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run `body` (reads, and temporary tables) on the read connection's worker thread.

        One call for the whole body; it may take a while (a sort over every attempt)
        without delaying the writes on the main connection.
        """
        async with self._apart_lock:
            self._require_db()
            try:
                if self._apart is None:
                    apart = await aiosqlite.connect(self.path, isolation_level=None)
                    apart.row_factory = sqlite3.Row
                    self._apart = apart
                return await _on_worker_thread(self._apart, _in_snapshot, body)
            except sqlite3.Error as exc:
                raise _store_error(self.path, exc) from exc

    async def _on_thread(self, body: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run `body` on the worker thread, outside a write transaction (reads only)."""
        async with self._lock:
            db = self._require_db()
            try:
                return await _on_worker_thread(db, _in_snapshot, body)
            except sqlite3.Error as exc:
                raise _store_error(self.path, exc) from exc

    async def _read(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Any]:
        async with self._lock:
            db = self._require_db()
            try:
                return list(await db.execute_fetchall(sql, params))
            except sqlite3.Error as exc:
                raise _store_error(self.path, exc) from exc
            except OverflowError as exc:
                raise _overflow_error(exc) from exc

    # --- plans ---

    async def save_plan(self, plan: Plan, *, events: Sequence[Event] = ()) -> None:
        """Insert a plan version, its steps and a PENDING state per step, atomically.

        Args:
            plan: The version to save; its content is immutable from now on.
            events: Appended in the same transaction (e.g. `plan_created`).

        Raises:
            UserError: This (id, version) is already stored, or two steps share an id.
        """
        ids = [s.id for s in plan.steps]
        duplicates = sorted(i for i, n in Counter(ids).items() if n > 1)
        if duplicates:
            raise UserError(
                f"plan {plan.id!r} has duplicate step ids {duplicates}: give each step its own id"
            )
        now = _now()
        plan_row = _plan_row(plan, now)
        step_rows = [
            (plan.id, plan.version, s.id, i, s.server, s.tool, _dumps(s.model_dump(mode="json")))
            for i, s in enumerate(plan.steps)
        ]
        state_rows = [
            _state_row(StepState(plan_id=plan.id, version=plan.version, step_id=s.id), now)
            for s in plan.steps
        ]
        event_rows = [_event_row(e) for e in events]

        def body(conn: sqlite3.Connection) -> None:
            if conn.execute(_INSERT_PLAN, plan_row).rowcount == 0:
                raise UserError(
                    f"plan {plan.id!r} version {plan.version} already exists: "
                    "save a new version instead"
                )
            if step_rows:
                conn.executemany(_INSERT_STEP, step_rows)
                conn.executemany(_UPSERT_STATE, state_rows)
            if event_rows:
                conn.executemany(_INSERT_EVENT, event_rows)

        await self._transact(body)

    async def get_plan(self, plan_id: str, version: int | None = None) -> Plan:
        """Return a plan version, the latest when `version` is None.

        Raises:
            NotFoundError: No such plan or version.
        """
        if version is None:
            where = f"p.plan_id = :plan_id AND {_LATEST_VERSION}"
        elif not _SQLITE_MIN_INT <= version <= _SQLITE_MAX_INT:
            raise await self._plan_not_found(plan_id, version)  # no row could hold it
        else:
            where = "p.plan_id = :plan_id AND p.version = :version"
        params = {"plan_id": plan_id, "version": version, "limit": 1}
        plans = _plans_from_rows(await self._read(_PLAN_SELECT.format(where=where), params))
        if not plans:
            raise await self._plan_not_found(plan_id, version)
        return plans[0]

    async def _plan_not_found(self, plan_id: str, version: int | None) -> NotFoundError:
        rows = await self._read(
            "SELECT version FROM plans WHERE plan_id = ? ORDER BY version", (plan_id,)
        )
        if not rows or version is None:
            return NotFoundError(f"no plan with id {plan_id!r}")
        known = ", ".join(str(r[0]) for r in rows)
        return NotFoundError(f"plan {plan_id!r} has no version {version}; its versions are {known}")

    async def list_plans(
        self,
        *,
        statuses: Collection[PlanStatus] | None = None,
        session_id: str | None = None,
        limit: int = 100,
    ) -> list[Plan]:
        """Return the latest version of each plan, newest first.

        Args:
            statuses: Keep only plans whose latest version has one of these statuses.
            session_id: Keep only plans of this session.
            limit: Most plans returned.

        Raises:
            UserError: `limit` is below 1.
        """
        if limit < 1:
            raise UserError(f"limit must be at least 1, got {limit}")
        clauses = [_LATEST_VERSION]
        params: dict[str, Any] = {"limit": limit}
        if statuses is not None:
            wanted = sorted({PlanStatus(s).value for s in statuses})
            if not wanted:
                return []
            names = [f":status{i}" for i in range(len(wanted))]
            clauses.append(f"p.status IN ({', '.join(names)})")
            params.update({n[1:]: s for n, s in zip(names, wanted, strict=True)})
        if session_id is not None:
            clauses.append("p.session_id = :session_id")
            params["session_id"] = session_id
        sql = _PLAN_SELECT.format(where=" AND ".join(clauses))
        return _plans_from_rows(await self._read(sql, params))

    async def plan_versions(self, plan_id: str) -> list[int]:
        """Return the stored versions of a plan, oldest first (empty when there is none)."""
        rows = await self._read(
            "SELECT version FROM plans WHERE plan_id = ? ORDER BY version", (plan_id,)
        )
        return [int(r[0]) for r in rows]

    async def update_plan_status(
        self,
        plan_id: str,
        version: int,
        status: PlanStatus,
        *,
        approved_hash: str | None = None,
        events: Sequence[Event] = (),
    ) -> Plan:
        """Change a plan version's status, checked against the stored one.

        Args:
            plan_id: The plan.
            version: The plan version.
            status: The new status.
            approved_hash: Recorded as the approved hash when given.
            events: Appended in the same transaction.

        Returns:
            The plan as stored afterwards.

        Raises:
            NotFoundError: No such plan version.
            TransitionError: The stored status may not change to `status`.
        """
        status = PlanStatus(status)
        event_rows = [_event_row(e) for e in events]
        params = {"plan_id": plan_id, "version": version, "limit": 1}
        select = _PLAN_SELECT.format(where="p.plan_id = :plan_id AND p.version = :version")
        now = _now()

        def body(conn: sqlite3.Connection) -> Plan:
            plans = _plans_from_rows(conn.execute(select, params).fetchall())
            if not plans:
                raise NotFoundError(f"no plan {plan_id!r} version {version}")
            check_transition(plans[0].status, status)
            conn.execute(
                _UPDATE_STATUS,
                {
                    "plan_id": plan_id,
                    "version": version,
                    "status": status.value,
                    "approved_hash": approved_hash,
                    "started_at": None,
                    "finished_at": None,
                    "lease_owner": None,
                    "lease_until": None,
                    "now": now,
                },
            )
            if event_rows:
                conn.executemany(_INSERT_EVENT, event_rows)
            return plans[0]

        stored = await self._transact(body)
        update: dict[str, Any] = {"status": status}
        if approved_hash is not None:
            update["approved_hash"] = approved_hash
        return stored.model_copy(update=update)

    async def add_host_task(
        self, task_id: str, owner: str, plan_id: str, version: int, created_at: datetime
    ) -> None:
        """Record that a host's task `task_id` is the run of a plan version, for `owner`.

        Raises:
            NotFoundError: No such plan version.
        """

        def body(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(
                    "INSERT INTO host_tasks (task_id, owner, plan_id, version, created_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (task_id, owner, plan_id, version, _ts(created_at)),
                )
            except sqlite3.IntegrityError as exc:
                raise NotFoundError(f"no plan {plan_id!r} version {version}") from exc

        await self._transact(body)

    async def get_host_task(self, task_id: str) -> HostTask | None:
        """The host task `task_id`, or `None` when there is none."""
        rows = await self._read("SELECT * FROM host_tasks WHERE task_id = ?", (task_id,))
        if not rows:
            return None
        row = rows[0]
        created = _parse_ts(row["created_at"])
        assert created is not None
        return HostTask(row["task_id"], row["owner"], row["plan_id"], row["version"], created)

    async def server_key(self, name: str, size: int = 32) -> bytes:
        """The secret kept under `name`, made (random, `size` bytes) on first use.

        Kept so that what it protects outlives a restart (the requestState sealing key).
        """

        def body(conn: sqlite3.Connection) -> bytes:
            conn.execute(
                "INSERT OR IGNORE INTO server_keys (name, secret, created_at) VALUES (?, ?, ?)",
                (name, secrets.token_bytes(size), _ts(utc_now())),
            )
            row = conn.execute("SELECT secret FROM server_keys WHERE name = ?", (name,)).fetchone()
            return bytes(row[0])

        return await self._transact(body)

    async def get_run_times(
        self, plan_id: str, version: int
    ) -> tuple[datetime | None, datetime | None]:
        """Return when the plan version's latest run started and finished.

        Raises:
            NotFoundError: No such plan version.
        """
        rows = await self._read(
            "SELECT started_at, finished_at FROM plans WHERE plan_id = ? AND version = ?",
            (plan_id, version),
        )
        if not rows:
            raise NotFoundError(f"no plan {plan_id!r} version {version}")
        return _parse_ts(rows[0]["started_at"]), _parse_ts(rows[0]["finished_at"])

    # --- run leases ---

    async def claim_runs(
        self,
        lease: RunLease,
        *,
        gone_owners: Collection[str] = (),
        runs: Collection[tuple[str, int]] | None = None,
    ) -> list[tuple[PlanId, int]]:
        """Take every `executing` plan version that nobody holds, in one atomic UPDATE.

        A version is taken when it has no owner (rows from before leases, or a run
        released on shutdown), when its lease has expired, or when its owner is in
        `gone_owners` (processes the caller knows are dead). Since the check and the
        write are one statement under the write lock, two processes claiming at once
        never both get a version.

        Args:
            lease: The claiming owner, and how long the claim holds.
            gone_owners: Owners whose leases may be taken before they expire.
            runs: Only these (plan_id, version) pairs; every executing one when `None`.

        Returns:
            The (plan_id, version) pairs now held by `lease.owner`, sorted.
        """
        now = _now()
        params: dict[str, Any] = {
            "owner": lease.owner,
            "until": _lease_until(now, lease.lease_s),
            "now": now,
            "executing": PlanStatus.EXECUTING.value,
        }
        names = [f":gone{i}" for i in range(len(gone_owners))]
        params.update({n[1:]: o for n, o in zip(names, gone_owners, strict=True)})
        gone = f" OR lease_owner IN ({', '.join(names)})" if names else ""
        sql = (
            "UPDATE plans SET lease_owner = :owner, lease_until = :until"
            " WHERE status = :executing AND (lease_owner IS NULL OR lease_until IS NULL"
            f" OR lease_until <= :now{gone})"
        )
        keys = None if runs is None else sorted({(str(p), int(v)) for p, v in runs})

        def body(conn: sqlite3.Connection) -> list[tuple[PlanId, int]]:
            if keys is None:
                rows = conn.execute(sql + " RETURNING plan_id, version", params).fetchall()
            else:
                one = sql + " AND plan_id = :plan_id AND version = :version"
                rows = [
                    (p, v)
                    for p, v in keys
                    if conn.execute(one, {**params, "plan_id": p, "version": v}).rowcount
                ]
            return sorted((PlanId(r[0]), int(r[1])) for r in rows)

        return await self._transact(body)

    async def renew_leases(
        self, lease: RunLease, runs: Collection[tuple[str, int]] | None = None
    ) -> set[tuple[PlanId, int]]:
        """Extend the leases `lease.owner` holds (all, or those of `runs`) to now + `lease.lease_s`.

        Returns:
            The (plan_id, version) pairs it still holds among those asked for: a run
            missing from them was taken over (or changed) by another process.
        """
        now = _now()
        params = {
            "owner": lease.owner,
            "until": _lease_until(now, lease.lease_s),
            "executing": PlanStatus.EXECUTING.value,
        }
        sql = (
            "UPDATE plans SET lease_until = :until"
            " WHERE status = :executing AND lease_owner = :owner"
        )
        keys = None if runs is None else sorted({(str(p), int(v)) for p, v in runs})

        def body(conn: sqlite3.Connection) -> set[tuple[PlanId, int]]:
            if keys is None:
                rows = conn.execute(sql + " RETURNING plan_id, version", params).fetchall()
            else:
                one = sql + " AND plan_id = :plan_id AND version = :version"
                rows = [
                    (p, v)
                    for p, v in keys
                    if conn.execute(one, {**params, "plan_id": p, "version": v}).rowcount
                ]
            return {(PlanId(r[0]), int(r[1])) for r in rows}

        return await self._transact(body)

    async def release_leases(
        self, owner: str, runs: Collection[tuple[str, int]] | None = None
    ) -> int:
        """Give up `owner`'s leases (all, or those of `runs`), so another may claim them now.

        Returns:
            How many were released.
        """
        keys = None if runs is None else list(runs)

        def body(conn: sqlite3.Connection) -> int:
            sql = "UPDATE plans SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ?"
            if keys is None:
                return conn.execute(sql, (owner,)).rowcount
            rows = [(owner, p, v) for p, v in keys]
            return conn.executemany(sql + " AND plan_id = ? AND version = ?", rows).rowcount

        return await self._transact(body)

    async def list_leases(self) -> list[LeaseInfo]:
        """Return the lease of every `executing` plan version, oldest plan first."""
        rows = await self._read(
            "SELECT plan_id, version, lease_owner, lease_until, cancel_requested_at"
            " FROM plans WHERE status = ? ORDER BY created_at, rowid",
            (PlanStatus.EXECUTING.value,),
        )
        return [_lease_from_row(r) for r in rows]

    async def get_lease(self, plan_id: str, version: int) -> LeaseInfo | None:
        """Return the lease of one plan version; `None` when it is not `executing`."""
        rows = await self._read(
            "SELECT plan_id, version, lease_owner, lease_until, cancel_requested_at"
            " FROM plans WHERE plan_id = ? AND version = ? AND status = ?",
            (plan_id, version, PlanStatus.EXECUTING.value),
        )
        return _lease_from_row(rows[0]) if rows else None

    # --- cancel requests ---

    async def request_cancel(self, plan_id: str, version: int) -> bool:
        """Ask the process that runs this plan version to cancel it.

        The request stays until the plan leaves `executing` (whoever changes it),
        so an owner that is slow to look, or a process that takes the run over,
        still finds it.

        Returns:
            Whether the plan version is executing (else there is nothing to ask).
        """
        now = _now()

        def body(conn: sqlite3.Connection) -> bool:
            return bool(
                conn.execute(
                    "UPDATE plans SET cancel_requested_at = COALESCE(cancel_requested_at, ?)"
                    " WHERE plan_id = ? AND version = ? AND status = ?",
                    (now, plan_id, version, PlanStatus.EXECUTING.value),
                ).rowcount
            )

        asked = await self._transact(body)
        # This connection's own commits do not change its data_version: count them.
        self._cancels_asked += 1
        return asked

    async def wait_cancel_requests(
        self, runs: Collection[tuple[str, int]], *, poll_s: float = 0.2
    ) -> set[tuple[PlanId, int]]:
        """Wait until one of `runs` has a cancel request; return every one of them that has.

        It looks at once, then again only when the database may have changed:
        SQLite cannot notify, so every `poll_s` it reads `PRAGMA data_version`
        (which changes when another connection commits, and touches no table).
        A store on a database server would LISTEN for a notification that
        `request_cancel` sends, and keep this signature.

        Args:
            runs: The (plan_id, version) pairs to watch (the runs of the caller).
            poll_s: How often to look whether the database changed.
        """
        wanted = {(str(p), int(v)) for p, v in runs}
        if not wanted:
            await anyio.sleep_forever()
        looked: tuple[int, int] | None = None
        while True:
            rows = await self._read("PRAGMA data_version")
            version = (int(rows[0][0]), self._cancels_asked)
            if version != looked:
                looked = version
                rows = await self._read(
                    "SELECT plan_id, version FROM plans"
                    " WHERE status = ? AND cancel_requested_at IS NOT NULL",
                    (PlanStatus.EXECUTING.value,),
                )
                found = {(PlanId(r[0]), int(r[1])) for r in rows if (r[0], int(r[1])) in wanted}
                if found:
                    return found
            await anyio.sleep(poll_s)

    # --- runs ---

    async def get_step_states(self, plan_id: str, version: int) -> dict[str, StepState]:
        """Return every step's state for a plan version, in step order (empty if unknown)."""
        rows = await self._read(
            "SELECT ss.* FROM step_states AS ss"
            " JOIN steps AS s USING (plan_id, version, step_id)"
            " WHERE ss.plan_id = ? AND ss.version = ? ORDER BY s.position",
            (plan_id, version),
        )
        return {row["step_id"]: _state_from_row(row) for row in rows}

    async def get_step_result(self, plan_id: str, version: int, step_id: str) -> ToolResult | None:
        """Return the whole MCP result a step's last finished attempt gave, or `None`."""
        key = (plan_id, version, step_id)

        def body(conn: sqlite3.Connection) -> ToolResult | None:
            return _read_result(conn, key)

        return await self._on_thread(body)

    async def write(self, batch: WriteBatch) -> None:
        """Commit everything in `batch` in one transaction.

        Raises:
            NotFoundError: The batch names a plan version or step that is not stored.
            TransitionError: The batch's plan status change is illegal; nothing is written.
        """
        await self._write(batch, want_seqs=False)

    async def write_returning_events(self, batch: WriteBatch) -> list[Event]:
        """Like `write`, and return the batch's events with the `seq` each was given."""
        return await self._write(batch, want_seqs=True)

    async def _write(self, batch: WriteBatch, *, want_seqs: bool) -> list[Event]:
        if not batch:
            return []
        # Encode before taking the lock: JSON work needs no connection.
        now = _now()
        state_rows = [_state_row(s, now) for s in batch.step_states]
        result_rows = [r for r in map(_result_rows, batch.step_states) if r is not None]
        # A step reset to pending (a re-run, a decision) keeps no result of its past.
        reset_keys = [
            (s.plan_id, s.version, s.step_id)
            for s in batch.step_states
            if s.status is StepStatus.PENDING
        ]
        attempt_rows = [_attempt_row(a) for a in batch.attempts]
        event_rows = [_event_row(e) for e in batch.events]
        duration_rows = [_duration_row(sv, tl, sec, now) for sv, tl, sec in batch.durations]
        expect, change = batch.expect, batch.plan_status

        def body(conn: sqlite3.Connection) -> int:
            last_seq = 0
            if expect is not None:
                _check_status(conn, expect, now)
            if change is not None:
                _change_status(conn, change, now)
            try:
                if state_rows:
                    conn.executemany(_UPSERT_STATE, state_rows)
                if reset_keys:
                    conn.executemany(_DELETE_RESULT, reset_keys)
                for rows in result_rows:
                    _write_result(conn, rows)
                if attempt_rows:
                    conn.executemany(_UPSERT_ATTEMPT, attempt_rows)
            except sqlite3.IntegrityError as exc:
                raise _unknown_steps_error(batch, exc) from exc
            if event_rows:
                conn.executemany(_INSERT_EVENT, event_rows)
                if want_seqs:
                    # The write lock is ours, so the batch's seqs are the last len(rows).
                    last_seq = int(conn.execute("SELECT last_insert_rowid()").fetchone()[0])
            if duration_rows:
                conn.executemany(_FOLD_DURATION, duration_rows)
            return last_seq

        last_seq = await self._transact(body)
        if not want_seqs:
            return []
        first = last_seq - len(event_rows) + 1
        return [e.model_copy(update={"seq": first + i}) for i, e in enumerate(batch.events)]

    async def get_attempts(
        self, plan_id: str, version: int, step_id: str | None = None
    ) -> list[AttemptRecord]:
        """Return the attempts of a plan version (or of one step), by step then attempt."""
        sql = "SELECT * FROM attempts WHERE plan_id = ? AND version = ?"
        params: tuple[Any, ...] = (plan_id, version)
        if step_id is not None:
            sql += " AND step_id = ?"
            params += (step_id,)
        rows = await self._read(sql + " ORDER BY step_id, attempt", params)
        return [_attempt_from_row(r) for r in rows]

    async def get_events(
        self, plan_id: str, *, after_seq: int = 0, limit: int = 1000
    ) -> list[Event]:
        """Return a plan's events with `seq` above `after_seq`, oldest first.

        Page through the log by passing the last `seq` seen as `after_seq`.
        """
        if limit < 1:
            raise UserError(f"limit must be at least 1, got {limit}")
        rows = await self._read(
            "SELECT * FROM events WHERE plan_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (plan_id, after_seq, limit),
        )
        return [_event_from_row(r) for r in rows]

    async def last_event_seq(self, plan_id: str | None = None) -> int:
        """Return the newest event's `seq` (of one plan, or of all), 0 when there is none."""
        if plan_id is None:
            rows = await self._read("SELECT COALESCE(MAX(seq), 0) FROM events")
        else:
            rows = await self._read(
                "SELECT COALESCE(MAX(seq), 0) FROM events WHERE plan_id = ?", (plan_id,)
            )
        return int(rows[0][0])

    async def tool_stats(self) -> dict[tuple[str, str], ToolStats]:
        """Return the duration statistics of every tool measured so far."""
        rows = await self._read("SELECT * FROM tool_stats ORDER BY server, tool")
        return {
            (r["server"], r["tool"]): ToolStats(
                server=r["server"],
                tool=r["tool"],
                count=r["count"],
                mean_s=r["mean_s"],
                m2=r["m2"],
                last_s=r["last_s"],
            )
            for r in rows
        }

    # --- agents ---

    async def save_agent(self, agent: AgentConfig) -> None:
        """Insert or replace the agent with this name."""
        now = _now()
        row = (agent.name, _dumps(agent.model_dump(mode="json")), now, now)

        def body(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO agents (name, content, created_at, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET content = excluded.content,"
                " updated_at = excluded.updated_at",
                row,
            )

        await self._transact(body)

    async def get_agent(self, name: str) -> AgentConfig:
        """Return the agent with this name.

        Raises:
            NotFoundError: No agent by that name.
        """
        rows = await self._read("SELECT content FROM agents WHERE name = ?", (name,))
        if rows:
            return AgentConfig.model_validate_json(rows[0]["content"])
        names = [r[0] for r in await self._read("SELECT name FROM agents ORDER BY name")]
        known = ", ".join(repr(n) for n in names) if names else "none"
        raise NotFoundError(f"no agent named {name!r}; known agents: {known}")

    async def list_agents(self) -> list[AgentConfig]:
        """Return every agent, by name."""
        rows = await self._read("SELECT content FROM agents ORDER BY name")
        return [AgentConfig.model_validate_json(r["content"]) for r in rows]

    # --- planner accounting ---

    async def record_planner_attempt(self, attempt: PlannerAttempt) -> None:
        """Append one planning-model call."""
        row = (
            attempt.plan_id,
            attempt.attempt,
            attempt.model,
            attempt.prompt_tokens,
            attempt.completion_tokens,
            attempt.latency_s,
            _dumps(list(attempt.errors)),
            _ts(attempt.at),
        )

        def body(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO planner_attempts (plan_id, attempt, model, prompt_tokens,"
                " completion_tokens, latency_s, errors, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )

        await self._transact(body)

    async def get_planner_attempts(self, plan_id: str) -> list[PlannerAttempt]:
        """Return the planning-model calls recorded for a plan, oldest first."""
        rows = await self._read(
            "SELECT * FROM planner_attempts WHERE plan_id = ? ORDER BY id", (plan_id,)
        )
        return [
            PlannerAttempt(
                plan_id=PlanId(r["plan_id"]),
                attempt=r["attempt"],
                model=r["model"],
                prompt_tokens=r["prompt_tokens"],
                completion_tokens=r["completion_tokens"],
                latency_s=r["latency_s"],
                errors=tuple(json.loads(r["errors"])),
                at=_parse_ts(r["at"]) or utc_now(),
            )
            for r in rows
        ]

    # --- statistics ---

    async def record_server_event(self, event: ServerEvent) -> None:
        """Append one change in a downstream server's availability (see `ServerEvent`)."""
        row = (
            event.owner,
            event.server,
            event.kind.value,
            _ts(event.at),
            int(event.restart),
            event.reason,
        )

        def body(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO server_events (owner, server, kind, at, restart, reason)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                row,
            )

        await self._transact(body)

    async def get_server_events(
        self, *, server: str | None = None, since: datetime | None = None
    ) -> list[ServerEvent]:
        """Return server availability events, by server and time.

        Args:
            server: Only this server's.
            since: Only events from then on, plus each owner's last event of each
                server before it (which says whether the server was down at `since`).
        """
        params: dict[str, Any] = {"server": server, "since": _ts(since)}
        where = "(:server IS NULL OR server = :server)"
        if since is not None:
            where += (
                " AND (at >= :since OR id IN (SELECT max(id) FROM server_events"
                " WHERE at < :since GROUP BY owner, server))"
            )
        rows = await self._read(
            f"SELECT * FROM server_events WHERE {where} ORDER BY server, at, id", params
        )
        return [
            ServerEvent(
                owner=r["owner"],
                server=r["server"],
                kind=r["kind"],
                at=_parse_ts(r["at"]) or utc_now(),
                restart=bool(r["restart"]),
                reason=r["reason"],
            )
            for r in rows
        ]

    async def tool_call_stats(
        self,
        *,
        server: str | None = None,
        tool: str | None = None,
        since: datetime | None = None,
    ) -> list[ToolCallStats]:
        """Return what every tool's attempts add up to, by server and tool.

        Counts by status, retries, failures by error kind and the last failure, and
        the p50 / p95 / max of successful calls (nearest rank). One pass over the
        attempts and one sort, in SQL: the attempts of the window are copied, sorted
        by tool and duration, into a temporary table, so that a percentile is a row
        looked up by its position.

        Args:
            server: Only this server's tools.
            tool: Only tools of this name.
            since: Only attempts started at or after this time.
        """
        clauses = ["1"]
        params: dict[str, Any] = {}
        if since is not None:
            clauses.append("a.started_at >= :since")
            params["since"] = _ts(since)
        if server is not None:
            clauses.append("s.server = :server")
            params["server"] = server
        if tool is not None:
            clauses.append("s.tool = :tool")
            params["tool"] = tool
        fill = _FILL_TOOL_ATTEMPTS.format(where=" AND ".join(clauses))

        def body(conn: sqlite3.Connection) -> list[ToolCallStats]:
            conn.execute(_DROP_TOOL_ATTEMPTS)
            conn.execute(_CREATE_TOOL_ATTEMPTS)
            try:
                conn.execute(fill, params)
                return _tool_stats_from_temp(conn)
            finally:
                conn.execute(_DROP_TOOL_ATTEMPTS)

        return await self._read_apart(body)


def _prepare_path(path: str | os.PathLike[str]) -> Path:
    """Refuse a directory and create the missing parents of the database file."""
    file = Path(path).expanduser()
    if file.is_dir():
        raise StoreError(f"database {file} is a directory: give the path of a file")
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(
            f"cannot create the directory {file.parent} for the database {file}: {exc}"
        ) from exc
    return file


async def _setup(db: aiosqlite.Connection, path: Path, synchronous: str) -> None:
    """Configure a fresh connection and bring the schema up to date.

    Nothing is written before `_probe` has accepted the file.
    """
    await db.execute("PRAGMA foreign_keys = ON")
    version = await _probe(db, path)
    rows = list(await db.execute_fetchall("PRAGMA journal_mode = WAL"))
    if str(rows[0][0]).lower() != "wal":
        raise StoreError(
            f"database {path}: cannot switch to WAL journaling (got {rows[0][0]!r}); "
            "put the database on a local file system"
        )
    # Checked against _SYNCHRONOUS_MODES by the caller; PRAGMA takes no parameters.
    await db.execute(f"PRAGMA synchronous = {synchronous}")
    if version < SCHEMA_VERSION:
        await _migrate(db, path)


# aiosqlite private API, pinned (aiosqlite 0.22): `Connection._execute(fn, *args)` runs
# `fn(*args)` on the connection's worker thread and returns its result (or raises its
# exception); `Connection._conn` is the sqlite3 connection that thread owns. Nothing
# public runs several statements in one round trip. If aiosqlite renames either,
# tests/executor/test_store.py::test_the_private_aiosqlite_api_the_store_uses_exists fails.
async def _on_worker_thread(
    db: aiosqlite.Connection,
    fn: Callable[[sqlite3.Connection, Callable[[sqlite3.Connection], _T]], _T],
    body: Callable[[sqlite3.Connection], _T],
) -> _T:
    conn: sqlite3.Connection = db._conn
    result: _T = await db._execute(fn, conn, body)  # type: ignore[no-untyped-call]
    return result


def _in_transaction(conn: sqlite3.Connection, body: Callable[[sqlite3.Connection], _T]) -> _T:
    """BEGIN IMMEDIATE, `body`, COMMIT; on any error ROLLBACK and re-raise (worker thread)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = body(conn)
        conn.execute("COMMIT")
    except BaseException:
        # Guarded: COMMIT may fail after SQLite has already ended the transaction.
        if conn.in_transaction:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise
    return result


def _in_snapshot(conn: sqlite3.Connection, body: Callable[[sqlite3.Connection], _T]) -> _T:
    """`body` in a read transaction, so its statements see one state (worker thread)."""
    conn.execute("BEGIN")
    try:
        return body(conn)
    finally:
        with suppress(sqlite3.Error):
            conn.execute("COMMIT")


def _lease_until(now: str, lease_s: float) -> str:
    until = _ts(datetime.fromisoformat(now) + timedelta(seconds=lease_s))
    assert until is not None
    return until


def _change_status(conn: sqlite3.Connection, change: PlanStatusChange, now: str) -> None:
    row = conn.execute(
        "SELECT status FROM plans WHERE plan_id = ? AND version = ?",
        (change.plan_id, change.version),
    ).fetchone()
    if row is None:
        raise NotFoundError(f"no plan {change.plan_id!r} version {change.version}")
    check_transition(PlanStatus(row[0]), PlanStatus(change.status))
    lease = change.lease
    conn.execute(
        _UPDATE_STATUS,
        {
            "plan_id": change.plan_id,
            "version": change.version,
            "status": PlanStatus(change.status).value,
            "approved_hash": None,
            "started_at": _ts(change.started_at),
            "finished_at": _ts(change.finished_at),
            "lease_owner": None if lease is None else lease.owner,
            "lease_until": None if lease is None else _lease_until(now, lease.lease_s),
            "now": now,
        },
    )


def _check_status(conn: sqlite3.Connection, expect: ExpectedPlanStatus, now: str) -> None:
    status = PlanStatus(expect.status).value
    lease = expect.lease
    if lease is not None:
        # The common case in one statement: still ours and still in this status.
        renewed = conn.execute(
            _RENEW_ONE,
            {
                "plan_id": expect.plan_id,
                "version": expect.version,
                "status": status,
                "owner": lease.owner,
                "until": _lease_until(now, lease.lease_s),
            },
        )
        if renewed.rowcount == 1:
            return
    row = conn.execute(
        "SELECT status, lease_owner FROM plans WHERE plan_id = ? AND version = ?",
        (expect.plan_id, expect.version),
    ).fetchone()
    if row is None:
        raise NotFoundError(f"no plan {expect.plan_id!r} version {expect.version}")
    if row[0] != status:
        raise TransitionError(
            f"plan {expect.plan_id!r} version {expect.version} is {row[0]}, not "
            f"{status}: another process changed it; nothing was written"
        )
    if lease is not None:
        holder = "nobody" if row[1] is None else f"owner {row[1]!r}"
        raise TransitionError(
            f"plan {expect.plan_id!r} version {expect.version} is no longer run by this "
            f"process (its lease now belongs to {holder}): another process took it over "
            "after this one's lease expired; nothing was written"
        )


def _unknown_steps_error(batch: WriteBatch, exc: sqlite3.IntegrityError) -> NotFoundError:
    named = sorted(
        {(s.plan_id, s.version, s.step_id) for s in batch.step_states}
        | {(a.plan_id, a.version, a.step_id) for a in batch.attempts}
    )
    shown = ", ".join(f"{p}@{v}/{s}" for p, v, s in named[:10])
    more = f" and {len(named) - 10} more" if len(named) > 10 else ""
    return NotFoundError(
        f"a write names a plan version or step that is not stored (sqlite: {exc}); "
        f"the batch names {shown}{more}: save the plan before writing its states"
    )


_check_migrations()
