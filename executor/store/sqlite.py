"""`SqliteStore`: the `Store` on one SQLite file, the embedded default.

One `SqliteStore` owns one aiosqlite connection. Every public write is one
transaction (`BEGIN IMMEDIATE` ... `COMMIT`, rolled back on any error), run
whole on aiosqlite's worker thread; transactions are serialised on the
connection by an `anyio.Lock`, so a concurrent task never sees or commits
another's half-written transaction. SQLite cannot notify: a cancel request
from another process is seen by polling `PRAGMA data_version`.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager, suppress
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TypeVar

import aiosqlite
import anyio

from executor.calls import ToolResult
from executor.errors import NotFoundError, StoreError, TransitionError, UserError
from executor.ids import PlanId
from executor.plan import Plan, utc_now
from executor.policy import AgentConfig
from executor.records import (
    AttemptRecord,
    Event,
    PlannerAttempt,
    ServerEvent,
    StepState,
    ToolCallStats,
    ToolStats,
)
from executor.status import PlanStatus, StepStatus, check_transition
from executor.store import codecs, statistics
from executor.store.base import (
    EventFeed,
    ExpectedPlanStatus,
    HostTask,
    LeaseInfo,
    PlanStatusChange,
    RunKey,
    RunLease,
    WriteBatch,
)
from executor.store.connection import connect, in_snapshot, in_transaction, on_worker_thread
from executor.store.errors import (
    SQLITE_MAX_INT,
    SQLITE_MIN_INT,
    agent_not_found,
    check_limit,
    overflow_error,
    plan_not_found,
    store_error,
    unknown_steps_error,
)
from executor.store.feeds import polled_feed
from executor.store.results import DELETE_RESULT, read_result, result_rows, write_result
from executor.store.sql import (
    FOLD_DURATION,
    INSERT_EVENT,
    INSERT_PLAN,
    INSERT_STEP,
    LATEST_VERSION,
    PLAN_SELECT,
    RENEW_ONE,
    UPDATE_STATUS,
    UPSERT_ATTEMPT,
    UPSERT_STATE,
)

__all__ = ["SqliteStore"]

_T = TypeVar("_T")

_FEED_POLL_S: Final = 0.1
"""How often a feed of a plan's events reads the log (SQLite cannot notify)."""


class SqliteStore:
    """The `Store` on one SQLite file (see `executor.store.base.Store` for each method).

    Open one with `await SqliteStore.open(path)` (or `async with await
    SqliteStore.open(path)`), and close it when done.

    Attributes:
        path: The database file.
    """

    path: Path

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        """Wrap an open, migrated connection; use `SqliteStore.open` instead."""
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
    ) -> SqliteStore:
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
        db, file = await connect(path, synchronous=synchronous, busy_timeout_s=busy_timeout_s)
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

    async def __aenter__(self) -> SqliteStore:
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
                    result = await on_worker_thread(db, in_transaction, body)
                except sqlite3.Error as exc:
                    raise store_error(self.path, exc) from exc
                except OverflowError as exc:
                    raise overflow_error(exc) from exc
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
                return await on_worker_thread(self._apart, in_snapshot, body)
            except sqlite3.Error as exc:
                raise store_error(self.path, exc) from exc

    async def _on_thread(self, body: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run `body` on the worker thread, outside a write transaction (reads only)."""
        async with self._lock:
            db = self._require_db()
            try:
                return await on_worker_thread(db, in_snapshot, body)
            except sqlite3.Error as exc:
                raise store_error(self.path, exc) from exc

    async def _read(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Any]:
        async with self._lock:
            db = self._require_db()
            try:
                return list(await db.execute_fetchall(sql, params))
            except sqlite3.Error as exc:
                raise store_error(self.path, exc) from exc
            except OverflowError as exc:
                raise overflow_error(exc) from exc

    # --- plans ---

    async def save_plan(self, plan: Plan, *, events: Sequence[Event] = ()) -> None:
        """Insert a plan version, its steps and a PENDING state per step, atomically."""
        now = codecs.now_text()
        plan_row, step_rows, state_rows = codecs.new_plan_rows(plan, now)
        event_rows = [codecs.event_row(e) for e in events]

        def body(conn: sqlite3.Connection) -> None:
            if conn.execute(INSERT_PLAN, plan_row).rowcount == 0:
                raise UserError(
                    f"plan {plan.id!r} version {plan.version} already exists: "
                    "save a new version instead"
                )
            if step_rows:
                conn.executemany(INSERT_STEP, step_rows)
                conn.executemany(UPSERT_STATE, state_rows)
            if event_rows:
                conn.executemany(INSERT_EVENT, event_rows)

        await self._transact(body)

    async def get_plan(self, plan_id: str, version: int | None = None) -> Plan:
        """Return a plan version, the latest when `version` is None."""
        if version is None:
            where = f"p.plan_id = :plan_id AND {LATEST_VERSION}"
        elif not SQLITE_MIN_INT <= version <= SQLITE_MAX_INT:
            raise await self._plan_not_found(plan_id, version)  # no row could hold it
        else:
            where = "p.plan_id = :plan_id AND p.version = :version"
        params = {"plan_id": plan_id, "version": version, "limit": 1}
        plans = codecs.plans_from_rows(await self._read(PLAN_SELECT.format(where=where), params))
        if not plans:
            raise await self._plan_not_found(plan_id, version)
        return plans[0]

    async def _plan_not_found(self, plan_id: str, version: int | None) -> NotFoundError:
        return plan_not_found(plan_id, version, await self.plan_versions(plan_id))

    async def list_plans(
        self,
        *,
        statuses: Collection[PlanStatus] | None = None,
        session_id: str | None = None,
        limit: int = 100,
    ) -> list[Plan]:
        """Return the latest version of each plan, newest first."""
        check_limit(limit)
        clauses = [LATEST_VERSION]
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
        sql = PLAN_SELECT.format(where=" AND ".join(clauses))
        return codecs.plans_from_rows(await self._read(sql, params))

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
        """Change a plan version's status, checked against the stored one."""
        status = PlanStatus(status)
        event_rows = [codecs.event_row(e) for e in events]
        params = {"plan_id": plan_id, "version": version, "limit": 1}
        select = PLAN_SELECT.format(where="p.plan_id = :plan_id AND p.version = :version")
        now = codecs.now_text()

        def body(conn: sqlite3.Connection) -> Plan:
            plans = codecs.plans_from_rows(conn.execute(select, params).fetchall())
            if not plans:
                raise NotFoundError(f"no plan {plan_id!r} version {version}")
            check_transition(plans[0].status, status)
            conn.execute(
                UPDATE_STATUS,
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
                conn.executemany(INSERT_EVENT, event_rows)
            return plans[0]

        stored = await self._transact(body)
        return codecs.with_status(stored, status, approved_hash)

    async def get_run_times(
        self, plan_id: str, version: int
    ) -> tuple[datetime | None, datetime | None]:
        """Return when the plan version's latest run started and finished."""
        rows = await self._read(
            "SELECT started_at, finished_at FROM plans WHERE plan_id = ? AND version = ?",
            (plan_id, version),
        )
        if not rows:
            raise NotFoundError(f"no plan {plan_id!r} version {version}")
        return codecs.parse_ts(rows[0]["started_at"]), codecs.parse_ts(rows[0]["finished_at"])

    # --- MCP tasks and kept keys ---

    async def add_host_task(
        self, task_id: str, owner: str, plan_id: str, version: int, created_at: datetime
    ) -> None:
        """Record that a host's task `task_id` is the run of a plan version, for `owner`."""

        def body(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(
                    "INSERT INTO host_tasks (task_id, owner, plan_id, version, created_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (task_id, owner, plan_id, version, codecs.ts(created_at)),
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
        created = codecs.parse_ts(row["created_at"])
        assert created is not None
        return HostTask(row["task_id"], row["owner"], row["plan_id"], row["version"], created)

    async def server_key(self, name: str, size: int = 32) -> bytes:
        """The secret kept under `name`, made (random, `size` bytes) on first use."""

        def body(conn: sqlite3.Connection) -> bytes:
            conn.execute(
                "INSERT OR IGNORE INTO server_keys (name, secret, created_at) VALUES (?, ?, ?)",
                (name, secrets.token_bytes(size), codecs.ts(utc_now())),
            )
            row = conn.execute("SELECT secret FROM server_keys WHERE name = ?", (name,)).fetchone()
            return bytes(row[0])

        return await self._transact(body)

    # --- run leases ---

    async def claim_runs(
        self,
        lease: RunLease,
        *,
        gone_owners: Collection[str] = (),
        runs: Collection[tuple[str, int]] | None = None,
    ) -> list[RunKey]:
        """Take every `executing` plan version that nobody holds, in one atomic UPDATE.

        The check and the write are one statement under the write lock, so two
        processes claiming at once never both get a version.
        """
        now = codecs.now_text()
        params: dict[str, Any] = {
            "owner": lease.owner,
            "until": codecs.lease_until(now, lease.lease_s),
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

        def body(conn: sqlite3.Connection) -> list[RunKey]:
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
    ) -> set[RunKey]:
        """Extend the leases `lease.owner` holds (all, or those of `runs`)."""
        now = codecs.now_text()
        params = {
            "owner": lease.owner,
            "until": codecs.lease_until(now, lease.lease_s),
            "executing": PlanStatus.EXECUTING.value,
        }
        sql = (
            "UPDATE plans SET lease_until = :until"
            " WHERE status = :executing AND lease_owner = :owner"
        )
        keys = None if runs is None else sorted({(str(p), int(v)) for p, v in runs})

        def body(conn: sqlite3.Connection) -> set[RunKey]:
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
        """Give up `owner`'s leases (all, or those of `runs`), so another may claim them now."""
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
        now = utc_now()
        return [codecs.lease_from_row(r, now) for r in rows]

    async def get_lease(self, plan_id: str, version: int) -> LeaseInfo | None:
        """Return the lease of one plan version; `None` when it is not `executing`."""
        rows = await self._read(
            "SELECT plan_id, version, lease_owner, lease_until, cancel_requested_at"
            " FROM plans WHERE plan_id = ? AND version = ? AND status = ?",
            (plan_id, version, PlanStatus.EXECUTING.value),
        )
        return codecs.lease_from_row(rows[0], utc_now()) if rows else None

    # --- cancel requests ---

    async def request_cancel(self, plan_id: str, version: int) -> bool:
        """Ask the process that runs this plan version to cancel it."""
        now = codecs.now_text()

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
    ) -> set[RunKey]:
        """Wait until one of `runs` has a cancel request; return every one of them that has.

        It looks at once, then again only when the database may have changed:
        SQLite cannot notify, so every `poll_s` it reads `PRAGMA data_version`
        (which changes when another connection commits, and touches no table).
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

    async def publish_live(self, events: Sequence[Event]) -> None:
        """Nothing: SQLite cannot carry live events to other processes."""

    def follow_events(
        self, plan_id: str, *, after_seq: int = 0
    ) -> AbstractAsyncContextManager[EventFeed]:
        """Follow a plan's stored events; SQLite cannot notify, so they are read every 0.1 s."""

        async def read(after: int) -> list[Event]:
            return await self.get_events(plan_id, after_seq=after)

        return polled_feed(read, after_seq, _FEED_POLL_S)

    # --- runs ---

    async def get_step_states(self, plan_id: str, version: int) -> dict[str, StepState]:
        """Return every step's state for a plan version, in step order (empty if unknown)."""
        rows = await self._read(
            "SELECT ss.* FROM step_states AS ss"
            " JOIN steps AS s USING (plan_id, version, step_id)"
            " WHERE ss.plan_id = ? AND ss.version = ? ORDER BY s.position",
            (plan_id, version),
        )
        return {row["step_id"]: codecs.state_from_row(row) for row in rows}

    async def get_step_result(self, plan_id: str, version: int, step_id: str) -> ToolResult | None:
        """Return the whole MCP result a step's last finished attempt gave, or `None`."""
        key = (plan_id, version, step_id)

        def body(conn: sqlite3.Connection) -> ToolResult | None:
            return read_result(conn, key)

        return await self._on_thread(body)

    async def write(self, batch: WriteBatch) -> None:
        """Commit everything in `batch` in one transaction."""
        await self._write(batch, want_seqs=False)

    async def write_returning_events(self, batch: WriteBatch) -> list[Event]:
        """Like `write`, and return the batch's events with the `seq` each was given."""
        return await self._write(batch, want_seqs=True)

    async def _write(self, batch: WriteBatch, *, want_seqs: bool) -> list[Event]:
        if not batch:
            return []
        # Encode before taking the lock: JSON work needs no connection.
        now = codecs.now_text()
        state_rows = [codecs.state_row(s, now) for s in batch.step_states]
        results = [r for r in map(result_rows, batch.step_states) if r is not None]
        # A step reset to pending (a re-run, a decision) keeps no result of its past.
        reset_keys = [
            (s.plan_id, s.version, s.step_id)
            for s in batch.step_states
            if s.status is StepStatus.PENDING
        ]
        attempt_rows = [codecs.attempt_row(a) for a in batch.attempts]
        event_rows = [codecs.event_row(e) for e in batch.events]
        duration_rows = [codecs.duration_row(sv, tl, sec, now) for sv, tl, sec in batch.durations]
        expect, change = batch.expect, batch.plan_status

        def body(conn: sqlite3.Connection) -> int:
            last_seq = 0
            if expect is not None:
                _check_status(conn, expect, now)
            if change is not None:
                _change_status(conn, change, now)
            try:
                if state_rows:
                    conn.executemany(UPSERT_STATE, state_rows)
                if reset_keys:
                    conn.executemany(DELETE_RESULT, reset_keys)
                for rows in results:
                    write_result(conn, rows)
                if attempt_rows:
                    conn.executemany(UPSERT_ATTEMPT, attempt_rows)
            except sqlite3.IntegrityError as exc:
                raise unknown_steps_error(batch, f"sqlite: {exc}") from exc
            if event_rows:
                conn.executemany(INSERT_EVENT, event_rows)
                if want_seqs:
                    # The write lock is ours, so the batch's seqs are the last len(rows).
                    last_seq = int(conn.execute("SELECT last_insert_rowid()").fetchone()[0])
            if duration_rows:
                conn.executemany(FOLD_DURATION, duration_rows)
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
        return [codecs.attempt_from_row(r) for r in rows]

    async def get_events(
        self, plan_id: str, *, after_seq: int = 0, limit: int = 1000
    ) -> list[Event]:
        """Return a plan's events with `seq` above `after_seq`, oldest first."""
        check_limit(limit)
        rows = await self._read(
            "SELECT * FROM events WHERE plan_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (plan_id, after_seq, limit),
        )
        return [codecs.event_from_row(r) for r in rows]

    async def tool_stats(self) -> dict[tuple[str, str], ToolStats]:
        """Return the duration statistics of every tool measured so far."""
        rows = await self._read("SELECT * FROM tool_stats ORDER BY server, tool")
        return {(r["server"], r["tool"]): codecs.tool_stats_from_row(r) for r in rows}

    # --- agents ---

    async def save_agent(self, agent: AgentConfig) -> None:
        """Insert or replace the agent with this name."""
        now = codecs.now_text()
        row = codecs.agent_row(agent, now)

        def body(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO agents (name, content, created_at, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET content = excluded.content,"
                " updated_at = excluded.updated_at",
                row,
            )

        await self._transact(body)

    async def get_agent(self, name: str) -> AgentConfig:
        """Return the agent with this name."""
        rows = await self._read("SELECT content FROM agents WHERE name = ?", (name,))
        if rows:
            return AgentConfig.model_validate_json(rows[0]["content"])
        names = [r[0] for r in await self._read("SELECT name FROM agents ORDER BY name")]
        raise agent_not_found(name, names)

    async def list_agents(self) -> list[AgentConfig]:
        """Return every agent, by name."""
        rows = await self._read("SELECT content FROM agents ORDER BY name")
        return [AgentConfig.model_validate_json(r["content"]) for r in rows]

    # --- planner accounting ---

    async def record_planner_attempt(self, attempt: PlannerAttempt) -> None:
        """Append one planning-model call."""
        row = codecs.planner_attempt_row(attempt)

        def body(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO planner_attempts (plan_id, attempt, model, prompt_tokens,"
                " completion_tokens, latency_s, errors, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )

        await self._transact(body)

    # --- statistics ---

    async def record_server_event(self, event: ServerEvent) -> None:
        """Append one change in a downstream server's availability."""
        row = statistics.server_event_row(event)

        def body(conn: sqlite3.Connection) -> None:
            conn.execute(statistics.INSERT_SERVER_EVENT, row)

        await self._transact(body)

    async def get_server_events(
        self, *, server: str | None = None, since: datetime | None = None
    ) -> list[ServerEvent]:
        """Return server availability events, by server and time."""
        sql, params = statistics.server_events_query(server, since)
        return [statistics.server_event_from_row(r) for r in await self._read(sql, params)]

    async def tool_call_stats(
        self,
        *,
        server: str | None = None,
        tool: str | None = None,
        since: datetime | None = None,
    ) -> list[ToolCallStats]:
        """Return what every tool's attempts add up to, by server and tool."""

        def body(conn: sqlite3.Connection) -> list[ToolCallStats]:
            return statistics.tool_call_stats(conn, server=server, tool=tool, since=since)

        return await self._read_apart(body)


def _change_status(conn: sqlite3.Connection, change: PlanStatusChange, now: str) -> None:
    """Apply a batch's plan status change, checked against the stored status (worker thread)."""
    row = conn.execute(
        "SELECT status FROM plans WHERE plan_id = ? AND version = ?",
        (change.plan_id, change.version),
    ).fetchone()
    if row is None:
        raise NotFoundError(f"no plan {change.plan_id!r} version {change.version}")
    check_transition(PlanStatus(row[0]), PlanStatus(change.status))
    lease = change.lease
    conn.execute(
        UPDATE_STATUS,
        {
            "plan_id": change.plan_id,
            "version": change.version,
            "status": PlanStatus(change.status).value,
            "approved_hash": None,
            "started_at": codecs.ts(change.started_at),
            "finished_at": codecs.ts(change.finished_at),
            "lease_owner": None if lease is None else lease.owner,
            "lease_until": None if lease is None else codecs.lease_until(now, lease.lease_s),
            "now": now,
        },
    )


def _check_status(conn: sqlite3.Connection, expect: ExpectedPlanStatus, now: str) -> None:
    """Refuse a batch whose plan is not as it expects, else renew its lease (worker thread)."""
    status = PlanStatus(expect.status).value
    lease = expect.lease
    if lease is not None:
        # The common case in one statement: still ours and still in this status.
        renewed = conn.execute(
            RENEW_ONE,
            {
                "plan_id": expect.plan_id,
                "version": expect.version,
                "status": status,
                "owner": lease.owner,
                "until": codecs.lease_until(now, lease.lease_s),
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
