"""Crash recovery: resuming the runs no live process holds, and taking one over.

`resume()` claims, in one atomic write, every `executing` plan version nobody
holds (no owner, a lapsed lease, or an owner process on this machine that has
ended) and resumes each here; `take_over()` does so for one plan version. A
step found in flight is queued again when `executor.retry.decide` allows (a
crash spends no attempt), else it is `interrupted` and awaits a decision; one
found waiting to retry is queued again. The deadline counts from the first start.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

import anyio

from executor.catalog import Catalog
from executor.errors import ApprovalError, Delivery, ErrorKind, UserError
from executor.plan import Plan, Step, StepError, utc_now
from executor.policy import AgentConfig
from executor.records import AttemptRecord, Event, EventKind, StepState
from executor.retry import Verdict, decide
from executor.run.control import cancel_in_store
from executor.run.coordinator import Run, RunContext
from executor.run.journal import error_json
from executor.run.leases import LeaseKeeper
from executor.run.limits import SchedulerConfig, retry_policy
from executor.run.registry import Runs
from executor.run.starting import plan_agent, requeued
from executor.status import PlanStatus, StepStatus, check_transition
from executor.store.base import LeaseInfo, RunKey, WriteBatch

__all__ = ["Recovery", "Resumption", "resumption"]

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Resumption:
    """What resuming a run writes first, and how many attempts each step has spent."""

    batch: WriteBatch = field(default_factory=WriteBatch)
    """Steps queued again or interrupted, and the attempts a crash cut off."""
    retry_counts: dict[str, int] = field(default_factory=dict)
    """Failed attempts of this run, per step found running (the retry policy counts them)."""
    resume_tasks: dict[str, str] = field(default_factory=dict)
    """Downstream tasks (MCP Tasks) the steps found in flight became: followed, not called."""
    interrupted: list[Event] = field(default_factory=list)
    """A `step_interrupted` event per step left waiting for a decision."""


def resumption(
    plan: Plan,
    states: Mapping[str, StepState],
    attempts: Mapping[str, list[AttemptRecord]],
    *,
    started_at: datetime | None,
    agent: AgentConfig | None,
    catalog: Catalog,
    config: SchedulerConfig,
) -> Resumption:
    """Decide the fate of every step a crash left `running` (see the module docs).

    Args:
        plan: The plan version to resume.
        states: Its step states as stored.
        attempts: The attempts of each step found `running`.
        started_at: When the run started (attempts before it are an earlier run's).
        agent: The plan's agent, for its retry policy.
        catalog: The caller's catalog: which tools are safe to repeat.
        config: The engine's defaults.
    """
    now = utc_now()
    out = Resumption()
    for sid, st in states.items():
        if st.status is not StepStatus.RUNNING:
            continue
        tried = attempts.get(sid, [])
        # Only failed attempts count against the retry policy: a crash is not the tool's.
        out.retry_counts[sid] = sum(
            1
            for a in tried
            if (started_at is None or a.started_at >= started_at)
            and a.status not in (StepStatus.RUNNING, StepStatus.INTERRUPTED)
        )
        last = tried[-1] if tried else None
        step = plan.step(sid)
        if last is not None and last.status is not StepStatus.RUNNING:
            # Between attempts (waiting to retry): nothing was in flight.
            out.batch.step_states.append(requeued(st))
            continue
        if last is not None and last.task_id is not None:
            # The call had become a downstream task, which went on without us:
            # follow it again; calling again could repeat its effect.
            note = f"taskorch stopped while following downstream task {last.task_id}"
            error = StepError(kind=ErrorKind.INTERRUPTED, message=note)
            out.batch.attempts.append(
                last.model_copy(
                    update={"status": StepStatus.INTERRUPTED, "finished_at": now, "error": error}
                )
            )
            out.batch.step_states.append(requeued(st))
            out.resume_tasks[sid] = last.task_id
            continue
        _resume_in_flight(out, plan, st, step, last, agent, catalog, config, now)
    return out


def _resume_in_flight(
    out: Resumption,
    plan: Plan,
    st: StepState,
    step: Step,
    last: AttemptRecord | None,
    agent: AgentConfig | None,
    catalog: Catalog,
    config: SchedulerConfig,
    now: datetime,
) -> None:
    """A step whose call was in flight when the process stopped: retry it, or interrupt it."""
    info = catalog.get(step.server, step.tool)
    decision = decide(
        ErrorKind.INTERRUPTED,
        Delivery.AMBIGUOUS,
        policy=retry_policy(step, agent, config),
        attempt=out.retry_counts[st.step_id],
        annotations=None if info is None else info.annotations,
    )
    message = "taskorch stopped while this call was in flight"
    if decision.reason:
        message = f"{message}; {decision.reason}"
    error = StepError(kind=ErrorKind.INTERRUPTED, message=message)
    if last is not None:
        out.batch.attempts.append(
            last.model_copy(
                update={"status": StepStatus.INTERRUPTED, "finished_at": now, "error": error}
            )
        )
    if decision.verdict is Verdict.RETRY:
        out.batch.step_states.append(requeued(st))
        return
    check_transition(st.status, StepStatus.INTERRUPTED)
    out.batch.step_states.append(
        st.model_copy(update={"status": StepStatus.INTERRUPTED, "error": error, "finished_at": now})
    )
    out.interrupted.append(
        Event(
            plan_id=plan.id,
            kind=EventKind.STEP_INTERRUPTED,
            step_id=st.step_id,
            data={"error": error_json(error)},
        )
    )


class Recovery:
    """Turns runs no live process holds into runs here: after a crash, or one at a time."""

    def __init__(
        self,
        ctx: RunContext,
        keeper: LeaseKeeper,
        runs: Runs,
        launch: Callable[[Run], None],
    ) -> None:
        self._ctx = ctx
        self._store = ctx.store
        self._keeper = keeper
        self._runs = runs
        self._launch = launch

    async def resume(self) -> list[Run]:
        """Claim every executing plan version nobody holds, and resume each here."""
        async with self._keeper.claim_lock:
            gone = await self._keeper.gone_owners()
            claimed = await self._keeper.claim(gone_owners=gone)
            with self._keeper.claimed(claimed):
                return await self._resume_claimed(claimed)

    async def _resume_claimed(self, claimed: list[RunKey]) -> list[Run]:
        runs: list[Run] = []
        catalog: Catalog | None = None
        for plan_id, version in claimed:
            active = self._runs.get(plan_id)
            if active is not None and active.version == version:
                continue  # already running here; the claim merely renewed its lease
            if self._runs.is_starting(plan_id):
                # start() is on it right now, and takes the run over itself if need be.
                await self._keeper.release(plan_id, version)
                continue
            if active is not None:
                logger.warning(
                    "plan %s version %d is executing, but another version of the plan runs "
                    "here: it is left for later",
                    plan_id,
                    version,
                )
                await self._keeper.release(plan_id, version)
                continue
            run: Run | None = None
            with self._runs.starting(plan_id):
                try:
                    plan = await self._store.get_plan(plan_id, version)
                    run = await self._obey_cancel_request(plan)
                    if run is None:
                        states = await self._store.get_step_states(plan.id, plan.version)
                        if catalog is None:
                            catalog = await self._ctx.load_catalog()
                        run = await self.resume_one(plan, states, catalog)
                except Exception:
                    logger.exception("could not resume plan %s version %d", plan_id, version)
            if run is None:
                # Not run here: let another process (or a later resume) have it.
                await self._keeper.release(plan_id, version)
            else:
                runs.append(run)
        return runs

    async def take_over(self, plan: Plan) -> Run:
        """Claim an executing plan version whose owner is gone, and resume it here.

        Raises:
            UserError: A live process holds it (the message says which).
        """
        key = (plan.id, plan.version)
        async with self._keeper.claim_lock:
            active = self._runs.get(plan.id)
            if active is not None and active.version == plan.version:
                return active  # resume() took it meanwhile
            info = await self._store.get_lease(plan.id, plan.version)
            if info is None:
                raise UserError(
                    f"plan {plan.id!r} version {plan.version} stopped executing while it was "
                    "being started (another process?): look at it again"
                )
            owner = self._keeper.owner(info)
            if not owner.here:
                gone = [info.owner] if owner.gone and info.owner is not None else []
                if not await self._keeper.claim(gone_owners=gone, runs=[key]):
                    raise UserError(
                        f"plan {plan.id!r} is already executing: {owner.describe()}. Follow "
                        f"it with get_progress (`taskorch watch {plan.id}`), or cancel it"
                    )
            with self._keeper.claimed([key]):
                try:
                    run = await self._obey_cancel_request(plan, info)
                    if run is None:
                        states = await self._store.get_step_states(plan.id, plan.version)
                        run = await self.resume_one(plan, states, await self._ctx.load_catalog())
                    if run is None:
                        raise ApprovalError(
                            f"plan {plan.id!r} is executing but not approved for its content"
                        )
                except BaseException:
                    with anyio.CancelScope(shield=True):
                        await self._keeper.release(plan.id, plan.version)
                    raise
        logger.info("took over plan %s version %d: %s", plan.id, plan.version, owner.describe())
        return run

    async def _obey_cancel_request(self, plan: Plan, info: LeaseInfo | None = None) -> Run | None:
        """Cancel a run just claimed, instead of resuming it, if a cancel request stands.

        Whoever asked was told the run ends as soon as its owner sees the request;
        the new owner sees it before it calls anything.
        """
        if info is None:
            info = await self._store.get_lease(plan.id, plan.version)
        if info is None or info.cancel_requested_at is None:
            return None
        logger.info("plan %s: a cancel request stands; cancelling the run taken over", plan.id)
        await cancel_in_store(self._store, plan, self._keeper.expect_held(plan.id, plan.version))
        states = await self._store.get_step_states(plan.id, plan.version)
        ended = plan.model_copy(update={"status": PlanStatus.CANCELLED})
        return Run.not_started(self._ctx, ended, states)

    async def resume_one(
        self, plan: Plan, states: dict[str, StepState], catalog: Catalog
    ) -> Run | None:
        """Resume a plan version claimed here; `None` when it may not run (not approved)."""
        if not plan.is_approved:
            logger.error(
                "plan %s is executing but not approved for its content: left alone", plan.id
            )
            return None
        started_at, _ = await self._store.get_run_times(plan.id, plan.version)
        agent = await plan_agent(self._store, plan)
        history = await self._store.tool_stats()
        attempts: dict[str, list[AttemptRecord]] = {}
        for sid, st in states.items():
            if st.status is StepStatus.RUNNING:
                attempts[sid] = await self._store.get_attempts(plan.id, plan.version, sid)
        out = resumption(
            plan,
            states,
            attempts,
            started_at=started_at,
            agent=agent,
            catalog=catalog,
            config=self._ctx.config,
        )
        batch = out.batch
        # Written only while the claim just made is still ours.
        batch.expect = self._keeper.expect_held(plan.id, plan.version)
        merged = dict(states)
        for new in batch.step_states:
            merged[new.step_id] = new
        # The run goes on with everything that does not depend on an interrupted step,
        # and waits for a decision only once nothing else can run.
        requeued_ids = [s.step_id for s in batch.step_states if s.status is StepStatus.PENDING]
        batch.events = [
            Event(
                plan_id=plan.id,
                kind=EventKind.EXECUTION_RESUMED,
                data={
                    "requeued": requeued_ids,
                    "interrupted": [e.step_id for e in out.interrupted],
                },
            ),
            *out.interrupted,
        ]
        events = await self._store.write_returning_events(batch)
        run = Run(
            self._ctx,
            plan,
            merged,
            agent=agent,
            history=history,
            started_at=started_at,
            start_events=events,
            retry_counts=out.retry_counts,
            catalog=catalog,
            resume_tasks=out.resume_tasks,
        )
        self._launch(run)
        return run
