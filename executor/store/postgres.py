"""`PostgresStore`: the `Store` on a PostgreSQL database, shared by several replicas.

psycopg 3 (async) over a connection pool. Every public write is one
transaction; a run's batch is sent whole in pipeline mode, with its COMMIT: one
round trip (its conditions fail the batch when they do not hold). A lease is
time by the database's clock (`now()`), and runs are claimed with `FOR UPDATE
SKIP LOCKED`. Cancel requests and event feeds are woken by LISTEN/NOTIFY (one
connection per store, `executor.store.pg_listen`); since a notification can be
lost with its connection, every wait also reads the database again at least
once a second. The URL's password is never said: messages name the database
by its URL without it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from types import TracebackType
from typing import Any, Final, TypeVar

import anyio
import psycopg
from psycopg import AsyncConnection, AsyncCursor, errors
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from executor.calls import ToolResult
from executor.errors import (
    ConfigError,
    NotFoundError,
    StoreError,
    TaskorchError,
    TransitionError,
    UserError,
)
from executor.ids import PlanId
from executor.plan import Plan
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
from executor.store import codecs, pg_schema, pg_statistics, statistics
from executor.store import pg_sql as q
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
from executor.store.errors import (
    agent_not_found,
    check_limit,
    plan_not_found,
    unknown_steps_error,
)
from executor.store.location import DatabaseUrl, locate
from executor.store.pg_errors import scrubbed, store_error
from executor.store.pg_listen import Listener, Watch, live_events, live_payloads
from executor.store.results import ResultRows, assemble, result_rows

__all__ = ["PostgresStore"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
Conn = AsyncConnection[Any]

_LOOK_AGAIN_S: Final = 1.0
"""Longest a wait goes without reading the database, notified or not."""


class PostgresStore:
    """The `Store` on a PostgreSQL database (see `executor.store.base.Store` for each method).

    Open one with `await PostgresStore.open(url)` (or `async with await
    PostgresStore.open(url)`), and close it when done.

    Attributes:
        url: The database (it says itself without its password).
    """

    url: DatabaseUrl

    def __init__(
        self, pool: AsyncConnectionPool[Conn], url: DatabaseUrl, schema: str, timeout_s: float
    ) -> None:
        """Wrap an open pool on a migrated database; use `PostgresStore.open` instead."""
        self.url = url
        self._pool: AsyncConnectionPool[Conn] | None = pool
        self._timeout_s = timeout_s
        # Channels of this schema only: two deployments sharing a database do not
        # wake each other.
        tag = hashlib.sha256(schema.encode()).hexdigest()[:12]
        self._cancel_channel = f"taskorch_{tag}_cancel"
        self._events_channel = f"taskorch_{tag}_events"
        self._listener = Listener(
            self._listen_connection,
            (self._cancel_channel, self._events_channel),
            self._listen_failure,
        )

    @classmethod
    async def open(
        cls,
        url: str | DatabaseUrl,
        *,
        max_connections: int = 10,
        timeout_s: float = 30.0,
    ) -> PostgresStore:
        """Connect to the database at `url`, check it and migrate it.

        Args:
            url: `postgresql://user[:password]@host[:port]/dbname[?param=...]`; libpq's
                environment (`PGPASSWORD`, `~/.pgpass`, `PGSSLMODE`...) fills in what
                it leaves out.
            max_connections: Most connections the store's pool opens (besides the
                one that listens for notifications).
            timeout_s: How long connecting, or any one request, may take.

        Raises:
            ConfigError: `url` is not a PostgreSQL URL, or a setting is not valid.
            SchemaTooNewError: The database was written by a newer taskorch.
            CorruptDatabaseError: The schema holds tables that are not taskorch's.
            StoreError: The database cannot be reached, or refuses what taskorch needs.
        """
        where = locate(url)
        if not isinstance(where, DatabaseUrl):
            raise ConfigError(
                f"{where} is not a PostgreSQL URL: write postgresql://user@host:port/dbname"
            )
        if not 1 <= max_connections <= 1000:
            raise ConfigError(f"max_connections must be 1 to 1000, got {max_connections!r}")
        if not (math.isfinite(timeout_s) and timeout_s > 0):
            raise ConfigError(f"timeout_s must be > 0 seconds, got {timeout_s!r}")
        try:
            with anyio.fail_after(timeout_s):
                conn = await AsyncConnection.connect(where.secret(), autocommit=True)
            try:
                with anyio.fail_after(timeout_s):
                    await pg_schema.prepare(conn, str(where))
                    cur = await conn.execute("SELECT current_schema()")
                    row = await cur.fetchone()
            finally:
                with anyio.CancelScope(shield=True):
                    await conn.close()
            pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
                where.secret(),
                min_size=1,
                max_size=max_connections,
                kwargs={"autocommit": True},
                open=False,
                timeout=timeout_s,
                name="taskorch",
            )
            try:
                await pool.open(wait=True, timeout=timeout_s)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await pool.close()
                raise
        except TaskorchError:
            raise
        except TimeoutError:
            raise StoreError(
                f"database {where} did not answer within {timeout_s:g} s: check that the "
                "server runs and can be reached"
            ) from None
        except PoolTimeout as exc:
            raise StoreError(scrubbed(f"database {where}: {exc}", where)) from None
        except psycopg.Error as exc:
            raise store_error(where, exc) from None
        assert row is not None
        return cls(pool, where, str(row[0]), timeout_s)

    async def close(self) -> None:
        """Stop listening and close every connection; requests in progress finish first."""
        pool, self._pool = self._pool, None
        with anyio.CancelScope(shield=True):
            await self._listener.close()
            if pool is not None:
                await pool.close(timeout=self._timeout_s)

    async def __aenter__(self) -> PostgresStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- plumbing ---

    def _require_pool(self) -> AsyncConnectionPool[Conn]:
        if self._pool is None:
            raise StoreError(f"the store for {self.url} is closed")
        return self._pool

    async def _listen_connection(self) -> Conn:
        conn: Conn = await AsyncConnection.connect(
            self.url.secret(),
            autocommit=True,
            # Bounded: `watch` waits for it, holding up every other wait (libpq counts
            # whole seconds; unbounded, psycopg would wait 130 s on a silent peer).
            connect_timeout=max(2, math.ceil(self._timeout_s)),
            # A listener sends nothing: without keepalives a dead peer is never noticed.
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
        )
        return conn

    def _listen_failure(self, exc: psycopg.Error | OSError) -> StoreError:
        """What a failure of the LISTEN connection becomes (the password never said)."""
        if isinstance(exc, psycopg.Error):
            return store_error(self.url, exc)
        return StoreError(scrubbed(f"database {self.url}: {exc}", self.url))

    def _failure(self, exc: BaseException) -> TaskorchError:
        """What a driver failure becomes (the password never said)."""
        if isinstance(exc, TimeoutError):
            return StoreError(
                f"database {self.url} did not answer within {self._timeout_s:g} s: check "
                "that the server runs and can be reached"
            )
        if isinstance(exc, UnicodeEncodeError) or (
            isinstance(exc, psycopg.DataError) and "NUL" in str(exc)
        ):
            return UserError(
                "the request holds text PostgreSQL cannot store (a NUL character or a "
                "lone surrogate outside JSON): remove it"
            )
        if isinstance(exc, errors.NumericValueOutOfRange):
            return UserError(
                f"a number in the request is too large for the database ({exc}): integers "
                "must lie between -2147483648 and 2147483647"
            )
        if isinstance(exc, PoolTimeout):
            return StoreError(
                scrubbed(f"database {self.url}: no connection free or possible ({exc})", self.url)
            )
        assert isinstance(exc, psycopg.Error)
        return store_error(self.url, exc)

    async def _transact(
        self, body: Callable[[Conn], Awaitable[_T]], *, pipeline: bool = False
    ) -> _T:
        """Run `body` in one transaction on a pooled connection: it commits whole or not at all.

        With `pipeline`, `body` only queues statements (it must not wait for an
        answer): they go at once with the BEGIN and the COMMIT, in one round trip.
        (An explicit transaction, not the implicit one of a pipeline's segment: on
        an error psycopg then forgets the statements it prepared in it.) The wait is
        shielded from cancellation (bounded by the store's timeout), so a cancelled
        caller never wonders whether its commit happened.
        """

        async def transaction(conn: Conn) -> _T:
            if pipeline:
                async with conn.pipeline(), conn.transaction():
                    return await body(conn)
            async with conn.transaction():
                return await body(conn)

        return await self._shielded(transaction)

    async def _shielded(self, body: Callable[[Conn], Awaitable[_T]]) -> _T:
        """Run `body` on a pooled connection, shielded from cancellation up to the timeout.

        Alone (autocommit), one statement is a transaction of its own.
        """
        pool = self._require_pool()
        with anyio.CancelScope(shield=True):
            try:
                with anyio.fail_after(self._timeout_s):
                    async with pool.connection() as conn:
                        result = await body(conn)
            except (psycopg.Error, PoolTimeout, TimeoutError, UnicodeEncodeError) as exc:
                raise self._failure(exc) from exc
        return result

    async def _read(self, query: str, params: Any = None) -> list[dict[str, Any]]:
        """Run one query on a pooled connection and return its rows as dicts.

        Shielded like a write: a query cut off by a cancel would cost its connection.
        """

        async def body(conn: Conn) -> list[dict[str, Any]]:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(query.encode(), params)  # our own SQL, values bound
            return await cur.fetchall()

        return await self._shielded(body)

    async def _add_events(
        self, conn: Conn, rows: Sequence[tuple[Any, ...]]
    ) -> AsyncCursor[Any] | None:
        """Queue a batch's events: the plans' locks, the rows (seqs back), the notifications."""
        if not rows:
            return None
        plan_ids = sorted({str(r[0]) for r in rows})
        payloads = [json.dumps({"p": p}) for p in plan_ids]
        await conn.execute(q.LOCK_AND_NOTIFY.encode(), (plan_ids, self._events_channel, payloads))
        cur = conn.cursor()
        await cur.execute(q.INSERT_EVENT.encode(), q.columns(rows, 5))
        return cur

    @staticmethod
    async def _seqs(cur: AsyncCursor[Any] | None) -> list[int]:
        """The seqs `_add_events` got back, in the order of its rows (after a sync)."""
        if cur is None:
            return []
        return sorted(int(row[0]) for row in await cur.fetchall())

    # --- plans ---

    async def save_plan(self, plan: Plan, *, events: Sequence[Event] = ()) -> None:
        """Insert a plan version, its steps and a PENDING state per step, atomically."""
        now = codecs.now_text()
        plan_row, step_rows, state_rows = codecs.new_plan_rows(plan, now)
        plan_row["query"] = q.queryable(plan_row["query"])
        plan_row["strategy"] = q.queryable(plan_row["strategy"])
        event_rows = [codecs.event_row(e) for e in events]

        async def body(conn: Conn) -> None:
            cur = await conn.execute(q.INSERT_PLAN.encode(), plan_row)
            if await cur.fetchone() is None:
                raise UserError(
                    f"plan {plan.id!r} version {plan.version} already exists: "
                    "save a new version instead"
                )
            if step_rows:
                await conn.execute(q.INSERT_STEP.encode(), q.columns(step_rows, 7))
                await conn.execute(q.UPSERT_STATE.encode(), q.columns(state_rows, 13))
            await self._add_events(conn, event_rows)

        await self._transact(body)

    async def get_plan(self, plan_id: str, version: int | None = None) -> Plan:
        """Return a plan version, the latest when `version` is None."""
        if version is None:
            where = f"p.plan_id = %(plan_id)s AND {q.LATEST_VERSION}"
        else:
            where = "p.plan_id = %(plan_id)s AND p.version = %(version)s"
        params = {"plan_id": plan_id, "version": version, "limit": 1}
        plans = codecs.plans_from_rows(await self._read(q.PLAN_SELECT.format(where=where), params))
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
        clauses = [q.LATEST_VERSION]
        params: dict[str, Any] = {"limit": limit}
        if statuses is not None:
            wanted = sorted({PlanStatus(s).value for s in statuses})
            if not wanted:
                return []
            clauses.append("p.status = ANY(%(statuses)s::text[])")
            params["statuses"] = wanted
        if session_id is not None:
            clauses.append("p.session_id = %(session_id)s")
            params["session_id"] = session_id
        sql = q.PLAN_SELECT.format(where=" AND ".join(clauses))
        return codecs.plans_from_rows(await self._read(sql, params))

    async def plan_versions(self, plan_id: str) -> list[int]:
        """Return the stored versions of a plan, oldest first (empty when there is none)."""
        rows = await self._read(
            "SELECT version FROM plans WHERE plan_id = %s ORDER BY version", (plan_id,)
        )
        return [int(r["version"]) for r in rows]

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
        select = q.PLAN_SELECT.format(where="p.plan_id = %(plan_id)s AND p.version = %(version)s")
        now = codecs.now_text()

        async def body(conn: Conn) -> Plan:
            # Locked first: nothing changes the status between the check and the write.
            await conn.execute(
                b"SELECT 1 FROM plans WHERE plan_id = %s AND version = %s FOR UPDATE",
                (plan_id, version),
            )
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(select.encode(), params)
            plans = codecs.plans_from_rows(await cur.fetchall())
            if not plans:
                raise NotFoundError(f"no plan {plan_id!r} version {version}")
            check_transition(plans[0].status, status)
            await conn.execute(
                q.CHANGE_STATUS.encode(),
                q.change_params(
                    PlanStatusChange(plan_id, version, status), now, approved_hash=approved_hash
                ),
            )
            await self._add_events(conn, event_rows)
            return plans[0]

        stored = await self._transact(body)
        return codecs.with_status(stored, status, approved_hash)

    async def get_run_times(
        self, plan_id: str, version: int
    ) -> tuple[datetime | None, datetime | None]:
        """Return when the plan version's latest run started and finished."""
        rows = await self._read(
            "SELECT started_at, finished_at FROM plans WHERE plan_id = %s AND version = %s",
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
        row = (task_id, owner, plan_id, version, codecs.ts(created_at))

        async def body(conn: Conn) -> None:
            await conn.execute(q.INSERT_HOST_TASK.encode(), row)

        try:
            await self._transact(body)
        except StoreError as exc:
            if isinstance(exc.__cause__, errors.ForeignKeyViolation):
                raise NotFoundError(f"no plan {plan_id!r} version {version}") from None
            if isinstance(exc.__cause__, errors.UniqueViolation):
                raise UserError(f"host task {task_id!r} already exists") from None
            raise

    async def get_host_task(self, task_id: str) -> HostTask | None:
        """The host task `task_id`, or `None` when there is none."""
        rows = await self._read("SELECT * FROM host_tasks WHERE task_id = %s", (task_id,))
        if not rows:
            return None
        row = rows[0]
        created = codecs.parse_ts(row["created_at"])
        assert created is not None
        return HostTask(row["task_id"], row["owner"], row["plan_id"], int(row["version"]), created)

    async def server_key(self, name: str, size: int = 32) -> bytes:
        """The secret kept under `name`, made (random, `size` bytes) on first use.

        The first replica to ask makes it; every other (racing it or later) reads
        that one back: an insert that does nothing on a conflict, then a read.
        """
        insert, select = q.SERVER_KEY

        async def body(conn: Conn) -> bytes:
            await conn.execute(insert.encode(), (name, secrets.token_bytes(size)))
            cur = await conn.execute(select.encode(), (name,))
            row = await cur.fetchone()
            assert row is not None
            return bytes(row[0])

        return await self._transact(body)

    # --- run leases ---

    async def _one_statement(self, query: str, params: Any) -> list[dict[str, Any]]:
        """A write that is one statement (atomic on its own), its rows back."""

        async def body(conn: Conn) -> list[dict[str, Any]]:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(query.encode(), params)
            return await cur.fetchall() if cur.description else []

        return await self._shielded(body)

    async def claim_runs(
        self,
        lease: RunLease,
        *,
        gone_owners: Collection[str] = (),
        runs: Collection[tuple[str, int]] | None = None,
    ) -> list[RunKey]:
        """Take every `executing` plan version that nobody holds (FOR UPDATE SKIP LOCKED)."""
        params = {
            "owner": lease.owner,
            "lease_s": lease.lease_s,
            "gone": sorted(set(gone_owners)),
            **q.runs_params(runs),
        }
        rows = await self._one_statement(q.CLAIM, params)
        return sorted((PlanId(r["plan_id"]), int(r["version"])) for r in rows)

    async def renew_leases(
        self, lease: RunLease, runs: Collection[tuple[str, int]] | None = None
    ) -> set[RunKey]:
        """Extend the leases `lease.owner` holds (all, or those of `runs`) by `lease.lease_s`."""
        params = {"owner": lease.owner, "lease_s": lease.lease_s, **q.runs_params(runs)}
        rows = await self._one_statement(q.RENEW, params)
        return {(PlanId(r["plan_id"]), int(r["version"])) for r in rows}

    async def release_leases(
        self, owner: str, runs: Collection[tuple[str, int]] | None = None
    ) -> int:
        """Give up `owner`'s leases (all, or those of `runs`), so another may claim them now."""

        async def body(conn: Conn) -> int:
            cur = await conn.execute(q.RELEASE.encode(), {"owner": owner, **q.runs_params(runs)})
            return max(cur.rowcount, 0)

        return await self._transact(body)

    async def list_leases(self) -> list[LeaseInfo]:
        """Return the lease of every `executing` plan version, oldest plan first."""
        rows = await self._read(q.LEASES.format(where=""))
        return [_lease(r) for r in rows]

    async def get_lease(self, plan_id: str, version: int) -> LeaseInfo | None:
        """Return the lease of one plan version; `None` when it is not `executing`."""
        rows = await self._read(
            q.LEASES.format(where="AND plan_id = %s AND version = %s"), (plan_id, version)
        )
        return _lease(rows[0]) if rows else None

    # --- cancel requests ---

    async def request_cancel(self, plan_id: str, version: int) -> bool:
        """Ask the process that runs this plan version to cancel it (it is notified)."""
        params = {"plan_id": plan_id, "version": version, "channel": self._cancel_channel}
        return bool(await self._one_statement(q.REQUEST_CANCEL, params))

    async def wait_cancel_requests(
        self, runs: Collection[tuple[str, int]], *, poll_s: float = 0.2
    ) -> set[RunKey]:
        """Wait until one of `runs` has a cancel request; return every one of them that has.

        Woken by the request's notification; the database is read again at least
        every second (every `poll_s` while notifications cannot be received).
        """
        wanted = {(str(p), int(v)) for p, v in runs}
        if not wanted:
            await anyio.sleep_forever()

        def match(payload: dict[str, Any]) -> bool:
            return (payload.get("p"), payload.get("v")) in wanted

        async with self._listener.watch(self._cancel_channel, match) as watch:
            while True:
                rows = await self._read(q.CANCEL_REQUESTS, q.runs_params(wanted))
                if rows:
                    return {(PlanId(r["plan_id"]), int(r["version"])) for r in rows}
                await watch.wait(self._look_again_s(poll_s))

    def _look_again_s(self, poll_s: float) -> float:
        return _LOOK_AGAIN_S if self._listener.connected else min(poll_s, _LOOK_AGAIN_S)

    # --- live events ---

    async def publish_live(self, events: Sequence[Event]) -> None:
        """Notify the followers of each event's plan, in every process (nothing is stored)."""
        payloads = live_payloads(events)
        if not payloads:
            return
        await self._one_statement(q.NOTIFY_MANY, (self._events_channel, payloads))

    def follow_events(
        self, plan_id: str, *, after_seq: int = 0
    ) -> AbstractAsyncContextManager[EventFeed]:
        """Follow a plan's events, stored and live, woken by their notifications."""
        return self._follow(plan_id, after_seq)

    @asynccontextmanager
    async def _follow(self, plan_id: str, after_seq: int) -> AsyncIterator[EventFeed]:
        def match(payload: dict[str, Any]) -> bool:
            return payload.get("p") == plan_id

        async with self._listener.watch(self._events_channel, match) as watch:
            yield _NotifiedFeed(self, plan_id, after_seq, watch)

    # --- runs ---

    async def get_step_states(self, plan_id: str, version: int) -> dict[str, StepState]:
        """Return every step's state for a plan version, in step order (empty if unknown)."""
        rows = await self._read(
            "SELECT ss.* FROM step_states AS ss"
            " JOIN steps AS s USING (plan_id, version, step_id)"
            " WHERE ss.plan_id = %s AND ss.version = %s ORDER BY s.position",
            (plan_id, version),
        )
        return {row["step_id"]: codecs.state_from_row(row) for row in rows}

    async def get_step_result(self, plan_id: str, version: int, step_id: str) -> ToolResult | None:
        """Return the whole MCP result a step's last finished attempt gave, or `None`."""
        # One statement: the skeleton and its parts are read from one snapshot.
        rows = await self._read(
            "SELECT r.skeleton, r.parts, p.part, p.data FROM step_results AS r"
            " LEFT JOIN result_parts AS p USING (plan_id, version, step_id)"
            " WHERE r.plan_id = %s AND r.version = %s AND r.step_id = %s",
            (plan_id, version, step_id),
        )
        if not rows:
            return None
        strings = {
            int(r["part"]): bytes(r["data"]).decode("utf-8", "surrogatepass")
            for r in rows
            if r["part"] is not None
        }
        return assemble(rows[0]["skeleton"], rows[0]["parts"], strings)

    async def write(self, batch: WriteBatch) -> None:
        """Commit everything in `batch` in one transaction."""
        await self._write(batch)

    async def write_returning_events(self, batch: WriteBatch) -> list[Event]:
        """Like `write`, and return the batch's events with the `seq` each was given."""
        seqs = await self._write(batch)
        return [e.model_copy(update={"seq": s}) for e, s in zip(batch.events, seqs, strict=True)]

    async def _write(self, batch: WriteBatch) -> list[int]:
        if not batch:
            return []
        now = codecs.now_text()
        # One row per key, the last given: a statement changes a row once.
        states = list({(s.plan_id, s.version, s.step_id): s for s in batch.step_states}.values())
        state_rows = [codecs.state_row(s, now) for s in states]
        results = [r for r in map(result_rows, states) if r is not None]
        # A step reset to pending (a re-run, a decision) keeps no result of its past.
        reset_keys = [
            (s.plan_id, s.version, s.step_id) for s in states if s.status is StepStatus.PENDING
        ]
        attempts = {(a.plan_id, a.version, a.step_id, a.attempt): a for a in batch.attempts}
        attempt_rows = [codecs.attempt_row(a) for a in attempts.values()]
        event_rows = [codecs.event_row(e) for e in batch.events]
        # Folded in one order (by tool, each tool's durations in theirs): two batches
        # updating the same tools never wait for each other's row locks in a ring.
        durations = sorted(
            (codecs.duration_row(sv, tl, sec, now) for sv, tl, sec in batch.durations),
            key=lambda r: (r[0], r[1]),
        )
        duration_params = [
            {"server": sv, "tool": tl, "seconds": sec, "now": at} for sv, tl, sec, at in durations
        ]
        expect, change = batch.expect, batch.plan_status

        async def body(conn: Conn) -> AsyncCursor[Any] | None:
            # One round trip: the conditions come first and fail the batch when they do
            # not hold, so nothing after them is done (see `pg_sql.required`).
            if expect is not None:
                await conn.execute(*q.expect_statement(expect))
            if change is not None:
                await conn.execute(q.REQUIRED_CHANGE, q.change_params(change, now))
            if state_rows:
                await conn.execute(q.UPSERT_STATE.encode(), q.columns(state_rows, 13))
            if reset_keys:
                await conn.execute(q.DELETE_RESULT.encode(), q.columns(reset_keys, 3))
            for rows in results:
                await _write_result(conn, rows)
            if attempt_rows:
                await conn.execute(q.UPSERT_ATTEMPT.encode(), q.columns(attempt_rows, 10))
            if duration_params:
                await conn.cursor().executemany(q.FOLD_DURATION.encode(), duration_params)
            return await self._add_events(conn, event_rows)

        try:
            seq_cursor = await self._transact(body, pipeline=True)
        except StoreError as exc:
            # Pipelined, a refusal is told at the commit, as the driver's error.
            cause = exc.__cause__
            if isinstance(cause, errors.ForeignKeyViolation):
                raise unknown_steps_error(batch, _first_line(cause)) from cause
            if isinstance(cause, psycopg.Error) and cause.sqlstate == q.REQUIRE_FAILED:
                message = str(cause)
                if expect is not None and "expect" in message:
                    raise await self._refusal(expect) from None
                if change is not None and "change" in message:
                    raise await self._change_refusal(change) from None
            raise
        return await self._seqs(seq_cursor)

    async def _refusal(self, expect: ExpectedPlanStatus) -> TaskorchError:
        """Why a batch's condition did not hold (read after the batch was refused)."""
        status = PlanStatus(expect.status).value
        rows = await self._read(
            "SELECT status, lease_owner FROM plans WHERE plan_id = %s AND version = %s",
            (expect.plan_id, expect.version),
        )
        if not rows:
            return NotFoundError(f"no plan {expect.plan_id!r} version {expect.version}")
        stored, owner = rows[0]["status"], rows[0]["lease_owner"]
        if stored != status or expect.lease is None:
            return TransitionError(
                f"plan {expect.plan_id!r} version {expect.version} is {stored}, not "
                f"{status}: another process changed it; nothing was written"
            )
        holder = "nobody" if owner is None else f"owner {owner!r}"
        return TransitionError(
            f"plan {expect.plan_id!r} version {expect.version} is no longer run by this "
            f"process (its lease now belongs to {holder}): another process took it over "
            "after this one's lease expired; nothing was written"
        )

    async def _change_refusal(self, change: PlanStatusChange) -> TaskorchError:
        """Why a batch's status change was refused (read after the batch was refused)."""
        rows = await self._read(
            "SELECT status FROM plans WHERE plan_id = %s AND version = %s",
            (change.plan_id, change.version),
        )
        if not rows:
            return NotFoundError(f"no plan {change.plan_id!r} version {change.version}")
        try:
            check_transition(PlanStatus(rows[0]["status"]), PlanStatus(change.status))
        except TransitionError as exc:
            return exc
        return TransitionError(  # allowed now, refused then: it changed in between
            f"plan {change.plan_id!r} version {change.version} changed status while it "
            "was written; nothing was written"
        )

    async def get_attempts(
        self, plan_id: str, version: int, step_id: str | None = None
    ) -> list[AttemptRecord]:
        """Return the attempts of a plan version (or of one step), by step then attempt."""
        sql = "SELECT * FROM attempts WHERE plan_id = %s AND version = %s"
        params: tuple[Any, ...] = (plan_id, version)
        if step_id is not None:
            sql += " AND step_id = %s"
            params += (step_id,)
        rows = await self._read(sql + ' ORDER BY step_id COLLATE "C", attempt', params)
        return [codecs.attempt_from_row(r) for r in rows]

    async def get_events(
        self, plan_id: str, *, after_seq: int = 0, limit: int = 1000
    ) -> list[Event]:
        """Return a plan's events with `seq` above `after_seq`, oldest first."""
        check_limit(limit)
        rows = await self._read(
            "SELECT * FROM events WHERE plan_id = %s AND seq > %s ORDER BY seq LIMIT %s",
            (plan_id, after_seq, limit),
        )
        return [codecs.event_from_row(r) for r in rows]

    async def tool_stats(self) -> dict[tuple[str, str], ToolStats]:
        """Return the duration statistics of every tool measured so far."""
        rows = await self._read(
            'SELECT * FROM tool_stats ORDER BY server COLLATE "C", tool COLLATE "C"'
        )
        return {(r["server"], r["tool"]): codecs.tool_stats_from_row(r) for r in rows}

    # --- agents ---

    async def save_agent(self, agent: AgentConfig) -> None:
        """Insert or replace the agent with this name."""
        now = codecs.now_text()
        row = codecs.agent_row(agent, now)

        async def body(conn: Conn) -> None:
            await conn.execute(
                b"INSERT INTO agents (name, content, created_at, updated_at)"
                b" VALUES (%s, %s, %s, %s)"
                b" ON CONFLICT (name) DO UPDATE SET content = excluded.content,"
                b" updated_at = excluded.updated_at",
                row,
            )

        await self._transact(body)

    async def get_agent(self, name: str) -> AgentConfig:
        """Return the agent with this name."""
        rows = await self._read("SELECT content FROM agents WHERE name = %s", (name,))
        if rows:
            return AgentConfig.model_validate_json(rows[0]["content"])
        names = [
            r["name"] for r in await self._read('SELECT name FROM agents ORDER BY name COLLATE "C"')
        ]
        raise agent_not_found(name, names)

    async def list_agents(self) -> list[AgentConfig]:
        """Return every agent, by name."""
        rows = await self._read('SELECT content FROM agents ORDER BY name COLLATE "C"')
        return [AgentConfig.model_validate_json(r["content"]) for r in rows]

    # --- planner accounting ---

    async def record_planner_attempt(self, attempt: PlannerAttempt) -> None:
        """Append one planning-model call."""
        row = codecs.planner_attempt_row(attempt)

        async def body(conn: Conn) -> None:
            await conn.execute(
                b"INSERT INTO planner_attempts (plan_id, attempt, model, prompt_tokens,"
                b" completion_tokens, latency_s, errors, at)"
                b" VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                row,
            )

        await self._transact(body)

    # --- statistics ---

    async def record_server_event(self, event: ServerEvent) -> None:
        """Append one change in a downstream server's availability (see `ServerEvent`)."""
        await self._one_statement(
            pg_statistics.INSERT_SERVER_EVENT, pg_statistics.server_event_row(event)
        )

    async def get_server_events(
        self, *, server: str | None = None, since: datetime | None = None
    ) -> list[ServerEvent]:
        """Return server availability events, by server and time."""
        query, params = pg_statistics.server_events_query(server, since)
        return [statistics.server_event_from_row(r) for r in await self._read(query, params)]

    async def tool_call_stats(
        self,
        *,
        server: str | None = None,
        tool: str | None = None,
        since: datetime | None = None,
    ) -> list[ToolCallStats]:
        """Return what every tool's attempts add up to, by server and tool.

        Four queries over one snapshot (a read-only, repeatable-read transaction);
        PostgreSQL's readers never hold up its writers.
        """
        cte, params = pg_statistics.window(server, tool, since)

        async def body(conn: Conn) -> list[list[dict[str, Any]]]:
            await conn.execute(b"SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            found = []
            for query in (
                pg_statistics.TOTALS,
                pg_statistics.PERCENTILES,
                pg_statistics.FAILURE_KINDS,
                pg_statistics.LAST_FAILURES,
            ):
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute((cte + query).encode(), params)
                found.append(await cur.fetchall())
            return found

        return pg_statistics.figures(*await self._transact(body))


class _NotifiedFeed:
    """A plan's events, woken by notifications (see `PostgresStore.follow_events`)."""

    def __init__(self, store: PostgresStore, plan_id: str, after_seq: int, watch: Watch) -> None:
        self._store = store
        self._plan_id = plan_id
        self._after = after_seq
        self._watch = watch

    async def next(self, *, timeout_s: float) -> list[Event]:
        """The events that came since the last call, waiting up to `timeout_s` for one."""
        deadline = anyio.current_time() + timeout_s
        while True:
            events = await self._store.get_events(self._plan_id, after_seq=self._after)
            if events:
                self._after = events[-1].seq
            live = live_events(self._watch.take())
            if events or live:
                return events + live
            left = deadline - anyio.current_time()
            if left <= 0:
                return []
            await self._watch.wait(min(left, self._store._look_again_s(_LOOK_AGAIN_S)))


def _lease(row: dict[str, Any]) -> LeaseInfo:
    return LeaseInfo(
        plan_id=PlanId(row["plan_id"]),
        version=int(row["version"]),
        owner=row["lease_owner"],
        until=codecs.parse_ts(row["lease_until"]),
        cancel_requested_at=codecs.parse_ts(row["cancel_requested_at"]),
        lapsed=bool(row["lapsed"]),
    )


async def _write_result(conn: Conn, rows: ResultRows) -> None:
    """Queue a step's result in place of its previous one (its parts go by cascade)."""
    # Two statements: a data-modifying CTE and its main statement run as one, so an
    # insert would still meet the row the CTE deletes.
    await conn.execute(q.DELETE_RESULT.encode(), [[v] for v in rows.key])
    await conn.execute(q.INSERT_RESULT.encode(), (*rows.key, rows.skeleton, rows.parts))
    if rows.blobs:
        data = [b if isinstance(b, bytes) else b.encode("utf-8") for b in rows.blobs]
        await conn.execute(q.INSERT_PARTS.encode(), (*rows.key, data))


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
