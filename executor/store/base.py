"""The `Store` protocol the scheduler and the face depend on, and the values it speaks.

A store keeps plans, runs (step states, attempts, results, the event log),
agents and statistics, and holds no state another process could make stale:
several processes may share one database. Every write is one transaction, and
every status change is checked against the stored status inside it
(`executor.status.check_transition`).

An `executing` plan version carries a lease: who runs it and until when, by
the store's clock (`RunLease`, `LeaseInfo`), and it may carry a cancel request
from another process (`request_cancel`, which the owner sees through
`wait_cancel_requests`). Leaving `executing` releases the lease and clears the
request. `executor.store.sqlite.SqliteStore` is the embedded implementation;
`executor.store.postgres.PostgresStore` serves several replicas.

Each store has its own way to wait for a change another process made: the
cancel requests of the runs it holds (`wait_cancel_requests`), and a plan's
events (`follow_events`), with the live-only ones (`step_progress`) that a
store able to carry them across processes passes on (`publish_live`).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Protocol, Self

from executor.calls import ToolResult
from executor.errors import InternalError
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
from executor.status import PlanStatus

__all__ = [
    "EventFeed",
    "ExpectedPlanStatus",
    "HostTask",
    "LeaseInfo",
    "OpenStore",
    "PlanStatusChange",
    "RunKey",
    "RunLease",
    "Store",
    "WriteBatch",
]

RunKey = tuple[PlanId, int]
"""A plan version that runs: (plan_id, version)."""


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
    expiry (now + `lease_s`, by the store's clock) on it; it renews the expiry
    while it runs, and another process may take the run over only once it has
    passed.
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
    lapsed: bool = True
    """Whether it had expired (or had no expiry) when read, by the store's clock."""


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
    """Upserted whole, keyed by (plan_id, version, step_id). A state's `result`, when
    given, is kept as the step's result; a state set back to `pending` keeps none."""
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


class EventFeed(Protocol):
    """A plan's events as they come (see `Store.follow_events`)."""

    async def next(self, *, timeout_s: float) -> list[Event]:
        """The events that came since the last call, waiting up to `timeout_s` for one.

        Stored events come in `seq` order, then live ones (`seq` 0) that another
        process published meanwhile; an empty list means none came in time.
        """
        ...


class Store(Protocol):
    """Persistence for plans, runs, agents and statistics (see the module docs)."""

    async def close(self) -> None:
        """Finish what is in progress and let go of the database."""
        ...

    # --- plans ---

    async def save_plan(self, plan: Plan, *, events: Sequence[Event] = ()) -> None:
        """Insert a plan version, its steps and a `pending` state per step, atomically.

        Args:
            plan: The version to save; its content is immutable from now on.
            events: Appended in the same transaction (e.g. `plan_created`).

        Raises:
            UserError: This (id, version) is already stored, or two steps share an id.
        """
        ...

    async def get_plan(self, plan_id: str, version: int | None = None) -> Plan:
        """Return a plan version, the latest when `version` is None.

        Raises:
            NotFoundError: No such plan or version (the message lists the versions).
        """
        ...

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
        ...

    async def plan_versions(self, plan_id: str) -> list[int]:
        """Return the stored versions of a plan, oldest first (empty when there is none)."""
        ...

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
        ...

    async def get_run_times(
        self, plan_id: str, version: int
    ) -> tuple[datetime | None, datetime | None]:
        """Return when the plan version's latest run started and finished.

        Raises:
            NotFoundError: No such plan version.
        """
        ...

    # --- MCP tasks and kept keys ---

    async def add_host_task(
        self, task_id: str, owner: str, plan_id: str, version: int, created_at: datetime
    ) -> None:
        """Record that a host's task `task_id` is the run of a plan version, for `owner`.

        Raises:
            NotFoundError: No such plan version.
        """
        ...

    async def get_host_task(self, task_id: str) -> HostTask | None:
        """The host task `task_id`, or `None` when there is none."""
        ...

    async def server_key(self, name: str, size: int = 32) -> bytes:
        """The secret kept under `name`, made (random, `size` bytes) on first use.

        Kept so that what it protects outlives a restart (the requestState sealing key);
        every process on one database gets the same secret.
        """
        ...

    # --- run leases ---

    async def claim_runs(
        self,
        lease: RunLease,
        *,
        gone_owners: Collection[str] = (),
        runs: Collection[tuple[str, int]] | None = None,
    ) -> list[RunKey]:
        """Take every `executing` plan version that nobody holds, atomically.

        A version is taken when it has no owner (a run released on shutdown), when
        its lease has expired, or when its owner is in `gone_owners` (processes the
        caller knows are dead). Two processes claiming at once never both get one.

        Args:
            lease: The claiming owner, and how long the claim holds.
            gone_owners: Owners whose leases may be taken before they expire.
            runs: Only these (plan_id, version) pairs; every executing one when `None`.

        Returns:
            The (plan_id, version) pairs now held by `lease.owner`, sorted.
        """
        ...

    async def renew_leases(
        self, lease: RunLease, runs: Collection[tuple[str, int]] | None = None
    ) -> set[RunKey]:
        """Extend the leases `lease.owner` holds (all, or those of `runs`) by `lease.lease_s`.

        Returns:
            The (plan_id, version) pairs it still holds among those asked for: a run
            missing from them was taken over (or changed) by another process.
        """
        ...

    async def release_leases(
        self, owner: str, runs: Collection[tuple[str, int]] | None = None
    ) -> int:
        """Give up `owner`'s leases (all, or those of `runs`), so another may claim them now.

        Returns:
            How many were released.
        """
        ...

    async def list_leases(self) -> list[LeaseInfo]:
        """Return the lease of every `executing` plan version, oldest plan first."""
        ...

    async def get_lease(self, plan_id: str, version: int) -> LeaseInfo | None:
        """Return the lease of one plan version; `None` when it is not `executing`."""
        ...

    # --- cancel requests ---

    async def request_cancel(self, plan_id: str, version: int) -> bool:
        """Ask the process that runs this plan version to cancel it.

        The request stays until the plan leaves `executing` (whoever changes it),
        so an owner that is slow to look, or a process that takes the run over,
        still finds it.

        Returns:
            Whether the plan version is executing (else there is nothing to ask).
        """
        ...

    async def wait_cancel_requests(
        self, runs: Collection[tuple[str, int]], *, poll_s: float = 0.2
    ) -> set[RunKey]:
        """Wait until one of `runs` has a cancel request; return every one of them that has.

        Args:
            runs: The (plan_id, version) pairs to watch (the runs of the caller).
            poll_s: How often to look, for a store that cannot be notified.
        """
        ...

    async def publish_live(self, events: Sequence[Event]) -> None:
        """Pass events that are not stored (`step_progress`) to other processes' followers.

        A store that cannot carry them across processes does nothing.
        """
        ...

    def follow_events(
        self, plan_id: str, *, after_seq: int = 0
    ) -> AbstractAsyncContextManager[EventFeed]:
        """Follow a plan's events from `after_seq` on, whichever process writes them.

        The feed notices events from the moment the block is entered: read what
        the plan looks like after entering it, and nothing is missed.
        """
        ...

    # --- runs ---

    async def get_step_states(self, plan_id: str, version: int) -> dict[str, StepState]:
        """Return every step's state for a plan version, in step order (empty if unknown).

        A state read back has no `result` (see `get_step_result`), and its `output`
        only when `summary.inline` (or it was stored before summaries were).
        """
        ...

    async def get_step_result(self, plan_id: str, version: int, step_id: str) -> ToolResult | None:
        """Return the whole MCP result a step's last finished attempt gave, or `None`."""
        ...

    async def write(self, batch: WriteBatch) -> None:
        """Commit everything in `batch` in one transaction.

        Raises:
            NotFoundError: The batch names a plan version or step that is not stored.
            TransitionError: The batch's plan status change is illegal, or its
                `expect` does not hold; nothing is written.
        """
        ...

    async def write_returning_events(self, batch: WriteBatch) -> list[Event]:
        """Like `write`, and return the batch's events with the `seq` each was given."""
        ...

    async def get_attempts(
        self, plan_id: str, version: int, step_id: str | None = None
    ) -> list[AttemptRecord]:
        """Return the attempts of a plan version (or of one step), by step then attempt."""
        ...

    async def get_events(
        self, plan_id: str, *, after_seq: int = 0, limit: int = 1000
    ) -> list[Event]:
        """Return a plan's events with `seq` above `after_seq`, oldest first.

        Page through the log by passing the last `seq` seen as `after_seq`.

        Raises:
            UserError: `limit` is below 1.
        """
        ...

    async def tool_stats(self) -> dict[tuple[str, str], ToolStats]:
        """Return the duration statistics of every tool measured so far."""
        ...

    # --- agents and planner accounting ---

    async def save_agent(self, agent: AgentConfig) -> None:
        """Insert or replace the agent with this name."""
        ...

    async def get_agent(self, name: str) -> AgentConfig:
        """Return the agent with this name.

        Raises:
            NotFoundError: No agent by that name (the message lists the known ones).
        """
        ...

    async def list_agents(self) -> list[AgentConfig]:
        """Return every agent, by name."""
        ...

    async def record_planner_attempt(self, attempt: PlannerAttempt) -> None:
        """Append one planning-model call."""
        ...

    # --- statistics ---

    async def record_server_event(self, event: ServerEvent) -> None:
        """Append one change in a downstream server's availability (see `ServerEvent`)."""
        ...

    async def get_server_events(
        self, *, server: str | None = None, since: datetime | None = None
    ) -> list[ServerEvent]:
        """Return server availability events, by server and time.

        Args:
            server: Only this server's.
            since: Only events from then on, plus each owner's last event of each
                server before it (which says whether the server was down at `since`).
        """
        ...

    async def tool_call_stats(
        self,
        *,
        server: str | None = None,
        tool: str | None = None,
        since: datetime | None = None,
    ) -> list[ToolCallStats]:
        """Return what every tool's attempts add up to, by server and tool.

        Counts by status, retries (attempts after a step's first), failures by error
        kind and the last failure, and the p50 / p95 / max (nearest rank) of successful
        calls, timed by their `AttemptRecord.call_s` (else their span). A long read: it
        must not hold up the writes of runs.

        Args:
            server: Only this server's tools.
            tool: Only tools of this name.
            since: Only attempts started at or after this time.
        """
        ...


class OpenStore(Store, Protocol):
    """An open store that closes on leaving `async with` (what `open_store` returns)."""

    async def __aenter__(self) -> Self:
        """Return the store itself."""
        ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the store."""
        ...
