"""`Scheduler`: the engine's facade. Starts, resumes, cancels and reports on runs.

```python
async with Scheduler(store, pool, SchedulerConfig(max_parallel_steps=16)) as scheduler:
    await scheduler.resume()                        # once, at start: pick up crashed runs
    run = await scheduler.start(plan_id)            # returns as soon as the run is durable
    async with scheduler.subscribe(plan_id) as events:  # live events, ends with plan_finished
        async for event in events:
            print(event.kind, event.step_id, scheduler.progress_now(plan_id))
    report = await run.wait()                       # ExecutionReport: every step, its outcome
```

Leaving the context stops active runs as a crash would, writing nothing more
but the release of their leases: `resume()` at the next start takes them up.
Any process may run, resume, cancel or report on any plan of a shared store.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from datetime import datetime
from types import TracebackType
from typing import Any

import anyio
from anyio.abc import TaskGroup

from executor.asking import Askers
from executor.calls import ToolCaller
from executor.catalog import Catalog
from executor.errors import (
    InternalError,
    NotFoundError,
    PlanValidationError,
    TransitionError,
    UserError,
)
from executor.eta import DurationModel, estimate_remaining_s
from executor.ids import PlanId
from executor.plan import Plan, utc_now
from executor.records import Event, EventKind, StepState
from executor.run.control import CancelWatcher, cancel_in_store
from executor.run.coordinator import Run, RunContext
from executor.run.follow import FollowedRun
from executor.run.leases import LeaseKeeper, RunOwner
from executor.run.limits import Limiters, SchedulerConfig, steps_in_flight
from executor.run.recovery import Recovery
from executor.run.registry import Runs
from executor.run.reports import (
    ExecutionProgress,
    ExecutionReport,
    build_report,
    progress_of,
)
from executor.run.starting import (
    OnInterrupted,
    apply_decision,
    check_approved,
    check_not_over,
    plan_agent,
    reset_for_rerun,
)
from executor.run.subscriptions import Subscription
from executor.status import PlanStatus, RunPhase, StepStatus
from executor.store.base import ExpectedPlanStatus, PlanStatusChange, RunLease, Store, WriteBatch
from executor.validate import checked_graph

__all__ = ["Scheduler"]

logger = logging.getLogger(__name__)


class Scheduler:
    """Runs approved plans from a `Store` through a `ToolCaller` (see the module docs).

    Use it as an async context manager: runs live in its task group.

    Attributes:
        store: Where plans and runs are kept.
        caller: What calls the steps' tools.
        config: Limits and defaults.
    """

    def __init__(
        self,
        store: Store,
        caller: ToolCaller,
        config: SchedulerConfig | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.caller = caller
        self.config = config or SchedulerConfig()
        self._keeper = LeaseKeeper(store, self.config.lease_s)
        self._runs = Runs()
        self._watcher = CancelWatcher(store, self.config.control_poll_s)
        self.askers = Askers()
        """Who answers the questions downstream tools ask, by plan (`executor.asking`)."""
        self._ctx = RunContext(
            store=store,
            caller=caller,
            config=self.config,
            lease=self._keeper.lease,
            limiters=Limiters(self.config),
            rng=rng or random.Random(),
            load_catalog=self._tool_catalog,
            stopped=self._run_stopped,
            askers=self.askers,
        )
        self._recovery = Recovery(self._ctx, self._keeper, self._runs, self._launch)
        self._tg: TaskGroup | None = None

    @property
    def lease(self) -> RunLease:
        """This scheduler's claim on the runs it executes (`lease.owner` is unique)."""
        return self._keeper.lease

    async def __aenter__(self) -> Scheduler:
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        tg.start_soon(self._keeper.keep, self._runs.all)
        tg.start_soon(self._watcher.watch, self._runs.all)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tg, self._tg = self._tg, None
        if tg is None:
            return
        # Runs are stopped as a crash would stop them: resume() picks them up.
        tg.cancel_scope.cancel()
        try:
            await tg.__aexit__(exc_type, exc, tb)
        finally:
            # Unlike a crash, nobody need wait for the leases to expire.
            with anyio.CancelScope(shield=True):
                await self._keeper.release_all()

    def _require_running(self) -> None:
        if self._tg is None:
            raise InternalError(
                "the Scheduler is not running: use it as `async with Scheduler(...)`"
            )

    def _launch(self, run: Run) -> None:
        assert self._tg is not None
        self._runs.add(run)
        self._tg.start_soon(run.drive)
        self._watcher.wake()  # watch this run for cancel requests too

    async def _run_stopped(self, run: Run) -> None:
        if run.phase is RunPhase.ABANDONED:
            # Stopped for good here: let any process (or a later execute) take it,
            # rather than hold a run nothing works on.
            await self._keeper.release(run.plan_id, run.version)
        self._runs.forget(run)
        if self._runs.get(run.plan_id) is None:
            # Whoever followed this run does not follow the next one: a later run's
            # questions go to whoever follows that one.
            self.askers.clear(run.plan_id)

    async def _tool_catalog(self) -> Catalog:
        """The caller's catalog: what is safe to repeat, and the tools' input schemas."""
        try:
            with anyio.fail_after(self.config.resume_catalog_timeout_s):
                return await self.caller.catalog()
        except Exception:
            # Without annotations nothing is known to be safe to repeat, and the
            # servers are left to check the arguments.
            logger.exception("could not get the tool catalog")
            return Catalog()

    def active(self) -> list[PlanId]:
        """Ids of the plans with a run in progress in this scheduler."""
        return self._runs.plan_ids()

    def get_run(self, plan_id: str) -> Run | None:
        """The plan's active run here, if any."""
        return self._runs.get(plan_id)

    # --- starting -------------------------------------------------------------------------

    async def start(
        self,
        plan_id: str,
        *,
        version: int | None = None,
        on_interrupted: OnInterrupted | None = None,
    ) -> Run | FollowedRun:
        """Start running a plan (or re-run its failed part, or resume it after a decision).

        A plan `executing` with no live owner (its process ended, or its lease
        lapsed, or it let the run go after a failure) is taken over and resumed
        here; a plan already running here gives that run's handle, and one that
        another live process runs gives a handle that follows it (`FollowedRun`).

        Args:
            plan_id: The plan.
            version: The version to run; the latest when `None`.
            on_interrupted: What to do with the interrupted steps of an
                `interrupted` plan, or of a `failed` one (ignored otherwise).

        Returns:
            The run's handle; it is already finished (with `needs_decision`)
            when an interrupted plan was given no decision. Nothing yields
            between registering the run and returning it, so a `subscribe()`
            right after sees every event of the run.

        Raises:
            NotFoundError: No such plan or version.
            ApprovalError: The plan is not approved, or not for its current content.
            UserError: The plan is being started here, or has nothing left to run.
            PlanValidationError: The plan's dependencies cannot be run (a cycle,
                an unknown step).
        """
        self._require_running()
        active = self._runs.get(plan_id)
        if active is not None and on_interrupted is None:
            latest = version or max(await self.store.plan_versions(plan_id), default=0)
            if latest == active.version and self._runs.get(plan_id) is active:
                return active  # asked twice: follow the run that is going on
        if self._runs.busy(plan_id):
            raise UserError(
                f"plan {plan_id!r} is already executing: follow it with get_progress, "
                "or cancel it first"
            )
        with self._runs.starting(plan_id):
            return await self._start(plan_id, version, on_interrupted)

    async def _start(
        self, plan_id: str, version: int | None, on_interrupted: OnInterrupted | None
    ) -> Run | FollowedRun:
        plan = await self.store.get_plan(plan_id, version)
        check_approved(plan)
        if plan.status is PlanStatus.EXECUTING:
            followed = await self._follow_elsewhere(plan)
            if followed is not None:
                return followed
            run = await self._recovery.take_over(plan)
            if run.done and run.report().status is PlanStatus.INTERRUPTED and on_interrupted:
                # Taken over, it waits for a decision: the caller has given one.
                return await self._start(plan.id, plan.version, on_interrupted)
            return run
        check_not_over(plan)
        graph = checked_graph(plan.steps)  # refuse a plan that can never finish, up front
        states = await self.store.get_step_states(plan.id, plan.version)
        agent = await plan_agent(self.store, plan)
        history = await self.store.tool_stats()
        if plan.status is PlanStatus.INTERRUPTED and on_interrupted is None:
            if any(s.status is StepStatus.INTERRUPTED for s in states.values()):
                return Run.not_started(self._ctx, plan, states, agent=agent, history=history)
        batch, events = self._start_batch(plan, states, on_interrupted)
        started_at: datetime = utc_now()
        batch.plan_status = PlanStatusChange(
            plan_id=plan.id,
            version=plan.version,
            status=PlanStatus.EXECUTING,
            started_at=started_at,
            lease=self.lease,
        )
        batch.events = list(events)
        try:
            # The seqs let subscribers line the live events up with the stored log.
            events = await self.store.write_returning_events(batch)
        except TransitionError as exc:
            raise UserError(
                f"plan {plan.id!r} changed status while it was being started (another "
                f"process?): {exc}; look at it again before executing it"
            ) from exc
        merged = dict(states)
        for st in batch.step_states:
            merged[st.step_id] = st
        run = Run(
            self._ctx,
            plan.model_copy(update={"status": PlanStatus.EXECUTING}),
            merged,
            agent=agent,
            history=history,
            started_at=started_at,
            start_events=events,
            graph=graph,
        )
        self._launch(run)
        return run

    async def _follow_elsewhere(self, plan: Plan) -> FollowedRun | None:
        """A handle on the plan's run in another live process; `None` if none holds it."""
        info = await self.store.get_lease(plan.id, plan.version)
        if info is None:
            return None
        owner = self._keeper.owner(info)
        if not owner.holds or owner.here:
            return None
        after = 0  # events from now on: the log so far is read past, a page at a time
        while page := await self.store.get_events(plan.id, after_seq=after):
            after = page[-1].seq
        started_at, _ = await self.store.get_run_times(plan.id, plan.version)
        followed = FollowedRun(
            self.store,
            plan,
            await self.store.get_step_states(plan.id, plan.version),
            started_at=started_at,
            owner=owner.describe(),
            after_seq=after,
            buffer=self.config.subscription_buffer,
        )
        assert self._tg is not None
        self._tg.start_soon(followed.follow)
        logger.info("plan %s runs elsewhere (%s): following it", plan.id, owner.describe())
        return followed

    @staticmethod
    def _start_batch(
        plan: Plan, states: Mapping[str, StepState], on_interrupted: OnInterrupted | None
    ) -> tuple[WriteBatch, list[Event]]:
        """What starting (or re-running, or deciding on) the plan writes, and its event."""
        batch = WriteBatch()
        waiting = [s for s in states.values() if s.status is StepStatus.INTERRUPTED]
        if plan.status is PlanStatus.INTERRUPTED:
            decided = apply_decision(batch, plan, states, waiting, on_interrupted)
            data: dict[str, Any] = {"decisions": decided}
            return batch, [Event(plan_id=plan.id, kind=EventKind.EXECUTION_RESUMED, data=data)]
        data = {"version": plan.version, "steps": len(plan.steps)}
        if plan.status is PlanStatus.FAILED:
            data["rerun"] = reset_for_rerun(batch, states)
            # A failed run may have cut calls off mid-way: they take the same decision.
            if waiting and on_interrupted is not None:
                data["decisions"] = apply_decision(batch, plan, states, waiting, on_interrupted)
        return batch, [Event(plan_id=plan.id, kind=EventKind.EXECUTION_STARTED, data=data)]

    async def execute(
        self,
        plan_id: str,
        *,
        version: int | None = None,
        wait: bool = True,
        on_interrupted: OnInterrupted | None = None,
    ) -> ExecutionReport:
        """Start a run (see `start`) and, with `wait`, return its final report.

        Without `wait`, the report as the run stands just after it started.
        """
        run = await self.start(plan_id, version=version, on_interrupted=on_interrupted)
        if wait:
            return await run.wait()
        return run.report()

    async def resume(self) -> list[Run]:
        """Resume every `executing` plan version that no live process runs.

        It claims, in one atomic write, every executing version without an owner,
        with an expired lease, or whose owner is a process on this machine that no
        longer exists; so two processes resuming at once never both take a plan.
        A run whose owner's lease is still fresh is left alone: call `resume()`
        again once it has expired to take it over.

        Returns:
            A handle per plan taken. A run whose in-flight calls may not be
            repeated goes on with everything that does not depend on them, then
            ends `interrupted`, waiting for a decision.
        """
        self._require_running()
        return await self._recovery.resume()

    # --- control and observation -----------------------------------------------------------

    async def cancel(self, plan_id: str, *, wait_s: float | None = None) -> ExecutionReport:
        """End a plan's execution as `cancelled`.

        An active run here is stopped (in-flight calls cancelled downstream). A
        run in another live process is asked to stop, through the store: that
        process sees the request within `control_poll_s`, stops its calls in
        flight and ends the run `cancelled`; this waits for that, up to `wait_s`
        (`cancel_wait_s` by default), and else answers with the plan still
        `executing` and a message saying the request is made. A run whose owner
        is gone, and a plan that is `confirmed` or `interrupted`, are cancelled
        in the store. A plan that has already ended is left as it is.

        Raises:
            NotFoundError: No such plan.
            UserError: The plan is not confirmed yet (reject it instead).
        """
        run = self._runs.get(plan_id)
        if run is not None:
            run.cancel()
            return await run.wait()
        plan = await self.store.get_plan(plan_id)
        if plan.status in (PlanStatus.DRAFT, PlanStatus.AWAITING_CONFIRMATION):
            raise UserError(
                f"plan {plan.id!r} is {plan.status.value}: it has not run, so there is "
                "nothing to cancel; reject it instead (confirm_plan with approve=false)"
            )
        if plan.status.is_terminal:
            return await self.report(plan.id, plan.version)
        if plan.status is PlanStatus.EXECUTING:
            wait = self.config.cancel_wait_s if wait_s is None else wait_s
            return await self._cancel_elsewhere(plan, wait)
        await cancel_in_store(self.store, plan)
        return await self.report(plan.id, plan.version)

    async def _cancel_elsewhere(self, plan: Plan, wait_s: float) -> ExecutionReport:
        """Cancel a run this process does not run: ask its owner, or take it if it is gone."""
        key = (plan.id, plan.version)
        deadline = anyio.current_time() + wait_s
        asked = False
        while True:
            info = await self.store.get_lease(*key)
            if info is None:  # not executing any more: its owner ended it
                return await self.report(plan.id, plan.version)
            owner = self._keeper.owner(info)
            if not owner.holds or owner.here:
                async with self._keeper.claim_lock:
                    run = self._runs.get(plan.id)
                    if run is not None and run.version == plan.version:
                        run.cancel()
                        return await run.wait()
                    gone = [info.owner] if owner.gone and info.owner is not None else []
                    if owner.here or await self._keeper.claim(gone_owners=gone, runs=[key]):
                        expect = ExpectedPlanStatus(*key, PlanStatus.EXECUTING, lease=self.lease)
                        await cancel_in_store(self.store, plan, expect)
                        return await self.report(plan.id, plan.version)
                continue  # someone else took it meanwhile: look again
            if not asked:
                asked = True
                await self.store.request_cancel(*key)
                logger.info("plan %s: asked to cancel the run: %s", plan.id, owner.describe())
            if anyio.current_time() >= deadline:
                report = await self.report(plan.id, plan.version)
                if report.status is not PlanStatus.EXECUTING:
                    return report
                message = (
                    f"cancel requested, not done yet: {owner.describe()}, and has not "
                    "stopped the run yet; it cancels its calls in flight and ends the run "
                    "as soon as it sees the request. Follow it with get_progress "
                    f"(`taskorch watch {plan.id}`)"
                )
                return report.model_copy(update={"message": message})
            await anyio.sleep(self.config.control_poll_s)

    async def wait(self, plan_id: str) -> ExecutionReport:
        """Wait for the plan's active run, if any, and return the plan's report."""
        run = self._runs.get(plan_id)
        if run is not None:
            return await run.wait()
        return await self.report(plan_id)

    async def report(self, plan_id: str, version: int | None = None) -> ExecutionReport:
        """The plan's report: live for an active run here, else from the store.

        Raises:
            NotFoundError: No such plan or version.
        """
        run = self._runs.get(plan_id)
        if run is not None and (version is None or version == run.version):
            return run.report()
        plan = await self.store.get_plan(plan_id, version)
        states = await self.store.get_step_states(plan.id, plan.version)
        started, finished = await self.store.get_run_times(plan.id, plan.version)
        message = None
        info = None
        if plan.status is PlanStatus.EXECUTING:
            info = await self.store.get_lease(plan.id, plan.version)
        if info is not None:
            owner = self._keeper.owner(info)
            message = f"the plan is executing: {owner.describe()}" + (
                ""
                if owner.holds
                else f"; execute_plan(plan_id={plan.id!r}) takes the run over and resumes it"
            )
        return build_report(plan, states, plan.status, started, finished, message)

    async def owner(self, plan_id: str, version: int | None = None) -> RunOwner | None:
        """Who runs the plan version (the latest by default); `None` when it is not executing.

        Raises:
            NotFoundError: No such plan or version.
        """
        if version is None:
            version = max(await self.store.plan_versions(plan_id), default=0)
            if not version:
                raise NotFoundError(f"no plan with id {plan_id!r}")
        info = await self.store.get_lease(plan_id, version)
        return None if info is None else self._keeper.owner(info)

    def progress_now(self, plan_id: str) -> ExecutionProgress | None:
        """The progress of the plan's active run here, without I/O; `None` if none."""
        run = self._runs.get(plan_id)
        return None if run is None else run.progress()

    async def progress(self, plan_id: str) -> ExecutionProgress:
        """A snapshot of where the plan stands: live for an active run, else from the store.

        Raises:
            NotFoundError: No such plan.
        """
        run = self._runs.get(plan_id)
        if run is not None:
            return run.progress()
        plan = await self.store.get_plan(plan_id)
        states = await self.store.get_step_states(plan.id, plan.version)
        started, finished = await self.store.get_run_times(plan.id, plan.version)
        eta: float | None
        if plan.status.is_terminal:
            eta = 0.0
        elif plan.status in (PlanStatus.INTERRUPTED, PlanStatus.EXECUTING):
            # Waiting for a decision, or running elsewhere: no honest estimate.
            eta = None
        else:
            eta = await self._static_eta(plan, states)
        return progress_of(plan, plan.status, states, started, finished, eta)

    async def _static_eta(self, plan: Plan, states: Mapping[str, StepState]) -> float | None:
        """How long a run that has not started would take, from history alone."""
        model = DurationModel(await self.store.tool_stats())
        remaining = {
            s.id: model.estimate(s.server, s.tool)
            for s in plan.steps
            if s.id not in states or not states[s.id].status.is_terminal
        }
        limit = steps_in_flight(await plan_agent(self.store, plan), self.config)
        try:
            graph = checked_graph(plan.steps)
        except PlanValidationError:
            return None  # a plan that cannot run has no time left to estimate
        return estimate_remaining_s(graph, remaining, limit)

    def subscribe(self, plan_id: str) -> Subscription:
        """Follow the events of the plan's active run here (see `Subscription`).

        With no active run the subscription is already closed: iterating it
        yields nothing. Call it right after `start()` to miss nothing.
        """
        run = self._runs.get(plan_id)
        if run is None:
            return Subscription.ended(plan_id)
        return run.subscribe()
