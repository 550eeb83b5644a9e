"""Following a run: its events with the progress after each, as MCP notifications or updates.

`forward_progress` turns a run's events into MCP progress notifications
(increasing, as MCP requires, with a line of text each); `forward_updates`
hands each event and the progress after it to a subscriber; `poll` follows a
plan from the store's event log, wherever it runs. A subscriber that fails
stops getting updates; the run goes on.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from executor import PlanStatus, StepStatus
from executor._utils import leaf_exceptions
from executor.records import Event, EventKind
from server.views import ProgressView, progress_view

if TYPE_CHECKING:
    from typing import TypeAlias

    from executor import ExecutionReport, ProgressFn, Run, Scheduler, Store, Subscription
    from executor.run import FollowedRun

    AnyRun: TypeAlias = Run | FollowedRun
    """A run here, or one another process holds and this one follows."""

__all__ = [
    "ProgressUpdate",
    "UpdateFn",
    "event_message",
    "forward_progress",
    "forward_updates",
    "poll",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ProgressUpdate:
    """One event of a run, with the progress just after it.

    Attributes:
        event: What happened (`step_started`, `step_progress`, `plan_finished`, ...).
        progress: Where the run stands.
    """

    event: Event
    progress: ProgressView


UpdateFn = Callable[[ProgressUpdate], Awaitable[None]]
"""Receives each event of a run with the progress after it."""


async def follow(
    run: AnyRun, *, on_progress: ProgressFn | None = None, on_update: UpdateFn | None = None
) -> ExecutionReport:
    """Wait for a run to end, forwarding its events meanwhile; its report.

    Raises:
        Exception: What the run raised (a store failure, say), not nested in a group.
    """
    subscriptions: list[Subscription] = []
    try:
        async with anyio.create_task_group() as tg:
            if on_progress is not None:
                subscriptions.append(sub := run.subscribe())
                tg.start_soon(forward_progress, run, sub, on_progress)
            if on_update is not None:
                subscriptions.append(sub := run.subscribe())
                tg.start_soon(forward_updates, run, sub, on_update)
            try:
                report = await run.wait()
            finally:
                for sub in subscriptions:
                    sub.close()
    except ExceptionGroup as group:
        leaves = leaf_exceptions(group)
        if len(leaves) == 1 and isinstance(leaves[0], Exception):
            raise leaves[0] from None
        raise
    return report


async def forward_progress(
    run: AnyRun, subscription: Subscription, on_progress: ProgressFn
) -> None:
    """Turn a run's events into increasing (progress, total, message) reports."""
    total = float(len(run.plan.steps)) or 1.0
    fractions: dict[str, float] = {}
    last = -1.0
    broken = False
    async for event in subscription:
        if broken:
            continue  # keep draining, so the run's buffer is not held
        snapshot = run.progress()
        done = float(
            sum(n for status, n in snapshot.counts.items() if StepStatus(status).is_terminal)
        )
        step = event.step_id
        if event.kind is EventKind.STEP_PROGRESS and step is not None:
            p, t = event.data.get("progress"), event.data.get("total")
            if isinstance(p, int | float) and isinstance(t, int | float) and t > 0:
                fractions[step] = min(max(float(p) / float(t), 0.0), 0.99)
        elif step is not None and event.kind is not EventKind.STEP_STARTED:
            fractions.pop(step, None)
        running = set(snapshot.running_steps)
        partial = sum(f for s, f in fractions.items() if s in running)
        value = min(done + partial, total)
        # MCP requires each notification's progress to be larger than the last.
        value = value if value > last else math.nextafter(last, math.inf)
        last = value
        try:
            # A downstream progress message is the server's text: keep it to a line.
            await on_progress(value, total, event_message(event, run)[:500])
        except Exception:
            # The client went away or cannot take notifications: the run goes on.
            logger.debug("progress could not be forwarded", exc_info=True)
            broken = True


async def forward_updates(run: AnyRun, subscription: Subscription, on_update: UpdateFn) -> None:
    """Hand each event of a run, with the progress after it, to `on_update`."""
    broken = False
    async for event in subscription:
        if broken:
            continue
        try:
            await on_update(ProgressUpdate(event, progress_view(run.progress())))
        except Exception:
            logger.exception("a progress subscriber failed; it gets no more updates")
            broken = True


async def poll(
    store: Store, scheduler: Scheduler, plan_id: str, *, interval_s: float
) -> AsyncIterator[ProgressUpdate]:
    """Follow a plan from the store's event log, wherever it runs, until it stops.

    Yields each new stored event with the progress then, and stops once the
    plan is finished, rejected or waiting for a decision, or once nobody runs
    it any more (`executing`, but its owner is gone).

    Raises:
        NotFoundError: No such plan.
    """
    plan = await store.get_plan(plan_id)
    after = 0
    while True:
        events = await store.get_events(plan.id, after_seq=after)
        progress = progress_view(await scheduler.progress(plan.id))
        for event in events:
            after = max(after, event.seq)
            yield ProgressUpdate(event, progress)
        if progress.status.is_settled:
            if not events:
                return
            continue
        if progress.status is PlanStatus.EXECUTING and not events:
            owner = await scheduler.owner(plan.id)
            if owner is not None and not owner.holds:
                return  # nothing will happen until someone takes the run over
        await anyio.sleep(interval_s)


def event_message(event: Event, run: AnyRun) -> str:
    """One line saying what an event of `run` was, naming the step's tool."""
    step = event.step_id
    where = ""
    if step is not None:
        with contextlib.suppress(KeyError):
            s = run.plan.step(step)
            where = f" ({s.server}.{s.tool})"
    data = event.data
    match event.kind:
        case EventKind.STEP_STARTED:
            return f"{step}{where}: started"
        case EventKind.STEP_PROGRESS:
            detail = data.get("message")
            if not detail:
                p, t = data.get("progress"), data.get("total")
                detail = f"{p}/{t}" if t is not None else f"{p}"
            return f"{step}{where}: {detail}"
        case EventKind.STEP_SUCCEEDED:
            return f"{step}{where}: succeeded"
        case EventKind.STEP_FAILED | EventKind.STEP_CANCELLED | EventKind.STEP_INTERRUPTED:
            error = data.get("error") or {}
            text = error.get("message", "") if isinstance(error, dict) else str(error)
            return f"{step}{where}: {event.kind.value.removeprefix('step_')}: {text}"[:500]
        case EventKind.STEP_RETRYING:
            return f"{step}{where}: retrying"
        case EventKind.STEP_SKIPPED:
            return f"{step}{where}: skipped"
        case EventKind.PLAN_FINISHED:
            return f"plan {data.get('status', 'finished')}"
        case _:
            return event.kind.value.replace("_", " ")
