"""Where plans, steps and runs stand: their states, transition tables and `check_transition()`.

Every change of a plan's or a step's status, and of a run's phase, goes through
the one `check_transition()`: a change missing from its table is a bug, never a
state.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Final, TypeVar

from executor.errors import TransitionError

__all__ = [
    "PLAN_TRANSITIONS",
    "RUN_TRANSITIONS",
    "STEP_TRANSITIONS",
    "PlanStatus",
    "RunPhase",
    "SkipReason",
    "StepStatus",
    "check_transition",
]


class PlanStatus(StrEnum):
    """Where a plan stands."""

    DRAFT = "draft"
    AWAITING_CONFIRMATION = "awaiting_confirmation"
    CONFIRMED = "confirmed"
    EXECUTING = "executing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    INTERRUPTED = "interrupted"
    """A run that needs a decision: a step may or may not have taken effect (a crash, or an
    ambiguous failure) and is not safe to repeat, and nothing that does not depend on it is
    left to run."""

    @property
    def is_terminal(self) -> bool:
        """Whether nothing more will happen without a new request."""
        return self in _PLAN_TERMINAL

    @property
    def is_settled(self) -> bool:
        """Whether it stays as it is until someone acts: following it can stop.

        Finished, or waiting for a decision: an approval, or what to do with an
        interrupted step.
        """
        return self in _PLAN_TERMINAL or self in _PLAN_WAITING


class StepStatus(StrEnum):
    """Where a step stands within one plan's run."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"
    """Its call may or may not have taken effect (in flight when the process died, or it
    failed without a clear answer), and it is not safe to run again unasked."""

    @property
    def is_terminal(self) -> bool:
        """Whether the step is done for this run."""
        return self in _STEP_TERMINAL


class SkipReason(StrEnum):
    """Why a step is `skipped`; only a skip by decision lets its dependents run."""

    DEPENDENCY = "dependency"
    """A step it depends on did not succeed (or its dependencies could never be met)."""
    STOPPED = "stopped"
    """The run stopped (a failure with `on_error='fail'`, or the deadline) before it ran."""
    DECISION = "decision"
    """Interrupted, then skipped by the caller's decision (`on_interrupted='skip'`):
    treated as done without an output, and never run again."""


class RunPhase(StrEnum):
    """Where one run of a plan stands in the process that runs it (see `executor.run`)."""

    QUEUED = "queued"
    """Waiting for a slot among the runs in progress (and for the caller's catalog)."""
    RUNNING = "running"
    """Dispatching steps as their dependencies succeed."""
    STOPPING = "stopping"
    """A failure, the deadline or a cancel: nothing new starts; the calls in flight end."""
    ENDING = "ending"
    """The plan's final status is in the write being committed."""
    ENDED = "ended"
    """The final status is committed (or the run never started: it waits for a decision)."""
    ABANDONED = "abandoned"
    """Stopped on an error, or lost to another process: nothing more is written, and the
    run is let go for whoever resumes it."""
    CLOSED = "closed"
    """The scheduler closed mid-run: stopped as a crash would stop it, resumed at the next
    start."""

    @property
    def is_terminal(self) -> bool:
        """Whether the run has stopped here for good."""
        return not RUN_TRANSITIONS[self]


_PLAN_TERMINAL: Final = frozenset(
    {PlanStatus.COMPLETED, PlanStatus.FAILED, PlanStatus.CANCELLED, PlanStatus.REJECTED}
)
_PLAN_WAITING: Final = frozenset(
    {PlanStatus.DRAFT, PlanStatus.AWAITING_CONFIRMATION, PlanStatus.INTERRUPTED}
)
_STEP_TERMINAL: Final = frozenset(
    {
        StepStatus.SUCCEEDED,
        StepStatus.FAILED,
        StepStatus.SKIPPED,
        StepStatus.CANCELLED,
        StepStatus.INTERRUPTED,
    }
)

P = PlanStatus
S = StepStatus
R = RunPhase

PLAN_TRANSITIONS: dict[PlanStatus, frozenset[PlanStatus]] = {
    # Auto-approval goes straight from draft to confirmed.
    P.DRAFT: frozenset({P.AWAITING_CONFIRMATION, P.CONFIRMED, P.REJECTED}),
    P.AWAITING_CONFIRMATION: frozenset({P.CONFIRMED, P.REJECTED}),
    P.CONFIRMED: frozenset({P.EXECUTING, P.CANCELLED}),
    P.EXECUTING: frozenset({P.COMPLETED, P.FAILED, P.CANCELLED, P.INTERRUPTED}),
    # A decision (rerun / skip) resumes an interrupted run; cancel gives up on it.
    P.INTERRUPTED: frozenset({P.EXECUTING, P.CANCELLED}),
    # Executing a failed plan again re-runs only what failed or was skipped.
    P.FAILED: frozenset({P.EXECUTING}),
    P.COMPLETED: frozenset(),
    P.CANCELLED: frozenset(),
    P.REJECTED: frozenset(),
}
"""Every legal plan status change; anything else is a bug."""

STEP_TRANSITIONS: dict[StepStatus, frozenset[StepStatus]] = {
    S.PENDING: frozenset({S.RUNNING, S.SKIPPED, S.CANCELLED}),
    # RUNNING -> PENDING: an idempotent step found in flight after a crash is queued again.
    S.RUNNING: frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED, S.INTERRUPTED, S.PENDING}),
    S.SUCCEEDED: frozenset(),
    # Re-running a failed plan re-queues its failed, skipped and cancelled steps.
    S.FAILED: frozenset({S.PENDING}),
    S.SKIPPED: frozenset({S.PENDING}),
    S.CANCELLED: frozenset({S.PENDING}),
    # The decision on an interrupted step: run it again, or skip it.
    S.INTERRUPTED: frozenset({S.PENDING, S.SKIPPED}),
}
"""Every legal step status change; anything else is a bug."""

RUN_TRANSITIONS: dict[RunPhase, frozenset[RunPhase]] = {
    # QUEUED -> ENDED: a run that does not start (it waits for a decision, or a cancel
    # request stood when it was taken over) is a handle on its report alone.
    R.QUEUED: frozenset({R.RUNNING, R.ENDED, R.ABANDONED, R.CLOSED}),
    R.RUNNING: frozenset({R.STOPPING, R.ENDING, R.ABANDONED, R.CLOSED}),
    R.STOPPING: frozenset({R.ENDING, R.ABANDONED, R.CLOSED}),
    # The final write may fail (ABANDONED) or be cut off by a shutdown (CLOSED): either
    # way the plan is still executing in the store.
    R.ENDING: frozenset({R.ENDED, R.ABANDONED, R.CLOSED}),
    R.ENDED: frozenset(),
    R.ABANDONED: frozenset(),
    R.CLOSED: frozenset(),
}
"""Every legal change of a run's phase; anything else is a bug."""

_TABLES: Final[dict[type, dict[Any, frozenset[Any]]]] = {
    PlanStatus: PLAN_TRANSITIONS,
    StepStatus: STEP_TRANSITIONS,
    RunPhase: RUN_TRANSITIONS,
}

_State = TypeVar("_State", PlanStatus, StepStatus, RunPhase)


def check_transition(current: _State, target: _State) -> _State:
    """Check that a status (or a run's phase) may change from `current` to `target`.

    Args:
        current: The status now.
        target: The status wanted.

    Returns:
        `target`, so a caller can write `status = check_transition(status, new)`.

    Raises:
        TransitionError: The change is not in the transition table.
    """
    table = _TABLES[type(current)]
    if type(current) is not type(target) or target not in table[current]:
        raise TransitionError(
            f"illegal {type(current).__name__} transition {current.value!r} -> {target.value!r}"
        )
    return target
