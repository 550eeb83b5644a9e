"""How a run ends: what becomes of the steps it stops, and the plan's status and message.

A run ends by itself once nothing more can run, or is stopped: by a step that
fails with `on_error='fail'`, by its deadline, or by a cancel (which outranks
the other two). A stopped run's calls in flight end `failed` (deadline) or
`cancelled`; its steps not yet run are skipped, or cancelled with the run.
The coordinator decides when; `finish` records the end.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from executor.errors import ErrorKind
from executor.plan import Plan, StepError
from executor.records import EventKind
from executor.run.journal import Journal
from executor.run.reports import interrupted_message
from executor.run.steps import Slot, Steps
from executor.run.tasks import StopReason
from executor.status import PlanStatus, SkipReason, StepStatus
from executor.store.base import PlanStatusChange

__all__ = ["StopCause", "end_status", "finish"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StopCause:
    """Why a run stopped before everything had run."""

    reason: StopReason
    culprit: str | None = None
    """The step whose failure stopped the run (`StopReason.FAIL`)."""
    deadline_s: float | None = None
    """The run's deadline (`StopReason.DEADLINE`)."""

    def _deadline_passed(self) -> str:
        return f"the plan's deadline of {self.deadline_s:g} s passed"

    def in_flight_end(self) -> tuple[StepStatus, StepError]:
        """How a step in flight (or waiting to retry) ends."""
        if self.reason is StopReason.DEADLINE:
            return StepStatus.FAILED, StepError(
                kind=ErrorKind.TIMEOUT, message=self._deadline_passed()
            )
        if self.reason is StopReason.FAIL:
            return StepStatus.CANCELLED, StepError(
                kind=ErrorKind.CANCELLED,
                message=f"cancelled because step {self.culprit!r} failed (on_error='fail')",
            )
        return StepStatus.CANCELLED, StepError(
            kind=ErrorKind.CANCELLED, message="cancelled: the execution was cancelled"
        )

    def not_run_skip(self) -> tuple[SkipReason, str] | None:
        """Why a step not yet run is skipped; `None` when it is cancelled with the run."""
        if self.reason is StopReason.DEADLINE:
            return SkipReason.STOPPED, self._deadline_passed()
        if self.reason is StopReason.FAIL:
            return SkipReason.STOPPED, f"the plan failed when step {self.culprit!r} failed"
        return None

    def outcome(self, waiting: Collection[str]) -> tuple[PlanStatus, str]:
        """The plan's status and message, with `waiting` the steps left interrupted."""
        if self.reason is StopReason.DEADLINE:
            message = self._deadline_passed()
        elif self.reason is StopReason.FAIL:
            message = f"step {self.culprit!r} failed"
        else:
            return PlanStatus.CANCELLED, "cancelled on request"
        if waiting:
            names = ", ".join(repr(s) for s in sorted(waiting))
            message += (
                f"; step(s) {names} may or may not have taken effect: executing the plan "
                "again asks for a decision on them"
            )
        return PlanStatus.FAILED, message


def end_status(
    stop: StopCause | None, waiting: Collection[str], all_satisfied: bool
) -> tuple[PlanStatus, str | None]:
    """The plan's status as its run ends, and why.

    Args:
        stop: Why the run was stopped; `None` when it ran until nothing more could.
        waiting: The steps left interrupted, waiting for a decision.
        all_satisfied: Whether every step succeeded or was skipped by decision.
    """
    if stop is not None:
        return stop.outcome(waiting)
    if waiting:
        return PlanStatus.INTERRUPTED, interrupted_message(waiting)
    return (PlanStatus.COMPLETED if all_satisfied else PlanStatus.FAILED), None


def finish(
    plan: Plan,
    steps: Steps,
    journal: Journal,
    stop: StopCause | None,
    started_at: datetime,
    now: datetime,
) -> tuple[PlanStatus, str | None]:
    """End a run with nothing in flight: its unfinished steps, then the plan.

    Records it all, with the `plan_finished` event, in `journal`.

    Args:
        plan: The plan version run.
        steps: Its steps, none of them in flight.
        journal: Where the run's writes go.
        stop: Why the run was stopped; `None` when nothing more could run.
        started_at: When the run started.
        now: When it ends.

    Returns:
        The plan's status, and why it ended so.
    """
    leftover = [s for s in steps if not s.state.status.is_terminal]
    waiting = steps.interrupted()
    if stop is None and waiting:
        # Nothing else can run: what is left depends on steps awaiting a decision.
        leftover = []
    if stop is None and leftover:
        # Unreachable while dependencies are tracked right; finishing beats hanging.
        logger.error("plan %s: steps %s could never run", plan.id, leftover)
    for slot in leftover:
        _end_leftover(steps, slot, stop, now)
    status, message = end_status(stop, waiting, steps.all_satisfied())
    journal.plan_status(
        PlanStatusChange(plan_id=plan.id, version=plan.version, status=status, finished_at=now)
    )
    journal.event(
        EventKind.PLAN_FINISHED,
        status=status.value,
        counts={k.value: v for k, v in steps.counts.items()},
        duration_s=round((now - started_at).total_seconds(), 6),
        message=message,
    )
    return status, message


def _end_leftover(steps: Steps, slot: Slot, stop: StopCause | None, now: datetime) -> None:
    """End a step the run stops without having run (or finished)."""
    if slot.state.status is StepStatus.RUNNING:
        # Queued for a retry when the stop came: it ends like a step in flight.
        steps.stop(slot, *(stop or StopCause(StopReason.CANCEL)).in_flight_end(), now)
    elif stop is None:
        why = "its dependencies could never be satisfied (a bug)"
        steps.skip(slot, SkipReason.DEPENDENCY, why)
    elif (skip := stop.not_run_skip()) is not None:
        steps.skip(slot, *skip)
    else:
        steps.cancel_unrun(slot, now)
