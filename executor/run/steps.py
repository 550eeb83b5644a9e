"""A run's steps as its coordinator keeps them: states, attempts, and which step goes next.

Every change of a step's state is checked against the step table
(`executor.status.check_transition`), counted, and recorded in the run's
`Journal` with its event. A step is ready once its last dependency has
succeeded (or was skipped by decision); ready steps go out highest first by
the length of the chain they head, then in plan order. What to do with a step
is the coordinator's decision; this module records it.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import anyio

from executor.calls import ToolResult
from executor.errors import ErrorKind
from executor.eta import DurationModel
from executor.graph import Graph
from executor.outputs import summarize
from executor.plan import Plan, Step, StepError, utc_now
from executor.records import AttemptRecord, EventKind, StepState
from executor.run.journal import Journal, error_json
from executor.run.reports import count_statuses
from executor.status import SkipReason, StepStatus, check_transition

__all__ = ["Slot", "Steps"]


@dataclass(slots=True)
class Slot:
    """What the coordinator keeps of one step."""

    step: Step
    """The step."""
    index: int
    """The step's place in the plan."""
    state: StepState
    """Its state as last recorded (without the result of a success)."""
    waiting: int = 0
    """Dependencies not yet satisfied."""
    run_attempts: int = 0
    """Attempts made in this run (the retry policy counts these)."""
    scope: anyio.CancelScope | None = None
    """The in-flight call's, or the retry timer's, cancel scope."""
    attempt_started: datetime | None = None
    """When the attempt in flight started, for its record."""
    attempt_started_mono: float = 0.0
    """The same by `anyio.current_time()`, for the ETA."""
    task_id: str | None = None
    """The downstream task the attempt in flight became (MCP Tasks)."""
    resume_task: str | None = None
    """A downstream task recorded before a crash: the next attempt follows it."""


class Steps:
    """The steps of one run: their states and attempts, and the queue of ready ones.

    Attributes:
        counts: Steps in each status, every status present.
        changes: State changes so far (what an ETA computed earlier is judged by).
        in_flight: Steps whose call is going on.
        retrying: Steps waiting, still `running`, for their next attempt.
    """

    def __init__(
        self,
        plan: Plan,
        graph: Graph,
        states: Mapping[str, StepState],
        journal: Journal,
        retry_counts: Mapping[str, int] | None = None,
        resume_tasks: Mapping[str, str] | None = None,
    ) -> None:
        self._plan = plan
        self._graph = graph
        self._journal = journal
        self._slots: dict[str, Slot] = {}
        for i, step in enumerate(plan.steps):
            st = states.get(step.id) or StepState(
                plan_id=plan.id, version=plan.version, step_id=step.id
            )
            slot = Slot(step=step, index=i, state=st)
            if retry_counts is not None:
                slot.run_attempts = retry_counts.get(step.id, 0)
            if resume_tasks is not None:
                slot.resume_task = resume_tasks.get(step.id)
            self._slots[step.id] = slot
        self.counts = count_statuses([s.state for s in self._slots.values()])
        self.changes = 0
        self.in_flight: set[str] = set()
        self.retrying: set[str] = set()
        self._ready: list[tuple[int, int, str]] = []

    def __getitem__(self, step_id: str) -> Slot:
        return self._slots[step_id]

    def __iter__(self) -> Iterator[Slot]:
        return iter(self._slots.values())

    def __len__(self) -> int:
        return len(self._slots)

    def states(self) -> dict[str, StepState]:
        """Every step's state, by step id in plan order."""
        return {k: s.state for k, s in self._slots.items()}

    def interrupted(self) -> list[str]:
        """Ids of the steps that wait for a decision."""
        return [k for k, s in self._slots.items() if s.state.status is StepStatus.INTERRUPTED]

    def remaining_s(self, durations: DurationModel, now: float) -> dict[str, float | None]:
        """Expected seconds left of each step not yet ended (`now` by `anyio.current_time`)."""
        remaining: dict[str, float | None] = {}
        for sid, slot in self._slots.items():
            if slot.state.status.is_terminal:
                continue
            est = durations.estimate(slot.step.server, slot.step.tool)
            if est is not None and sid in self.in_flight:
                est = max(est - (now - slot.attempt_started_mono), 0.0)
            remaining[sid] = est
        return remaining

    def all_satisfied(self) -> bool:
        """Whether every step succeeded or was skipped by decision."""
        return all(s.state.satisfies_dependents for s in self._slots.values())

    # --- readiness ---

    def seed(self) -> None:
        """Count what each pending step waits for; queue what can run, skip what never can."""
        for sid in self._graph.order:
            slot = self._slots[sid]
            if slot.state.status is not StepStatus.PENDING:
                continue
            blocked = False
            for dep in slot.step.depends_on:
                dst = self._slots[dep].state
                if dst.satisfies_dependents:
                    continue
                # An interrupted dependency waits for a decision; it has not failed.
                if dst.status.is_terminal and dst.status is not StepStatus.INTERRUPTED:
                    blocked = True
                slot.waiting += 1
            if blocked:
                self.skip(slot, SkipReason.DEPENDENCY, "a dependency did not succeed")
            elif slot.waiting == 0:
                self.push_ready(slot)

    def push_ready(self, slot: Slot) -> None:
        """Queue a step to run."""
        heapq.heappush(self._ready, (-self._graph.height[slot.step.id], slot.index, slot.step.id))

    def pop_ready(self) -> Slot | None:
        """The next step to run, if any (a step ended meanwhile is passed over)."""
        while self._ready:
            slot = self._slots[heapq.heappop(self._ready)[2]]
            if not slot.state.status.is_terminal:
                return slot
        return None

    @property
    def any_ready(self) -> bool:
        """Whether a step is queued to run."""
        return bool(self._ready)

    # --- changes, each with its event ---

    def set(self, slot: Slot, **update: Any) -> None:
        """Change a step's state (checking the transition) and record it."""
        status = update.get("status")
        if status is not None and status is not slot.state.status:
            check_transition(slot.state.status, status)
            self.counts[slot.state.status] -= 1
            self.counts[status] += 1
        slot.state = slot.state.model_copy(update=update)
        self.changes += 1
        self._journal.step(slot.state)

    def next_attempt(self, slot: Slot) -> AttemptRecord:
        """The step's next attempt, counted against its retry policy from now on."""
        slot.run_attempts += 1
        slot.task_id = slot.resume_task
        return AttemptRecord(
            plan_id=self._plan.id,
            version=self._plan.version,
            step_id=slot.step.id,
            attempt=slot.state.attempts + 1,
            started_at=utc_now(),
            task_id=slot.resume_task,
        )

    def open_attempt(self, slot: Slot, attempt: int, call_s: float | None = None) -> AttemptRecord:
        """The record of the step's attempt in flight, to end it (`call_s`: the call's time)."""
        return AttemptRecord(
            plan_id=self._plan.id,
            version=self._plan.version,
            step_id=slot.step.id,
            attempt=attempt,
            started_at=slot.attempt_started or utc_now(),
            call_s=call_s,
            task_id=slot.task_id,
        )

    def start(self, slot: Slot, record: AttemptRecord) -> None:
        """The step's call is about to be made: it is `running` and in flight."""
        self.set(
            slot,
            status=StepStatus.RUNNING,
            attempts=record.attempt,
            started_at=slot.state.started_at or record.started_at,
            error=None,
        )
        self._journal.attempt(record)
        slot.attempt_started = record.started_at
        slot.attempt_started_mono = anyio.current_time()
        slot.scope = anyio.CancelScope()
        self.in_flight.add(slot.step.id)
        self._journal.event(
            EventKind.STEP_STARTED,
            slot.step.id,
            attempt=record.attempt,
            server=slot.step.server,
            tool=slot.step.tool,
        )

    def refuse(self, slot: Slot, record: AttemptRecord, error: StepError) -> None:
        """Nothing was called: the attempt starts and fails at once, and the step fails."""
        self.set(
            slot,
            status=StepStatus.RUNNING,
            attempts=record.attempt,
            started_at=slot.state.started_at or record.started_at,
        )
        self._journal.attempt_ended(record, StepStatus.FAILED, record.started_at, error)
        self.fail(slot, error, record.attempt)

    def succeed(
        self,
        slot: Slot,
        record: AttemptRecord,
        result: ToolResult,
        at: datetime,
        duration_s: float,
    ) -> Any:
        """The step's call succeeded: record it, queue what now can run; return its output."""
        step = slot.step
        output = result.output()
        summary = summarize(result, output)
        self._journal.attempt_ended(record, StepStatus.SUCCEEDED, at)
        self.set(
            slot,
            status=StepStatus.SUCCEEDED,
            output=output,
            result=result,
            summary=summary,
            error=None,
            finished_at=at,
        )
        # The journal carries the whole result to the store, which keeps it; the run
        # keeps only what reports need, so large results do not stay in memory.
        light = {"result": None, "output": output if summary.inline else None}
        slot.state = slot.state.model_copy(update=light)
        self._journal.duration(step.server, step.tool, duration_s)
        self._journal.event(
            EventKind.STEP_SUCCEEDED,
            step.id,
            attempt=record.attempt,
            duration_s=round(duration_s, 6),
        )
        for child in self._graph.dependents[step.id]:
            cslot = self._slots[child]
            cslot.waiting -= 1
            if cslot.waiting == 0 and cslot.state.status is StepStatus.PENDING:
                self.push_ready(cslot)
        return output

    def wait_to_retry(
        self, slot: Slot, error: StepError, attempt: int, delay_s: float, scope: anyio.CancelScope
    ) -> None:
        """The step waits, still `running`, for its next attempt (its timer under `scope`)."""
        self.set(slot, error=error)
        slot.scope = scope
        self.retrying.add(slot.step.id)
        self._journal.event(
            EventKind.STEP_RETRYING,
            slot.step.id,
            attempt=attempt,
            delay_s=round(delay_s, 3),
            error=error_json(error),
        )

    def retry_due(self, slot: Slot) -> None:
        """The step's wait is over: queue it again, if it still waits."""
        if slot.step.id in self.retrying:
            self.retrying.discard(slot.step.id)
            slot.scope = None
            self.push_ready(slot)

    def interrupt(
        self, slot: Slot, record: AttemptRecord, error: StepError, reason: str, at: datetime
    ) -> None:
        """The call may have taken effect and may not be repeated: wait for a decision."""
        self._journal.attempt_ended(record, StepStatus.INTERRUPTED, at, error)
        error = StepError(kind=error.kind, message=f"{error.message}; {reason}")
        self.set(slot, status=StepStatus.INTERRUPTED, error=error, finished_at=at)
        self._journal.event(
            EventKind.STEP_INTERRUPTED,
            slot.step.id,
            attempt=record.attempt,
            error=error_json(error),
        )

    def fail(self, slot: Slot, error: StepError, attempt: int, at: datetime | None = None) -> None:
        """The step failed for good."""
        self.set(slot, status=StepStatus.FAILED, error=error, finished_at=at or utc_now())
        self._journal.event(
            EventKind.STEP_FAILED, slot.step.id, attempt=attempt, error=error_json(error)
        )

    def stop(
        self,
        slot: Slot,
        status: StepStatus,
        error: StepError,
        at: datetime,
        record: AttemptRecord | None = None,
    ) -> None:
        """The run stopped the step mid-call or between attempts: it ends `status`."""
        if record is not None:
            self._journal.attempt_ended(record, status, at, error)
        self.set(slot, status=status, error=error, finished_at=at)
        kind = EventKind.STEP_FAILED if status is StepStatus.FAILED else EventKind.STEP_CANCELLED
        self._journal.event(
            kind, slot.step.id, attempt=slot.state.attempts, error=error_json(error)
        )

    def cancel_unrun(self, slot: Slot, at: datetime) -> None:
        """The run was cancelled before the step ran."""
        error = StepError(kind=ErrorKind.CANCELLED, message="not run: cancelled")
        self.set(slot, status=StepStatus.CANCELLED, error=error, finished_at=at)
        self._journal.event(EventKind.STEP_CANCELLED, slot.step.id, error=error_json(error))

    def skip(self, slot: Slot, reason: SkipReason, why: str) -> None:
        """The step will not run in this run, for `reason` (`why` says it to a reader)."""
        error = StepError(kind=ErrorKind.CANCELLED, message=f"not run: {why}")
        self.set(
            slot,
            status=StepStatus.SKIPPED,
            skip_reason=reason,
            error=error,
            finished_at=utc_now(),
        )
        self._journal.event(EventKind.STEP_SKIPPED, slot.step.id, reason=error.message)

    def skip_dependents(self, failed: str) -> None:
        """Skip every pending step that depends, however far down, on `failed`."""
        stack = list(self._graph.dependents[failed])
        while stack:
            sid = stack.pop()
            slot = self._slots[sid]
            if slot.state.status is not StepStatus.PENDING:
                continue
            why = f"it depends on step {failed!r}, which did not succeed"
            self.skip(slot, SkipReason.DEPENDENCY, why)
            stack.extend(self._graph.dependents[sid])
