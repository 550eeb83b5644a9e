"""What a run tells: its report (`ExecutionReport`, a `StepReport` per step) and progress.

A report lists every step with its outcome, says why the run ended or what it
waits for (`message`), and which interrupted steps await a decision
(`needs_decision`). `ExecutionProgress` is the cheap snapshot taken at every
event: counts per status, percent, elapsed time and the ETA.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from executor.ids import PlanId
from executor.outputs import OutputSummary
from executor.plan import Plan, StepError, utc_now
from executor.records import StepState
from executor.status import PlanStatus, StepStatus

__all__ = [
    "ExecutionProgress",
    "ExecutionReport",
    "StepReport",
    "build_report",
    "count_statuses",
    "interrupted_message",
    "progress_of",
    "progress_snapshot",
]


class StepReport(BaseModel):
    """One step's outcome in an `ExecutionReport`."""

    model_config = ConfigDict(frozen=True)

    id: str
    """The step id."""
    server: str
    """The server it calls."""
    tool: str
    """The tool it calls."""
    status: StepStatus
    """Where it stands."""
    attempts: int
    """Attempts made, over every run of the plan."""
    duration_s: float | None
    """Seconds from its first attempt of the latest run to its end, when both are known."""
    output: Any = None
    """Its output, when it succeeded and is small (`summary.inline`)."""
    error: StepError | None = None
    """Why it failed, was skipped, cancelled or interrupted."""
    summary: OutputSummary | None = None
    """Size, beginning, shape and content blocks of its output, when it succeeded."""


class ExecutionReport(BaseModel):
    """Where a plan's run stands, or how it ended, step by step."""

    model_config = ConfigDict(frozen=True)

    plan_id: PlanId
    """The plan."""
    version: int
    """The version that ran."""
    status: PlanStatus
    """The plan's status."""
    started_at: datetime | None = None
    """When the latest run started."""
    finished_at: datetime | None = None
    """When it ended (`None` while running)."""
    duration_s: float | None = None
    """Seconds from start to end, when both are known."""
    counts: dict[StepStatus, int]
    """Steps in each status (every status present)."""
    steps: tuple[StepReport, ...]
    """Every step, in plan order."""
    message: str | None = None
    """Anything the caller should know, such as what decision an interrupted plan awaits."""
    needs_decision: tuple[str, ...] = ()
    """Interrupted steps (by a crash, or an ambiguous failure) that await `on_interrupted`
    (`rerun` or `skip`)."""


class ExecutionProgress(BaseModel):
    """A snapshot of where a run stands."""

    model_config = ConfigDict(frozen=True)

    plan_id: PlanId
    """The plan being run."""
    status: PlanStatus
    """The plan's status."""
    total: int
    """Steps in the plan."""
    counts: dict[StepStatus, int]
    """Steps in each status (every status present, zeros included)."""
    completed: int
    """Steps that succeeded."""
    failed: int
    """Steps that failed."""
    running: int
    """Steps in flight."""
    running_steps: tuple[str, ...] = ()
    """Ids of the steps in flight."""
    percent: float
    """Share of steps that are done (any terminal status), 0 to 100."""
    elapsed_s: float
    """Seconds since the run started (0 before it does)."""
    eta_s: float | None
    """Estimated seconds left; `None` when nothing is known to estimate from."""


def count_statuses(states: Collection[StepState]) -> dict[StepStatus, int]:
    """Steps in each status, every status present."""
    counts = dict.fromkeys(StepStatus, 0)
    for s in states:
        counts[s.status] += 1
    return counts


def progress_snapshot(
    plan_id: PlanId,
    status: PlanStatus,
    total: int,
    counts: dict[StepStatus, int],
    running_steps: tuple[str, ...],
    elapsed_s: float,
    eta_s: float | None,
) -> ExecutionProgress:
    """The progress snapshot of a run of `total` steps, with these counts (every status)."""
    done = sum(n for st, n in counts.items() if st.is_terminal)
    return ExecutionProgress(
        plan_id=plan_id,
        status=status,
        total=total,
        counts=counts,
        completed=counts[StepStatus.SUCCEEDED],
        failed=counts[StepStatus.FAILED],
        running=counts[StepStatus.RUNNING],
        running_steps=running_steps,
        percent=100.0 * done / total if total else 100.0,
        elapsed_s=elapsed_s,
        eta_s=eta_s,
    )


def progress_of(
    plan: Plan,
    status: PlanStatus,
    states: Mapping[str, StepState],
    started_at: datetime | None,
    finished_at: datetime | None,
    eta_s: float | None,
) -> ExecutionProgress:
    """The snapshot of `plan`'s run from its step states and run times (not a live run's).

    Time runs until `finished_at` once the plan is finished, else until now.
    """
    listed = [states[s.id] for s in plan.steps if s.id in states]
    elapsed = 0.0
    if started_at is not None:
        end = finished_at if finished_at is not None and status.is_terminal else utc_now()
        elapsed = max((end - started_at).total_seconds(), 0.0)
    return progress_snapshot(
        plan.id,
        status,
        len(plan.steps),
        count_statuses(listed),
        tuple(s.step_id for s in listed if s.status is StepStatus.RUNNING),
        elapsed,
        eta_s,
    )


def build_report(
    plan: Plan,
    states: Mapping[str, StepState],
    status: PlanStatus,
    started_at: datetime | None,
    finished_at: datetime | None,
    message: str | None = None,
) -> ExecutionReport:
    """The report of `plan` with these step states; an interrupted plan says what it awaits."""
    steps = []
    for step in plan.steps:
        st = states.get(step.id) or StepState(
            plan_id=plan.id, version=plan.version, step_id=step.id
        )
        steps.append(
            StepReport(
                id=step.id,
                server=step.server,
                tool=step.tool,
                status=st.status,
                attempts=st.attempts,
                duration_s=st.duration_s,
                output=st.output,
                error=st.error,
                summary=st.summary,
            )
        )
    duration = None
    if started_at is not None and finished_at is not None:
        duration = (finished_at - started_at).total_seconds()
    needs = tuple(s.id for s in steps if s.status is StepStatus.INTERRUPTED)
    if status is PlanStatus.INTERRUPTED and message is None and needs:
        message = interrupted_message(needs)
    listed = [s for s in (states.get(x.id) for x in plan.steps) if s is not None]
    return ExecutionReport(
        plan_id=plan.id,
        version=plan.version,
        status=status,
        started_at=started_at,
        finished_at=finished_at,
        duration_s=duration,
        counts=count_statuses(listed),
        steps=tuple(steps),
        message=message,
        needs_decision=needs if status is PlanStatus.INTERRUPTED else (),
    )


def interrupted_message(step_ids: Collection[str]) -> str:
    """What an interrupted plan waits for: a decision on these steps."""
    names = ", ".join(repr(s) for s in sorted(step_ids))
    return (
        f"the plan waits for a decision: step(s) {names} may or may not have taken effect "
        "(each step's error says why), and their tools are not annotated idempotent or "
        "read-only; everything that does not depend on them has run. Execute the plan "
        "again with on_interrupted='rerun' (call them again, possibly repeating their "
        "effect) or on_interrupted='skip' (treat them as done without an output and go on)"
    )
