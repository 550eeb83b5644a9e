"""How a run ends: what becomes of the steps it stops, and the plan's status and message.

A run ends by itself once nothing more can run, or is stopped: by a step that
fails with `on_error='fail'`, by its deadline, or by a cancel (which outranks
the other two). A stopped run's calls in flight end `failed` (deadline) or
`cancelled`; its steps not yet run are skipped, or cancelled with the run.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from executor.errors import ErrorKind
from executor.plan import StepError
from executor.run.reports import interrupted_message
from executor.run.tasks import StopReason
from executor.status import PlanStatus, SkipReason, StepStatus

__all__ = ["StopCause", "end_status"]


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
