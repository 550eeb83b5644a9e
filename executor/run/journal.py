"""A run's next write: the changes its coordinator has decided, and the events they make.

Everything is written in one `WriteBatch`, on condition that the plan version
is still executing and still held by this process; then the events go to the
run's subscribers with the `seq` the store gave them. `step_progress` events
are live only: subscribers get them, and followers in other processes where
the store can carry them (`Store.publish_live`); the store keeps none.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from executor.errors import TransitionError, UserError
from executor.ids import PlanId
from executor.plan import StepError
from executor.records import AttemptRecord, Event, EventKind, StepState
from executor.run.subscriptions import Subscribers
from executor.status import StepStatus
from executor.store.base import ExpectedPlanStatus, PlanStatusChange, Store, WriteBatch

__all__ = ["Journal", "error_json"]

logger = logging.getLogger(__name__)


def error_json(error: StepError | None) -> dict[str, str] | None:
    """A step error as event data."""
    return None if error is None else {"kind": error.kind.value, "message": error.message}


class Journal:
    """What one run has decided since its last write, and how it gets written."""

    def __init__(
        self, plan_id: PlanId, store: Store, expect: ExpectedPlanStatus, subscribers: Subscribers
    ) -> None:
        self._plan_id = plan_id
        self._store = store
        self._expect = expect
        self._subscribers = subscribers
        self._batch = WriteBatch()
        self._events: list[Event] = []

    def event(self, kind: EventKind, step_id: str | None = None, **data: Any) -> None:
        """Record an event of the run."""
        self._events.append(Event(plan_id=self._plan_id, kind=kind, step_id=step_id, data=data))

    def step(self, state: StepState) -> None:
        """Record a step's new state (a later one of the same step replaces it)."""
        self._batch.step_states.append(state)

    def attempt(self, record: AttemptRecord) -> None:
        """Record an attempt as it now stands (a later one of the same attempt replaces it)."""
        self._batch.attempts.append(record)

    def attempt_ended(
        self,
        record: AttemptRecord,
        status: StepStatus,
        finished_at: datetime,
        error: StepError | None = None,
    ) -> None:
        """Record that an attempt ended, and how."""
        self.attempt(
            record.model_copy(update={"status": status, "finished_at": finished_at, "error": error})
        )

    def duration(self, server: str, tool: str, seconds: float) -> None:
        """Record a successful call's duration, for the tool's statistics."""
        self._batch.durations.append((server, tool, seconds))

    def plan_status(self, change: PlanStatusChange) -> None:
        """Record the plan's status change (the run's end)."""
        self._batch.plan_status = change

    async def commit(self) -> None:
        """Write everything recorded in one transaction, then publish its events.

        Raises:
            UserError: Another process changed the plan or took the run: nothing
                was written, and the run must stop.
            StoreError: The write failed.
        """
        batch, self._batch = self._batch, WriteBatch()
        events, self._events = self._events, []
        batch.events = [e for e in events if e.kind is not EventKind.STEP_PROGRESS]
        batch.expect = self._expect
        if len(batch.step_states) > 1:
            # A step can change twice in one batch (retrying, then stopped); the last wins.
            batch.step_states = list({s.step_id: s for s in batch.step_states}.values())
        if len(batch.attempts) > 1:
            batch.attempts = list({(a.step_id, a.attempt): a for a in batch.attempts}.values())
        try:
            if batch.events and self._subscribers:
                stored = iter(await self._store.write_returning_events(batch))
                # Hand subscribers the events with the seq the store gave them.
                events = [e if e.kind is EventKind.STEP_PROGRESS else next(stored) for e in events]
            elif batch:
                await self._store.write(batch)
        except TransitionError as exc:
            # Another process changed the plan (cancelled it, say): the run stops here.
            raise UserError(
                f"the run of plan {self._plan_id!r} stopped: {exc}; "
                "look at the plan again before doing anything with it"
            ) from exc
        self._subscribers.publish(events)
        if len(batch.events) < len(events):
            await self._publish_live([e for e in events if e.kind is EventKind.STEP_PROGRESS])

    async def _publish_live(self, events: list[Event]) -> None:
        """Pass progress on to other processes' followers, where the store can; best effort."""
        try:
            await self._store.publish_live(events)
        except Exception as error:
            logger.debug("could not pass progress on to other processes: %s", error)
