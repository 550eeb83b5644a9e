"""`Run`: one active run of one plan version, and its coordinator, the only writer of its state.

The coordinator handles one message at a time (a call's outcome, progress, a
retry or a stop), decides what follows, and commits what it decided before
acting on it: a step's `running` state before its call, a result before any
dependent's call. Its steps are kept in `steps`, its writes in `journal`, and
how it ends is `ending`'s; the run's phase changes only through its table
(`executor.status.RunPhase`).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from executor.asking import Askers
from executor.calls import ToolCaller
from executor.catalog import Catalog
from executor.errors import Delivery, ErrorKind, StoreError, UserError
from executor.eta import DurationModel, estimate_remaining_s
from executor.graph import Graph
from executor.ids import PlanId
from executor.plan import OnError, Plan, RetryPolicy, Step, StepError, utc_now
from executor.policy import AgentConfig, CallGate, approved_agent
from executor.records import AttemptRecord, Event, EventKind, StepState, ToolStats
from executor.refs import StepValue, find_references
from executor.retry import RetryDecision, Verdict, decide
from executor.run.ending import StopCause, finish
from executor.run.journal import Journal
from executor.run.limits import Limiters, RunLimits, SchedulerConfig, retry_policy
from executor.run.reports import ExecutionProgress, ExecutionReport, build_report, progress_snapshot
from executor.run.steps import Slot, Steps
from executor.run.subscriptions import Subscribers, Subscription
from executor.run.tasks import (
    Message,
    Outcome,
    Progress,
    RetryDue,
    StepTask,
    Stop,
    StopReason,
    TaskStarted,
    call_arguments,
    call_step,
    deadline_timer,
    retry_timer,
)
from executor.status import PlanStatus, RunPhase, StepStatus, check_transition
from executor.store.base import ExpectedPlanStatus, RunLease, Store
from executor.tracing import PlanRunSpan
from executor.validate import checked_graph

__all__ = ["Run", "RunContext"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RunContext:
    """What a run uses of the scheduler that hosts it, and nothing else of it."""

    store: Store
    """Where the run's state is written."""
    caller: ToolCaller
    """What calls the steps' tools."""
    config: SchedulerConfig
    """The engine's limits and defaults."""
    lease: RunLease
    """The hosting scheduler's claim: every write requires the run to be still held by it."""
    limiters: Limiters
    """Runs in progress and calls per server, shared by every run of the scheduler."""
    rng: random.Random
    """For retry jitter."""
    load_catalog: Callable[[], Awaitable[Catalog]]
    """The caller's catalog (annotations, input schemas); empty when it cannot be had."""
    stopped: Callable[[Run], Awaitable[None]]
    """Called once the run has stopped here, before `Run.done` is set."""
    askers: Askers
    """Who answers the questions downstream tools ask, by plan (`executor.asking`)."""


_Launch: TypeAlias = tuple[Slot, int, dict[str, Any]]
"""A call to start once its `running` state is committed: slot, attempt, arguments."""

_ETA_RECOMPUTE_ABOVE = 1_000
"""Plans with more steps than this recompute their ETA at most every quarter second."""
_ETA_RECOMPUTE_EVERY_S = 0.25

_ACTIVE = frozenset({RunPhase.QUEUED, RunPhase.RUNNING, RunPhase.STOPPING})
"""Phases in which the run may still be lost to another process."""


class Run:
    """One active run of one plan version; the coordinator is its only writer.

    The handle: `plan`, `plan_id`, `version`, `phase`, `done`, `await wait()`,
    `cancel()`, `report()`, `progress()`, `subscribe()`. The hosting scheduler
    drives it (`drive()`) and tells it when its lease is gone (`lose()`).

    Attributes:
        plan: The plan version being run.
    """

    def __init__(
        self,
        ctx: RunContext,
        plan: Plan,
        states: Mapping[str, StepState],
        *,
        agent: AgentConfig | None,
        history: Mapping[tuple[str, str], ToolStats],
        started_at: datetime | None,
        start_events: list[Event],
        retry_counts: Mapping[str, int] | None = None,
        graph: Graph | None = None,
        catalog: Catalog | None = None,
        resume_tasks: Mapping[str, str] | None = None,
    ) -> None:
        self.plan = plan
        self._ctx = ctx
        # The policy as approved and the agent's as it is now, both checked before each
        # call; limits and retry are the ones approved with the plan.
        self._gate = CallGate.for_plan(plan, agent, ctx.config.tool_filters)
        agent = approved_agent(plan, agent)
        self._agent = agent
        self._graph = graph or checked_graph(plan.steps)
        self._limits = RunLimits.of(plan, agent, ctx.config)
        self._started_at = started_at or utc_now()
        self._phase = RunPhase.QUEUED
        self._stop: StopCause | None = None
        self._status = PlanStatus.EXECUTING
        """The plan's status as this run knows it."""
        self._final: tuple[PlanStatus, datetime] | None = None
        """The status and end time being committed while `ENDING`."""
        self._finished_at: datetime | None = None
        self._message: str | None = None
        self._failure: BaseException | None = None
        self._report: ExecutionReport | None = None
        self._cancel_requested = False
        self._durations = DurationModel(history)
        self._eta_cache: tuple[float, int, float | None] = (-1.0, -1, None)
        # The caller's tools (annotations, schemas); read when the run gets its slot.
        self._catalog = catalog
        self._subscribers = Subscribers(plan.id, ctx.config.subscription_buffer)
        # Every write checks that the plan is still executing AND still ours, and renews
        # our lease on it.
        expect = ExpectedPlanStatus(plan.id, plan.version, PlanStatus.EXECUTING, lease=ctx.lease)
        self._journal = Journal(plan.id, ctx.store, expect, self._subscribers)
        self._steps = Steps(plan, self._graph, states, self._journal, retry_counts, resume_tasks)
        self._keep_output = {r.step for s in plan.steps for r in find_references(s.arguments)}
        self._outputs: dict[str, StepValue] = {}
        # Succeeded before this run and read by a step: their results are loaded first.
        self._to_load = [
            s.step.id
            for s in self._steps
            if s.state.status is StepStatus.SUCCEEDED and s.step.id in self._keep_output
        ]
        self._start_events = start_events
        self._done = anyio.Event()
        self._tg: TaskGroup | None = None
        self._queue_scope: anyio.CancelScope | None = None
        # Made in drive(), so that a run whose task never starts leaves no stream open.
        self._send: MemoryObjectSendStream[Message] | None = None
        self._recv: MemoryObjectReceiveStream[Message] | None = None
        # Step calls waiting for their downstream task id to be committed.
        self._recorded: list[anyio.Event] = []

    @classmethod
    def not_started(
        cls,
        ctx: RunContext,
        plan: Plan,
        states: Mapping[str, StepState],
        *,
        agent: AgentConfig | None = None,
        history: Mapping[tuple[str, str], ToolStats] | None = None,
    ) -> Run:
        """A handle on a run that will not start (it waits for a decision, or was cancelled)."""
        run = cls(
            ctx, plan, states, agent=agent, history=history or {}, started_at=None, start_events=[]
        )
        run._status = plan.status
        run._report = build_report(plan, states, plan.status, None, None)
        run._enter(RunPhase.ENDED)
        run._done.set()
        return run

    # --- the public handle ------------------------------------------------------------------

    @property
    def plan_id(self) -> PlanId:
        """The plan being run."""
        return self.plan.id

    @property
    def version(self) -> int:
        """The plan version being run."""
        return self.plan.version

    @property
    def phase(self) -> RunPhase:
        """Where the run stands here."""
        return self._phase

    @property
    def done(self) -> bool:
        """Whether the run has ended (or stopped because the scheduler closed)."""
        return self._done.is_set()

    @property
    def cancel_requested(self) -> bool:
        """Whether the run was asked to end `cancelled`."""
        return self._cancel_requested

    async def wait(self) -> ExecutionReport:
        """Wait for the run to end and return its report.

        Raises:
            TaskorchError: The run stopped on an error (such as a store failure),
                leaving the plan `executing` and let go, for `start()` (or `resume()`)
                to take up again.
        """
        await self._done.wait()
        if self._failure is not None:
            raise self._failure
        return self.report()

    def cancel(self) -> None:
        """Ask the run to end `cancelled`; `wait()` returns once it has."""
        if self.done:
            return
        self._cancel_requested = True
        if self._queue_scope is not None:
            self._queue_scope.cancel()
        if self._send is not None:
            try:
                self._send.send_nowait(Stop(StopReason.CANCEL))
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                pass  # The run has just ended.

    def lose(self) -> None:
        """Stop at once, writing nothing more: another process changed the plan or took it.

        Called by the scheduler when this process's lease on the run is gone. In-flight
        calls are cancelled; `wait()` raises a `UserError` saying why.
        """
        if self._phase not in _ACTIVE:
            return
        self._failure = UserError(
            f"the run of plan {self.plan.id!r} version {self.plan.version} stopped: another "
            "process changed it or took it over (this process's lease on it is gone); look "
            "at the plan again before doing anything with it"
        )
        logger.warning("%s", self._failure)
        self._enter(RunPhase.ABANDONED)
        if self._queue_scope is not None:
            self._queue_scope.cancel()
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    def subscribe(self) -> Subscription:
        """Follow this run's events from now on (see `Subscription`)."""
        if self.done:
            return Subscription.ended(self.plan.id)
        return self._subscribers.add()

    def report(self) -> ExecutionReport:
        """The report as the run stands now (final once `done`)."""
        if self._report is not None:
            return self._report
        return build_report(
            self.plan,
            self._steps.states(),
            self._status,
            self._started_at,
            self._finished_at,
            self._message,
        )

    def progress(self) -> ExecutionProgress:
        """A snapshot of where the run stands, with its ETA.

        Cheap enough to take at every event: counts are kept as the run goes,
        and the ETA of a large plan is recomputed at most every quarter second.
        """
        elapsed = max((utc_now() - self._started_at).total_seconds(), 0.0)
        return progress_snapshot(
            self.plan.id,
            self._status,
            len(self._steps),
            dict(self._steps.counts),
            tuple(sorted(self._steps.in_flight)),
            elapsed,
            self._eta() if not self._status.is_terminal else 0.0,
        )

    def _eta(self) -> float | None:
        if self._status is not PlanStatus.EXECUTING:
            return None
        now = anyio.current_time()
        cached_at, cached_change, cached = self._eta_cache
        fresh = cached_change == self._steps.changes or (
            len(self._steps) > _ETA_RECOMPUTE_ABOVE and now - cached_at < _ETA_RECOMPUTE_EVERY_S
        )
        if fresh and cached_at >= 0:
            return None if cached is None else max(cached - (now - cached_at), 0.0)
        remaining = self._steps.remaining_s(self._durations, now)
        eta = estimate_remaining_s(self._graph, remaining, self._limits.steps_in_flight)
        self._eta_cache = (now, self._steps.changes, eta)
        return eta

    # --- the run's life ---------------------------------------------------------------------

    def _enter(self, phase: RunPhase) -> None:
        self._phase = check_transition(self._phase, phase)

    def _at(self, phase: RunPhase) -> bool:
        # A call, not `self._phase is ...`: the phase changes under the type checker's
        # narrowing, in the methods called (and the tasks awaited) in between.
        return self._phase is phase

    async def drive(self) -> None:
        """Run to the end: wait for a slot, coordinate, and stop (the scheduler starts it).

        Never raises but to cancellation: an error stops the run, and `wait()`
        raises it. The run is one `plan run` span, the parent of its attempts'.
        """
        plan = self.plan
        with PlanRunSpan(plan.id, plan.version, len(plan.steps)) as span:
            await self._drive()
            ended = self._phase is RunPhase.ENDED
            outcome = self._status.value if ended else "stopped"
            failed = self._status is not PlanStatus.COMPLETED
            span.finish(outcome, outcome if failed else None, self._message)

    async def _drive(self) -> None:
        send, recv = anyio.create_memory_object_stream[Message](math.inf)
        self._send, self._recv = send, recv
        if self._cancel_requested:
            send.send_nowait(Stop(StopReason.CANCEL))
        try:
            self._subscribers.publish(self._start_events)
            self._start_events = []
            await self._queue_and_coordinate()
        except Exception as group:
            exc: Exception = group
            while isinstance(exc, ExceptionGroup) and len(exc.exceptions) == 1:
                exc = exc.exceptions[0]
            if isinstance(exc, UserError):
                logger.warning("%s", exc)
            else:
                logger.exception("run of plan %s stopped on an error", self.plan.id)
            if isinstance(exc, StoreError):
                exc = self._store_failure(exc)
            self._failure = exc
        finally:
            send.close()
            recv.close()
            self._subscribers.close()
            self._settle()
            with anyio.CancelScope(shield=True):
                await self._ctx.stopped(self)
            self._done.set()

    def _settle(self) -> None:
        """Fix the phase the run stopped in, and what its report says."""
        if self._phase is RunPhase.ENDED:
            self._report = self.report()
        elif self._failure is None:
            self._enter(RunPhase.CLOSED)
            self._message = (
                "the scheduler closed during the run; it resumes when taskorch starts again"
            )
        else:
            if self._phase is not RunPhase.ABANDONED:
                self._enter(RunPhase.ABANDONED)
            self._message = str(self._failure)

    def _store_failure(self, error: StoreError) -> StoreError:
        """Say what a run that could not write its state did, and how it goes on."""
        pid = self.plan.id
        return StoreError(
            f"the run of plan {pid!r} version {self.plan.version} stopped: its progress "
            f"could not be saved ({error}). Calls in flight were cancelled and nothing more "
            "was started; the plan stays executing and this process no longer holds it. "
            f"Once the cause is fixed, execute_plan(plan_id={pid!r}) (or `taskorch run "
            f"{pid}`) resumes it."
        )

    async def _queue_and_coordinate(self) -> None:
        executions = self._ctx.limiters.executions
        acquired = False
        with anyio.CancelScope() as scope:
            # A cancel while queued for a slot cancels this wait; the queued
            # Stop message then ends the run before anything is dispatched.
            self._queue_scope = scope
            await executions.acquire_on_behalf_of(self)
            acquired = True
            if self._catalog is None:
                self._catalog = await self._ctx.load_catalog()
        self._queue_scope = None
        try:
            await self._coordinate()
        finally:
            if acquired:
                executions.release_on_behalf_of(self)

    async def _load_outputs(self) -> None:
        """Read from the store the outputs (and content) of earlier runs that steps read."""
        for sid in self._to_load:
            state = self._steps[sid].state
            result = await self._ctx.store.get_step_result(self.plan.id, self.plan.version, sid)
            if result is not None and not result.is_error:
                self._outputs[sid] = StepValue(result.output(), result.content)
            else:  # a row from before results were stored apart, or none at all
                self._outputs[sid] = StepValue(state.output)
        self._to_load = []

    async def _coordinate(self) -> None:
        recv = self._recv
        assert recv is not None
        async with anyio.create_task_group() as tg:
            self._tg = tg
            if not self._at(RunPhase.QUEUED):
                return  # lost while it waited for a slot
            self._enter(RunPhase.RUNNING)
            await self._load_outputs()
            deadline_s = self._limits.deadline_s
            if deadline_s is not None:
                left = deadline_s - (utc_now() - self._started_at).total_seconds()
                tg.start_soon(deadline_timer, self._sender(), max(left, 0.0))
            self._steps.seed()
            while True:
                while True:
                    try:
                        msg = recv.receive_nowait()
                    except anyio.WouldBlock:
                        break
                    self._handle(msg)
                launches = self._dispatch()
                self._maybe_finish()
                if self._at(RunPhase.ABANDONED):
                    break  # lost to another process: write and start nothing more
                await self._journal.commit()
                recorded, self._recorded = self._recorded, []
                for event in recorded:
                    event.set()
                if self._at(RunPhase.ABANDONED):
                    break
                for launch in launches:
                    self._launch(tg, *launch)
                if self._at(RunPhase.ENDING):
                    assert self._final is not None
                    self._status, self._finished_at = self._final
                    self._enter(RunPhase.ENDED)
                    break
                try:
                    # A message that came during the commit is handled at once:
                    # receive() would first yield one event-loop turn (a checkpoint)
                    # even with a message waiting. The commit has just yielded anyway.
                    msg = recv.receive_nowait()
                except anyio.WouldBlock:
                    msg = await recv.receive()
                self._handle(msg)
            tg.cancel_scope.cancel()

    def _sender(self) -> MemoryObjectSendStream[Message]:
        assert self._send is not None
        return self._send

    def _policy(self, step: Step) -> RetryPolicy:
        return retry_policy(step, self._agent, self._ctx.config)

    def _decide(self, slot: Slot, kind: ErrorKind, delivery: Delivery) -> RetryDecision:
        """Whether the step's failed attempt is retried, failed or interrupted."""
        step = slot.step
        info = None if self._catalog is None else self._catalog.get(step.server, step.tool)
        return decide(
            kind,
            delivery,
            policy=self._policy(step),
            attempt=slot.run_attempts,
            annotations=None if info is None else info.annotations,
        )

    # --- dispatch ---------------------------------------------------------------------------

    def _dispatch(self) -> list[_Launch]:
        """Start what is ready, within the run's limit of steps in flight."""
        launches: list[_Launch] = []
        steps = self._steps
        while (
            self._phase is RunPhase.RUNNING
            and len(steps.in_flight) < self._limits.steps_in_flight
            and (slot := steps.pop_ready()) is not None
        ):
            record = steps.next_attempt(slot)
            refusal = self._gate.refusal(slot.step.server, slot.step.tool)
            if refusal is not None:
                self._refuse(slot, record, StepError(kind=ErrorKind.AUTHORIZATION, message=refusal))
                continue
            arguments, problem = call_arguments(slot.step, self._outputs, self._catalog)
            if arguments is None:
                # Never retried: the outputs it reads will not change.
                assert problem is not None
                error = StepError(kind=ErrorKind.INVALID_ARGUMENTS, message=problem)
                self._refuse(slot, record, error)
                continue
            steps.start(slot, record)
            launches.append((slot, record.attempt, arguments))
        return launches

    def _refuse(self, slot: Slot, record: AttemptRecord, error: StepError) -> None:
        self._steps.refuse(slot, record, error)
        self._after_failure(slot)

    def _launch(self, tg: TaskGroup, slot: Slot, attempt: int, arguments: dict[str, Any]) -> None:
        """Start a step's call, now that its `running` state is committed."""
        step = slot.step
        assert slot.scope is not None
        timeout = step.timeout_s if step.timeout_s is not None else self._limits.step_timeout_s
        tg.start_soon(
            call_step,
            self._ctx.caller,
            self._ctx.limiters.server(step.server),
            self.plan,
            step,
            attempt,
            arguments,
            timeout,
            slot.scope,
            self._sender(),
            StepTask(
                self._sender(),
                self.plan.id,
                step.id,
                attempt,
                slot.resume_task,
                lambda: self._stop is not None,
                self._ctx.askers,
            ),
        )

    # --- one method per message -------------------------------------------------------------

    def _handle(self, msg: Message) -> None:
        if isinstance(msg, Outcome):
            self._handle_outcome(msg)
        elif isinstance(msg, Progress):
            self._handle_progress(msg)
        elif isinstance(msg, RetryDue):
            self._steps.retry_due(self._steps[msg.step_id])
        elif isinstance(msg, TaskStarted):
            self._handle_task_started(msg)
        else:
            self._begin_stop(msg.reason)

    def _handle_progress(self, msg: Progress) -> None:
        if msg.step_id in self._steps.in_flight:
            self._journal.event(
                EventKind.STEP_PROGRESS,
                msg.step_id,
                attempt=msg.attempt,
                progress=msg.progress,
                total=msg.total,
                message=msg.message,
            )

    def _handle_task_started(self, msg: TaskStarted) -> None:
        slot = self._steps[msg.step_id]
        if msg.step_id in self._steps.in_flight and slot.state.attempts == msg.attempt:
            slot.task_id = msg.task_id
            self._journal.attempt(self._steps.open_attempt(slot, msg.attempt))
        self._recorded.append(msg.recorded)

    def _handle_outcome(self, msg: Outcome) -> None:
        slot = self._steps[msg.step_id]
        self._steps.in_flight.discard(msg.step_id)
        slot.scope = None
        record = self._steps.open_attempt(slot, msg.attempt, msg.call_s)
        slot.task_id = slot.resume_task = None
        result = msg.result
        if result is not None and not result.is_error:
            output = self._steps.succeed(slot, record, result, msg.finished_at, msg.duration_s)
            self._durations.observe(slot.step.server, slot.step.tool, msg.duration_s)
            if slot.step.id in self._keep_output:
                self._outputs[slot.step.id] = StepValue(output, result.content)
            return
        if result is not None:
            text = result.text().strip() or "the tool reported an error and gave no message"
            error = StepError(kind=ErrorKind.TOOL_ERROR, message=text)
            delivery = Delivery.ANSWERED
            slot.state = slot.state.model_copy(update={"result": result})
        elif msg.error is not None:
            error, delivery = msg.error, msg.delivery
        else:
            self._cut_off(slot, record, msg.finished_at)
            return
        decision = self._decide(slot, error.kind, delivery)
        if decision.verdict is Verdict.INTERRUPT:
            # Its dependents stay pending; everything else goes on.
            self._steps.interrupt(slot, record, error, decision.reason, msg.finished_at)
            return
        self._journal.attempt_ended(record, StepStatus.FAILED, msg.finished_at, error)
        if self._phase is RunPhase.RUNNING and decision.verdict is Verdict.RETRY:
            self._retry(slot, error, msg.attempt)
            return
        if decision.reason:
            error = StepError(kind=error.kind, message=f"{error.message} ({decision.reason})")
        self._steps.fail(slot, error, msg.attempt, msg.finished_at)
        self._after_failure(slot)

    def _retry(self, slot: Slot, error: StepError, attempt: int) -> None:
        """Wait, still `running`, and queue the step again (a `RetryDue` message)."""
        delay = self._policy(slot.step).delay_s(slot.run_attempts, self._ctx.rng)
        scope = anyio.CancelScope()
        assert self._tg is not None
        self._tg.start_soon(retry_timer, self._sender(), slot.step.id, delay, scope)
        self._steps.wait_to_retry(slot, error, attempt, delay, scope)

    def _after_failure(self, slot: Slot) -> None:
        """Apply a failed step's `on_error`: skip its dependents, or stop the run."""
        if self._phase is not RunPhase.RUNNING:
            return
        if slot.step.on_error is OnError.CONTINUE:
            self._steps.skip_dependents(slot.step.id)
        else:
            self._begin_stop(StopReason.FAIL, culprit=slot.step.id)

    # --- stopping and ending ----------------------------------------------------------------

    def _begin_stop(self, reason: StopReason, culprit: str | None = None) -> None:
        """Stop dispatching and cancel what is in flight; a cancel outranks the rest."""
        if self._phase is RunPhase.RUNNING:
            self._enter(RunPhase.STOPPING)
        elif not (
            self._phase is RunPhase.STOPPING
            and reason is StopReason.CANCEL
            and self._stop is not None
            and self._stop.reason is not StopReason.CANCEL
        ):
            return
        self._stop = stop = StopCause(reason, culprit, self._limits.deadline_s)
        for sid in list(self._steps.retrying):
            slot = self._steps[sid]
            if slot.scope is not None:
                slot.scope.cancel()
                slot.scope = None
            self._steps.retrying.discard(sid)
            self._steps.stop(slot, *stop.in_flight_end(), utc_now())
        for sid in self._steps.in_flight:
            scope = self._steps[sid].scope
            if scope is not None:
                scope.cancel()

    def _cut_off(self, slot: Slot, record: AttemptRecord, at: datetime) -> None:
        """End a step whose call was cancelled in flight."""
        stop = self._stop or StopCause(StopReason.CANCEL)
        status, error = stop.in_flight_end()
        if self._stop is None or stop.reason is not StopReason.CANCEL:
            # Cut off mid-call by a failure or the deadline: it may have taken effect.
            decision = self._decide(slot, error.kind, Delivery.AMBIGUOUS)
            if decision.verdict is Verdict.INTERRUPT:
                self._steps.interrupt(slot, record, error, decision.reason, at)
                return
        self._steps.stop(slot, status, error, at, record)

    def _maybe_finish(self) -> None:
        """End the run once nothing is in flight and nothing more will start."""
        if self._steps.in_flight or self._phase not in (RunPhase.RUNNING, RunPhase.STOPPING):
            return
        if self._phase is RunPhase.RUNNING and (self._steps.any_ready or self._steps.retrying):
            return
        now = utc_now()
        status, self._message = finish(
            self.plan, self._steps, self._journal, self._stop, self._started_at, now
        )
        # The run counts as finished once this write is committed, not before.
        self._final = (status, now)
        self._enter(RunPhase.ENDING)
