"""A `Store` in memory, written for the tests from the protocol's contract alone.

It shows that the scheduler needs nothing of SQLite: the scheduler tests that
take the `store_kind` fixture run on it and on `SqliteStore` alike. Every
write is checked whole before anything changes, so it is all or nothing like
a transaction; nothing in a write awaits, so no other task sees it half done.
Cancel requests wake their waiters at once, as a server database's
notifications would, instead of being polled for.
"""

from __future__ import annotations

import math
import secrets
from collections import Counter
from collections.abc import Collection, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import anyio

from executor.calls import ToolResult
from executor.errors import InternalError, NotFoundError, TransitionError, UserError
from executor.ids import PlanId
from executor.plan import Plan, utc_now
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
from executor.status import PlanStatus, StepStatus, check_transition
from executor.store import (
    EventFeed,
    ExpectedPlanStatus,
    HostTask,
    LeaseInfo,
    PlanStatusChange,
    RunKey,
    RunLease,
    Store,
    WriteBatch,
)
from executor.store.feeds import polled_feed

__all__ = ["MemoryStore"]


@dataclass
class _Version:
    """One stored plan version and what belongs to its latest run."""

    plan: Plan
    order: int
    states: dict[str, StepState]
    started_at: datetime | None = None
    finished_at: datetime | None = None
    lease_owner: str | None = None
    lease_until: datetime | None = None
    cancel_requested_at: datetime | None = None
    results: dict[str, ToolResult] = field(default_factory=dict)
    attempts: dict[tuple[str, int], AttemptRecord] = field(default_factory=dict)


def _as_stored(state: StepState) -> StepState:
    """A state as a store hands it back: no result, and an output only when small."""
    keep = state.summary is None or state.summary.inline
    return state.model_copy(update={"result": None, "output": state.output if keep else None})


class MemoryStore:
    """Plans, runs, agents and statistics in this process's memory (see the module docs)."""

    def __init__(self) -> None:
        self._versions: dict[tuple[str, int], _Version] = {}
        self._events: list[Event] = []
        self._stats: dict[tuple[str, str], ToolStats] = {}
        self._agents: dict[str, AgentConfig] = {}
        self._planner_attempts: list[PlannerAttempt] = []
        self._server_events: list[ServerEvent] = []
        self._host_tasks: dict[str, HostTask] = {}
        self._keys: dict[str, bytes] = {}
        self._cancel_asked = anyio.Event()
        self._saved = 0

    async def close(self) -> None:
        pass

    # --- plans ---

    def _version(self, plan_id: str, version: int) -> _Version:
        found = self._versions.get((plan_id, version))
        if found is None:
            raise NotFoundError(f"no plan {plan_id!r} version {version}")
        return found

    async def save_plan(self, plan: Plan, *, events: Sequence[Event] = ()) -> None:
        duplicates = sorted(i for i, n in Counter(s.id for s in plan.steps).items() if n > 1)
        if duplicates:
            raise UserError(f"plan {plan.id!r} has duplicate step ids {duplicates}")
        if (plan.id, plan.version) in self._versions:
            raise UserError(f"plan {plan.id!r} version {plan.version} already exists")
        self._saved += 1
        states = {
            s.id: StepState(plan_id=plan.id, version=plan.version, step_id=s.id) for s in plan.steps
        }
        self._versions[(plan.id, plan.version)] = _Version(plan, self._saved, states)
        self._append(events)

    async def get_plan(self, plan_id: str, version: int | None = None) -> Plan:
        versions = await self.plan_versions(plan_id)
        if not versions:
            raise NotFoundError(f"no plan with id {plan_id!r}")
        wanted = versions[-1] if version is None else version
        if wanted not in versions:
            known = ", ".join(map(str, versions))
            raise NotFoundError(
                f"plan {plan_id!r} has no version {version}; its versions are {known}"
            )
        return self._versions[(plan_id, wanted)].plan

    async def list_plans(
        self,
        *,
        statuses: Collection[PlanStatus] | None = None,
        session_id: str | None = None,
        limit: int = 100,
    ) -> list[Plan]:
        if limit < 1:
            raise UserError(f"limit must be at least 1, got {limit}")
        latest: dict[str, _Version] = {}
        for (plan_id, version), found in self._versions.items():
            if plan_id not in latest or latest[plan_id].plan.version < version:
                latest[plan_id] = found
        chosen = [
            v
            for v in latest.values()
            if (statuses is None or v.plan.status in set(statuses))
            and (session_id is None or v.plan.session_id == session_id)
        ]
        chosen.sort(key=lambda v: (v.plan.created_at, v.order), reverse=True)
        return [v.plan for v in chosen[:limit]]

    async def plan_versions(self, plan_id: str) -> list[int]:
        return sorted(v for p, v in self._versions if p == plan_id)

    async def update_plan_status(
        self,
        plan_id: str,
        version: int,
        status: PlanStatus,
        *,
        approved_hash: str | None = None,
        events: Sequence[Event] = (),
    ) -> Plan:
        found = self._version(plan_id, version)
        check_transition(found.plan.status, status)
        update: dict[str, object] = {"status": status}
        if approved_hash is not None:
            update["approved_hash"] = approved_hash
        found.plan = found.plan.model_copy(update=update)
        if status is not PlanStatus.EXECUTING:
            found.lease_owner = found.lease_until = None
        found.cancel_requested_at = None
        self._append(events)
        return found.plan

    async def get_run_times(
        self, plan_id: str, version: int
    ) -> tuple[datetime | None, datetime | None]:
        found = self._version(plan_id, version)
        return found.started_at, found.finished_at

    # --- MCP tasks and kept keys ---

    async def add_host_task(
        self, task_id: str, owner: str, plan_id: str, version: int, created_at: datetime
    ) -> None:
        self._version(plan_id, version)
        self._host_tasks[task_id] = HostTask(task_id, owner, plan_id, version, created_at)

    async def get_host_task(self, task_id: str) -> HostTask | None:
        return self._host_tasks.get(task_id)

    async def server_key(self, name: str, size: int = 32) -> bytes:
        return self._keys.setdefault(name, secrets.token_bytes(size))

    # --- run leases ---

    def _executing(self, runs: Collection[tuple[str, int]] | None) -> list[_Version]:
        wanted = None if runs is None else {(str(p), int(v)) for p, v in runs}
        return [
            v
            for key, v in self._versions.items()
            if v.plan.status is PlanStatus.EXECUTING and (wanted is None or key in wanted)
        ]

    async def claim_runs(
        self,
        lease: RunLease,
        *,
        gone_owners: Collection[str] = (),
        runs: Collection[tuple[str, int]] | None = None,
    ) -> list[RunKey]:
        now = utc_now()
        taken: list[RunKey] = []
        for v in self._executing(runs):
            free = v.lease_owner is None or v.lease_until is None or v.lease_until <= now
            if free or v.lease_owner in gone_owners:
                v.lease_owner = lease.owner
                v.lease_until = now + timedelta(seconds=lease.lease_s)
                taken.append((v.plan.id, v.plan.version))
        return sorted(taken)

    async def renew_leases(
        self, lease: RunLease, runs: Collection[tuple[str, int]] | None = None
    ) -> set[RunKey]:
        now = utc_now()
        held: set[RunKey] = set()
        for v in self._executing(runs):
            if v.lease_owner == lease.owner:
                v.lease_until = now + timedelta(seconds=lease.lease_s)
                held.add((v.plan.id, v.plan.version))
        return held

    async def release_leases(
        self, owner: str, runs: Collection[tuple[str, int]] | None = None
    ) -> int:
        wanted = None if runs is None else {(str(p), int(v)) for p, v in runs}
        released = 0
        for key, v in self._versions.items():
            if v.lease_owner == owner and (wanted is None or key in wanted):
                v.lease_owner = v.lease_until = None
                released += 1
        return released

    def _lease(self, v: _Version) -> LeaseInfo:
        return LeaseInfo(
            plan_id=v.plan.id,
            version=v.plan.version,
            owner=v.lease_owner,
            until=v.lease_until,
            cancel_requested_at=v.cancel_requested_at,
            lapsed=v.lease_until is None or v.lease_until <= utc_now(),
        )

    async def list_leases(self) -> list[LeaseInfo]:
        return [self._lease(v) for v in sorted(self._executing(None), key=lambda v: v.order)]

    async def get_lease(self, plan_id: str, version: int) -> LeaseInfo | None:
        found = self._versions.get((plan_id, version))
        if found is None or found.plan.status is not PlanStatus.EXECUTING:
            return None
        return self._lease(found)

    # --- cancel requests ---

    async def request_cancel(self, plan_id: str, version: int) -> bool:
        found = self._versions.get((plan_id, version))
        if found is None or found.plan.status is not PlanStatus.EXECUTING:
            return False
        found.cancel_requested_at = found.cancel_requested_at or utc_now()
        asked, self._cancel_asked = self._cancel_asked, anyio.Event()
        asked.set()
        return True

    async def wait_cancel_requests(
        self, runs: Collection[tuple[str, int]], *, poll_s: float = 0.2
    ) -> set[RunKey]:
        wanted = {(str(p), int(v)) for p, v in runs}
        if not wanted:
            await anyio.sleep_forever()
        while True:
            found = {
                (v.plan.id, v.plan.version)
                for v in self._executing(wanted)
                if v.cancel_requested_at is not None
            }
            if found:
                return found
            await self._cancel_asked.wait()

    async def publish_live(self, events: Sequence[Event]) -> None:
        pass  # one process: its runs hand live events to their subscribers themselves

    def follow_events(
        self, plan_id: str, *, after_seq: int = 0
    ) -> AbstractAsyncContextManager[EventFeed]:
        async def read(after: int) -> list[Event]:
            return await self.get_events(plan_id, after_seq=after)

        return polled_feed(read, after_seq, 0.01)

    # --- runs ---

    async def get_step_states(self, plan_id: str, version: int) -> dict[str, StepState]:
        found = self._versions.get((plan_id, version))
        return {} if found is None else dict(found.states)

    async def get_step_result(self, plan_id: str, version: int, step_id: str) -> ToolResult | None:
        found = self._versions.get((plan_id, version))
        return None if found is None else found.results.get(step_id)

    async def write(self, batch: WriteBatch) -> None:
        await self.write_returning_events(batch)

    async def write_returning_events(self, batch: WriteBatch) -> list[Event]:
        if not batch:
            return []
        now = utc_now()
        # Everything is checked before anything changes: all of the batch, or none.
        if batch.expect is not None:
            self._check_expected(batch.expect)
        change = batch.plan_status
        if change is not None:
            check_transition(
                self._version(change.plan_id, change.version).plan.status, change.status
            )
        for plan_id, version, step_id in {
            *((s.plan_id, s.version, s.step_id) for s in batch.step_states),
            *((a.plan_id, a.version, a.step_id) for a in batch.attempts),
        }:
            if step_id not in self._version(plan_id, version).states:
                raise NotFoundError(f"no step {step_id!r} in plan {plan_id!r} version {version}")
        for server, tool, seconds in batch.durations:
            if not (math.isfinite(seconds) and seconds >= 0):
                raise InternalError(f"duration of {server}.{tool} must be >= 0, got {seconds!r}")
        if batch.expect is not None and batch.expect.lease is not None:
            lease = batch.expect.lease
            held = self._version(batch.expect.plan_id, batch.expect.version)
            held.lease_until = now + timedelta(seconds=lease.lease_s)
        if change is not None:
            self._change_status(change, now)
        for state in batch.step_states:
            found = self._version(state.plan_id, state.version)
            found.states[state.step_id] = _as_stored(state)
            if state.status is StepStatus.PENDING:
                found.results.pop(state.step_id, None)
            if state.result is not None:
                found.results[state.step_id] = state.result
        for record in batch.attempts:
            found = self._version(record.plan_id, record.version)
            found.attempts[(record.step_id, record.attempt)] = record
        for server, tool, seconds in batch.durations:
            self._fold(server, tool, seconds)
        return self._append(batch.events)

    def _check_expected(self, expect: ExpectedPlanStatus) -> None:
        found = self._version(expect.plan_id, expect.version)
        if found.plan.status is not expect.status:
            raise TransitionError(
                f"plan {expect.plan_id!r} is {found.plan.status}, not {expect.status}: "
                "another process changed it; nothing was written"
            )
        if expect.lease is not None and found.lease_owner != expect.lease.owner:
            raise TransitionError(
                f"plan {expect.plan_id!r} is no longer run by this process: another "
                "process took it over; nothing was written"
            )

    def _change_status(self, change: PlanStatusChange, now: datetime) -> None:
        found = self._version(change.plan_id, change.version)
        found.plan = found.plan.model_copy(update={"status": change.status})
        if change.started_at is not None:
            found.started_at, found.finished_at = change.started_at, change.finished_at
        elif change.finished_at is not None:
            found.finished_at = change.finished_at
        if change.status is not PlanStatus.EXECUTING:
            found.lease_owner = found.lease_until = None
        elif change.lease is not None:
            found.lease_owner = change.lease.owner
            found.lease_until = now + timedelta(seconds=change.lease.lease_s)
        found.cancel_requested_at = None

    def _fold(self, server: str, tool: str, seconds: float) -> None:
        old = self._stats.get((server, tool))
        if old is None:
            new = ToolStats(server=server, tool=tool, count=1, mean_s=seconds, last_s=seconds)
        else:
            count = old.count + 1
            mean = old.mean_s + (seconds - old.mean_s) / count
            m2 = old.m2 + (seconds - old.mean_s) * (seconds - mean)
            new = ToolStats(
                server=server, tool=tool, count=count, mean_s=mean, m2=m2, last_s=seconds
            )
        self._stats[(server, tool)] = new

    def _append(self, events: Sequence[Event]) -> list[Event]:
        stored = []
        for event in events:
            seq = len(self._events) + 1
            stored.append(event.model_copy(update={"seq": seq}))
        self._events.extend(stored)
        return stored

    async def get_attempts(
        self, plan_id: str, version: int, step_id: str | None = None
    ) -> list[AttemptRecord]:
        found = self._versions.get((plan_id, version))
        if found is None:
            return []
        return [
            record
            for (sid, _), record in sorted(found.attempts.items())
            if step_id is None or sid == step_id
        ]

    async def get_events(
        self, plan_id: str, *, after_seq: int = 0, limit: int = 1000
    ) -> list[Event]:
        if limit < 1:
            raise UserError(f"limit must be at least 1, got {limit}")
        return [e for e in self._events if e.plan_id == plan_id and e.seq > after_seq][:limit]

    async def tool_stats(self) -> dict[tuple[str, str], ToolStats]:
        return dict(sorted(self._stats.items()))

    # --- agents and planner accounting ---

    async def save_agent(self, agent: AgentConfig) -> None:
        self._agents[agent.name] = agent

    async def get_agent(self, name: str) -> AgentConfig:
        found = self._agents.get(name)
        if found is None:
            known = ", ".join(repr(n) for n in sorted(self._agents)) or "none"
            raise NotFoundError(f"no agent named {name!r}; known agents: {known}")
        return found

    async def list_agents(self) -> list[AgentConfig]:
        return [self._agents[n] for n in sorted(self._agents)]

    async def record_planner_attempt(self, attempt: PlannerAttempt) -> None:
        self._planner_attempts.append(attempt)

    # --- statistics ---

    async def record_server_event(self, event: ServerEvent) -> None:
        self._server_events.append(event)

    async def get_server_events(
        self, *, server: str | None = None, since: datetime | None = None
    ) -> list[ServerEvent]:
        chosen = [(i, e) for i, e in enumerate(self._server_events) if server in (None, e.server)]
        if since is not None:
            # Each owner's last event of each server before `since` says where it stood.
            before = {(e.owner, e.server): i for i, e in chosen if e.at < since}
            chosen = [(i, e) for i, e in chosen if e.at >= since or i in before.values()]
        chosen.sort(key=lambda c: (c[1].server, c[1].at, c[0]))
        return [e for _, e in chosen]

    async def tool_call_stats(
        self,
        *,
        server: str | None = None,
        tool: str | None = None,
        since: datetime | None = None,
    ) -> list[ToolCallStats]:
        by_tool: dict[tuple[str, str], list[tuple[str, AttemptRecord]]] = {}
        for (plan_id, _), found in self._versions.items():
            steps = {s.id: s for s in found.plan.steps}
            for (step_id, _), attempt in sorted(found.attempts.items()):
                step = steps[step_id]
                if (
                    server in (None, step.server)
                    and tool in (None, step.tool)
                    and (since is None or attempt.started_at >= since)
                ):
                    by_tool.setdefault((step.server, step.tool), []).append((plan_id, attempt))
        return [_tool_figures(*key, attempts) for key, attempts in sorted(by_tool.items())]


def _call_s(attempt: AttemptRecord) -> float | None:
    """A successful attempt's duration: the call's own time, else the attempt's span."""
    if attempt.call_s is not None:
        return attempt.call_s
    if attempt.finished_at is None:
        return None
    return (attempt.finished_at - attempt.started_at).total_seconds()


def _last_failure(failed: list[tuple[str, AttemptRecord]]) -> LastFailure | None:
    """The most recent of `failed` (plan id, attempt) pairs, the first by plan and step on a tie."""
    if not failed:
        return None
    failed = sorted(failed, key=lambda f: (f[0], f[1].step_id))
    plan_id, last = max(failed, key=lambda f: (f[1].finished_at is not None, f[1].finished_at))
    message = "" if last.error is None else last.error.message.strip().split("\n", 1)[0]
    return LastFailure(
        at=last.finished_at,
        kind="unknown" if last.error is None else last.error.kind.value,
        message=message[:300],
        plan_id=PlanId(plan_id),
        step_id=last.step_id,
    )


def _tool_figures(
    server: str, tool: str, attempts: list[tuple[str, AttemptRecord]]
) -> ToolCallStats:
    """What one tool's (plan id, attempt) pairs add up to."""
    by_status = Counter(a.status for _, a in attempts)
    durations = sorted(
        d for _, a in attempts if a.status is StepStatus.SUCCEEDED and (d := _call_s(a)) is not None
    )
    failed = [(p, a) for p, a in attempts if a.status is StepStatus.FAILED]
    kinds = Counter("unknown" if a.error is None else a.error.kind.value for _, a in failed)
    succeeded, failures = by_status[StepStatus.SUCCEEDED], by_status[StepStatus.FAILED]
    n = len(durations)
    return ToolCallStats(
        server=server,
        tool=tool,
        calls=len(attempts),
        succeeded=succeeded,
        failed=failures,
        cancelled=by_status[StepStatus.CANCELLED],
        interrupted=by_status[StepStatus.INTERRUPTED],
        running=by_status[StepStatus.RUNNING],
        retries=sum(1 for _, a in attempts if a.attempt > 1),
        failure_rate=failures / (succeeded + failures) if succeeded + failures else 0.0,
        failed_by_kind=dict(sorted(kinds.items())),
        # Nearest rank: the p-th percentile is the ceil(p * n)-th fastest.
        p50_s=durations[(n + 1) // 2 - 1] if n else None,
        p95_s=durations[(95 * n + 99) // 100 - 1] if n else None,
        max_s=durations[-1] if n else None,
        last_failure=_last_failure(failed),
    )


def _is_a_store(store: MemoryStore) -> Store:
    """The type checker's proof that `MemoryStore` speaks the whole protocol."""
    return store
