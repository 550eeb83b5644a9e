"""Cancel requests between processes, and cancelling a run that no process runs.

`cancel()` of a run another live process holds writes a request on the plan
version (`Store.request_cancel`). Every scheduler waits for requests on the
runs it holds (`Store.wait_cancel_requests`) and cancels such a run as if
`cancel()` were called here. A request outlives its asker and a crash of the
owner: whoever takes the run over cancels it instead of resuming it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

import anyio

from executor.errors import ErrorKind
from executor.ids import PlanId
from executor.plan import Plan, StepError, utc_now
from executor.records import Event, EventKind
from executor.status import PlanStatus, StepStatus
from executor.store.base import ExpectedPlanStatus, PlanStatusChange, Store, WriteBatch

if TYPE_CHECKING:
    from executor.run.coordinator import Run

__all__ = ["CancelWatcher", "cancel_in_store"]

logger = logging.getLogger(__name__)

_LOOK_AGAIN_S = 1.0
"""How long to wait after the store failed to say whether there are cancel requests."""


async def cancel_in_store(
    store: Store, plan: Plan, expect: ExpectedPlanStatus | None = None
) -> None:
    """Cancel a plan no process runs, by writing it `cancelled` with its unfinished steps.

    Raises:
        TransitionError: The plan may not be cancelled from its stored status, or
            `expect` does not hold; nothing is written.
    """
    states = await store.get_step_states(plan.id, plan.version)
    now = utc_now()
    batch = WriteBatch()
    error = StepError(kind=ErrorKind.CANCELLED, message="not run: cancelled")
    for st in states.values():
        if st.status in (StepStatus.PENDING, StepStatus.RUNNING):
            batch.step_states.append(
                st.model_copy(
                    update={"status": StepStatus.CANCELLED, "error": error, "finished_at": now}
                )
            )
    batch.plan_status = PlanStatusChange(
        plan_id=plan.id, version=plan.version, status=PlanStatus.CANCELLED, finished_at=now
    )
    batch.events = [
        Event(
            plan_id=plan.id,
            kind=EventKind.PLAN_FINISHED,
            data={"status": PlanStatus.CANCELLED.value, "message": "cancelled on request"},
        )
    ]
    batch.expect = expect
    await store.write(batch)


class CancelWatcher:
    """Cancels the runs here that another process asked to cancel."""

    def __init__(self, store: Store, poll_s: float) -> None:
        self._store = store
        self._poll_s = poll_s
        self._scope: anyio.CancelScope | None = None

    def wake(self) -> None:
        """A run started here: watch it too (the wait starts again)."""
        if self._scope is not None:
            self._scope.cancel()

    async def watch(self, runs: Callable[[], Collection[Run]]) -> None:
        """Wait for requests on `runs()`, asked again after each wake, and cancel those runs.

        The store says when one of the runs it is given has a request; a run that
        starts here restarts the wait, so that it is watched too.
        """
        while True:
            watched = {
                (r.plan_id, r.version): r for r in runs() if not r.done and not r.cancel_requested
            }
            asked: set[tuple[PlanId, int]] = set()
            with anyio.CancelScope() as scope:
                self._scope = scope
                try:
                    if watched:
                        asked = await self._store.wait_cancel_requests(
                            set(watched), poll_s=self._poll_s
                        )
                    else:
                        await anyio.sleep_forever()
                except Exception as error:
                    logger.warning("could not look for cancel requests (%s); looking again", error)
                    await anyio.sleep(_LOOK_AGAIN_S)
            self._scope = None
            for key in asked:
                run = watched.get(key)
                if run is not None:
                    logger.info("plan %s: another process asked to cancel the run", key[0])
                    run.cancel()
