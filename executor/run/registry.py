"""The runs going on in this process: at most one per plan, and the plans being started."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from executor.ids import PlanId

if TYPE_CHECKING:
    from executor.run.coordinator import Run

__all__ = ["Runs"]


class Runs:
    """The active runs of one scheduler, by plan, and the plans being started."""

    def __init__(self) -> None:
        self._runs: dict[str, Run] = {}
        self._starting: set[str] = set()

    def get(self, plan_id: str) -> Run | None:
        """The plan's active run here, if any."""
        return self._runs.get(plan_id)

    def all(self) -> list[Run]:
        """Every active run here."""
        return list(self._runs.values())

    def plan_ids(self) -> list[PlanId]:
        """The plans with an active run here."""
        return [PlanId(p) for p in self._runs]

    def add(self, run: Run) -> None:
        """Count `run` as the plan's active run."""
        self._runs[run.plan_id] = run

    def forget(self, run: Run) -> None:
        """`run` has stopped: the plan has no active run here (unless a later one)."""
        if self._runs.get(run.plan_id) is run:
            del self._runs[run.plan_id]

    def busy(self, plan_id: str) -> bool:
        """Whether the plan runs here or is being started."""
        return plan_id in self._runs or plan_id in self._starting

    def is_starting(self, plan_id: str) -> bool:
        """Whether the plan is being started (or resumed) here right now."""
        return plan_id in self._starting

    @contextmanager
    def starting(self, plan_id: str) -> Iterator[None]:
        """Mark the plan as being started while the block runs."""
        self._starting.add(plan_id)
        try:
            yield
        finally:
            self._starting.discard(plan_id)
