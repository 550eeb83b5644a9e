"""Following a run that another process holds: its events and state, read through the store.

`Scheduler.start()` of a plan that another live process runs gives a
`FollowedRun` instead of refusing: a handle with a run's face (`wait`,
`subscribe`, `report`, `progress`) that reads the plan's events as the store
feeds them (`Store.follow_events`; on PostgreSQL, notifications carry them
across replicas, progress included). It writes nothing and calls nothing: if
the owner dies, whichever process takes the run over (this one's `resume()`
included) writes the events it follows on. It ends once the plan leaves
`executing`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import suppress
from datetime import datetime
from typing import Final

import anyio

from executor.ids import PlanId
from executor.plan import Plan
from executor.records import Event, EventKind, StepState
from executor.run.reports import (
    ExecutionProgress,
    ExecutionReport,
    build_report,
    progress_of,
)
from executor.run.subscriptions import Subscribers, Subscription
from executor.status import PlanStatus
from executor.store.base import Store

__all__ = ["FollowedRun"]

logger = logging.getLogger(__name__)

_LOOK_S: Final = 1.0
"""Longest a follower goes without asking whether the plan is still executing."""
_RETRY_S: Final = 1.0
"""How long a follower waits after the store failed to answer."""


class FollowedRun:
    """A run another process holds, followed through the store (see the module docs).

    Attributes:
        plan: The plan version being run.
        owner: Who ran it when following began, in a clause.
    """

    def __init__(
        self,
        store: Store,
        plan: Plan,
        states: Mapping[str, StepState],
        *,
        started_at: datetime | None,
        owner: str,
        after_seq: int,
        buffer: int,
    ) -> None:
        """Prepare to follow from event `after_seq` on; `follow()` does the following."""
        self.plan = plan
        self.owner = owner
        self._store = store
        self._states = dict(states)
        self._status = PlanStatus.EXECUTING
        self._started_at = started_at
        self._finished_at: datetime | None = None
        self._after = after_seq
        self._subscribers = Subscribers(plan.id, buffer)
        self._done = anyio.Event()

    @property
    def plan_id(self) -> PlanId:
        """The plan followed."""
        return self.plan.id

    @property
    def version(self) -> int:
        """The plan version followed."""
        return self.plan.version

    @property
    def done(self) -> bool:
        """Whether the plan has left `executing` (or following stopped)."""
        return self._done.is_set()

    def subscribe(self) -> Subscription:
        """Follow the run's events from now on (see `Subscription`)."""
        if self.done:
            return Subscription.ended(self.plan.id)
        return self._subscribers.add()

    async def wait(self) -> ExecutionReport:
        """Wait until the plan leaves `executing`, and return its report."""
        await self._done.wait()
        return self.report()

    def report(self) -> ExecutionReport:
        """The report as the followed run stands now (final once `done`)."""
        message = None
        if self._status is PlanStatus.EXECUTING:
            message = f"the plan is executing in another process: {self.owner}"
        return build_report(
            self.plan, self._states, self._status, self._started_at, self._finished_at, message
        )

    def progress(self) -> ExecutionProgress:
        """A snapshot of where the followed run stands (no ETA: the owner has the history)."""
        return progress_of(
            self.plan,
            self._status,
            self._states,
            self._started_at,
            self._finished_at,
            0.0 if self._status.is_terminal else None,
        )

    async def follow(self) -> None:
        """Read the plan's events until it leaves `executing`; hand each to the subscribers."""
        try:
            async with self._store.follow_events(self.plan.id, after_seq=self._after) as feed:
                while True:
                    ended = await self._ended()
                    try:
                        # Once it has ended, what is left of its events is read at once.
                        events = await feed.next(timeout_s=0 if ended else _LOOK_S)
                    except Exception as error:
                        logger.warning("following plan %s: %s; trying again", self.plan.id, error)
                        await anyio.sleep(_RETRY_S)
                        continue
                    if events:
                        await self._take(events)
                    elif ended:
                        return
        finally:
            self._subscribers.close()
            self._done.set()

    async def _take(self, events: list[Event]) -> None:
        """Bring the states up to date with `events`, then pass the events on."""
        if any(e.kind is not EventKind.STEP_PROGRESS for e in events):
            with suppress(Exception):  # a failed read leaves the last states until the next
                self._states = await self._store.get_step_states(self.plan.id, self.plan.version)
        self._subscribers.publish(events)

    async def _ended(self) -> bool:
        """Whether the plan has left `executing`; if so, read how it stands."""
        try:
            if await self._store.get_lease(self.plan.id, self.plan.version) is not None:
                return False
            plan = await self._store.get_plan(self.plan.id, self.plan.version)
            self._states = await self._store.get_step_states(self.plan.id, self.plan.version)
            self._started_at, self._finished_at = await self._store.get_run_times(
                self.plan.id, self.plan.version
            )
        except Exception as error:
            logger.warning("following plan %s: %s; trying again", self.plan.id, error)
            await anyio.sleep(_RETRY_S)
            return False
        self._status = plan.status
        return True
