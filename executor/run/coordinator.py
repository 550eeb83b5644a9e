"""`Run`: one active run of one plan version, and its coordinator, the only writer of its state.

The coordinator dispatches a step the moment its last dependency succeeds
(highest first by the length of the chain it heads), within the run's limit of
steps in flight. Step calls run in the run's task group, each under its own
`CancelScope`, and send their outcome back over a memory object stream; the
coordinator folds every message that is waiting into one `WriteBatch` and
commits it before acting on it: a step's `running` state and attempt record
are committed before its tool is called, a result before any dependent is
called. References are resolved, and the arguments checked against the
tool's input schema, just before a call. Whether a failed call is retried,
failed or interrupted is `executor.retry.decide`'s call. A write that fails
stops the run as a lost lease does: calls in flight are cancelled, nothing
more is written, and the run is let go for a later `start()` to take over.
The run's phase (`executor.status.RunPhase`) changes only through its table.
"""

from __future__ import annotations

import heapq
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

from executor.calls import ToolCaller, ToolResult
from executor.catalog import Catalog, ToolAnnotations
from executor.errors import (
    Delivery,
    ErrorKind,
    StepReferenceError,
    StoreError,
    TransitionError,
    UserError,
)
from executor.ids import PlanId
from executor.outputs import summarize
from executor.plan import OnError, Plan, RetryPolicy, Step, StepError, utc_now
from executor.policy import AgentConfig, CallGate, approved_agent
from executor.progress import DurationModel, PlanGraph, estimate_remaining_s
from executor.records import AttemptRecord, Event, EventKind, StepState, ToolStats
from executor.refs import StepValue, find_references, resolve_references
from executor.retry import Verdict, decide
from executor.run.limits import Limiters, RunLimits, SchedulerConfig, retry_policy
from executor.run.reports import (
    ExecutionProgress,
    ExecutionReport,
    build_report,
    count_statuses,
    interrupted_message,
    progress_snapshot,
)
from executor.run.subscriptions import Subscribers, Subscription
from executor.run.tasks import (
    Message,
    Outcome,
    Progress,
    RetryDue,
    Stop,
    StopReason,
    call_step,
    deadline_timer,
    retry_timer,
)
from executor.status import PlanStatus, RunPhase, SkipReason, StepStatus, check_transition
from executor.store.base import ExpectedPlanStatus, PlanStatusChange, RunLease, Store, WriteBatch
from executor.validate import check_arguments

__all__ = ["Run", "RunContext", "error_json"]

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


@dataclass(slots=True)
class _Slot:
    """What the coordinator tracks for one step."""

    step: Step
    index: int
    state: StepState
    waiting: int = 0
    """Dependencies not yet satisfied."""
    run_attempts: int = 0
    """Attempts made in this run (the retry policy counts these)."""
    scope: anyio.CancelScope | None = None
    """The in-flight call's, or the retry timer's, cancel scope."""
    attempt_started: datetime | None = None
    attempt_started_mono: float = 0.0


_Launch: TypeAlias = tuple[_Slot, int, dict[str, Any]]
"""A call to start once its `running` state is committed: slot, attempt, arguments."""

_ETA_RECOMPUTE_ABOVE = 1_000
"""Plans with more steps than this recompute their ETA at most every quarter second."""
_ETA_RECOMPUTE_EVERY_S = 0.25

_ACTIVE = frozenset({RunPhase.QUEUED, RunPhase.RUNNING, RunPhase.STOPPING})
"""Phases in which the run may still be lost to another process."""


def error_json(error: StepError | None) -> dict[str, str] | None:
    """A step error as event data."""
    return None if error is None else {"kind": error.kind.value, "message": error.message}


def _annotations(catalog: Catalog | None, step: Step) -> ToolAnnotations | None:
    info = None if catalog is None else catalog.get(step.server, step.tool)
    return None if info is None else info.annotations


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
        graph: PlanGraph | None = None,
        catalog: Catalog | None = None,
    ) -> None:
        self.plan = plan
        self._ctx = ctx
        # The policy as approved and the agent's as it is now, both checked before each
        # call; limits and retry are the ones approved with the plan.
        self._gate = CallGate.for_plan(plan, agent, ctx.config.tool_filters)
        agent = approved_agent(plan, agent)
        self._agent = agent
        self._graph = graph or PlanGraph.of(plan.steps)
        self._limits = RunLimits.of(plan, agent, ctx.config)
        self._started_at = started_at or utc_now()
        # Every write checks that the plan is still executing AND still ours, and renews
        # our lease on it.
        self._expect = ExpectedPlanStatus(
            plan.id, plan.version, PlanStatus.EXECUTING, lease=ctx.lease
        )
        self._phase = RunPhase.QUEUED
        self._stop_reason: StopReason | None = None
        self._culprit: str | None = None
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
        # The caller's tools (annotations, schemas); read when the run gets its slot.
        self._catalog = catalog
        referenced = {r.step for s in plan.steps for r in find_references(s.arguments)}
        self._keep_output = referenced
        self._outputs: dict[str, StepValue] = {}
        # Succeeded before this run and read by a step: their results are loaded first.
        self._to_load: list[str] = []
        self._slots: dict[str, _Slot] = {}
        for i, step in enumerate(plan.steps):
            st = states.get(step.id) or StepState(
                plan_id=plan.id, version=plan.version, step_id=step.id
            )
            slot = _Slot(step=step, index=i, state=st)
            if retry_counts is not None:
                slot.run_attempts = retry_counts.get(step.id, 0)
            self._slots[step.id] = slot
            if st.status is StepStatus.SUCCEEDED and step.id in referenced:
                self._to_load.append(step.id)
        self._counts = count_statuses([s.state for s in self._slots.values()])
        self._changes = 0
        self._eta_cache: tuple[float, int, float | None] = (-1.0, -1, None)
        self._ready: list[tuple[int, int, str]] = []
        self._in_flight: set[str] = set()
        self._retrying: set[str] = set()
        self._start_events = start_events
        self._outbox: list[Event] = []
        self._subscribers = Subscribers(plan.id, ctx.config.subscription_buffer)
        self._done = anyio.Event()
        self._tg: TaskGroup | None = None
        self._queue_scope: anyio.CancelScope | None = None
        # Made in drive(), so that a run whose task never starts leaves no stream open.
        self._send: MemoryObjectSendStream[Message] | None = None
        self._recv: MemoryObjectReceiveStream[Message] | None = None

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
            {k: s.state for k, s in self._slots.items()},
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
            len(self._slots),
            dict(self._counts),
            tuple(sorted(self._in_flight)),
            elapsed,
            self._eta() if not self._status.is_terminal else 0.0,
        )

    def _eta(self) -> float | None:
        if self._status is not PlanStatus.EXECUTING:
            return None
        now = anyio.current_time()
        cached_at, cached_change, cached = self._eta_cache
        fresh = cached_change == self._changes or (
            len(self._slots) > _ETA_RECOMPUTE_ABOVE and now - cached_at < _ETA_RECOMPUTE_EVERY_S
        )
        if fresh and cached_at >= 0:
            return None if cached is None else max(cached - (now - cached_at), 0.0)
        eta = self._compute_eta(now)
        self._eta_cache = (now, self._changes, eta)
        return eta

    def _compute_eta(self, now: float) -> float | None:
        remaining: dict[str, float | None] = {}
        for sid, slot in self._slots.items():
            if slot.state.status.is_terminal:
                continue
            est = self._durations.estimate(slot.step.server, slot.step.tool)
            if est is not None and sid in self._in_flight:
                est = max(est - (now - slot.attempt_started_mono), 0.0)
            remaining[sid] = est
        return estimate_remaining_s(self._graph, remaining, self._limits.steps_in_flight)

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
        raises it.
        """
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

    async def _queue_and_coordinate(self) -> None:
        executions = self._ctx.limiters.executions
        acquired = False
        with anyio.CancelScope() as scope:
            # A cancel while queued for a slot cancels this wait; the queued
            # _Stop message then ends the run before anything is dispatched.
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

    async def _load_outputs(self) -> None:
        """Read from the store the outputs (and content) of earlier runs that steps read."""
        for sid in self._to_load:
            state = self._slots[sid].state
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
            batch = WriteBatch()
            self._seed(batch)
            while True:
                while True:
                    try:
                        msg = recv.receive_nowait()
                    except anyio.WouldBlock:
                        break
                    self._handle(msg, batch)
                launches = self._dispatch(batch)
                self._maybe_finish(batch)
                if self._at(RunPhase.ABANDONED):
                    break  # lost to another process: write and start nothing more
                await self._commit_or_stop(batch)
                if self._at(RunPhase.ABANDONED):
                    break
                for launch in launches:
                    self._launch(tg, *launch)
                if self._at(RunPhase.ENDING):
                    assert self._final is not None
                    self._status, self._finished_at = self._final
                    self._enter(RunPhase.ENDED)
                    break
                batch = WriteBatch()
                try:
                    # A message that came during the commit is handled at once:
                    # receive() would first yield one event-loop turn (a checkpoint)
                    # even with a message waiting. The commit has just yielded anyway.
                    msg = recv.receive_nowait()
                except anyio.WouldBlock:
                    msg = await recv.receive()
                self._handle(msg, batch)
            tg.cancel_scope.cancel()

    async def _commit_or_stop(self, batch: WriteBatch) -> None:
        try:
            await self._commit(batch)
        except TransitionError as exc:
            # Another process changed the plan (cancelled it, say): stop here,
            # call nothing more, and cancel what is in flight.
            raise UserError(
                f"the run of plan {self.plan.id!r} stopped: {exc}; "
                "look at the plan again before doing anything with it"
            ) from exc

    async def _commit(self, batch: WriteBatch) -> None:
        outbox, self._outbox = self._outbox, []
        batch.events = [e for e in outbox if e.kind is not EventKind.STEP_PROGRESS]
        batch.expect = self._expect
        if len(batch.step_states) > 1:
            # A step can change twice in one batch (retrying, then stopped); the last wins.
            batch.step_states = list({s.step_id: s for s in batch.step_states}.values())
        if len(batch.attempts) > 1:
            batch.attempts = list({(a.step_id, a.attempt): a for a in batch.attempts}.values())
        store = self._ctx.store
        if batch.events and self._subscribers:
            stored = iter(await store.write_returning_events(batch))
            # Hand subscribers the events with the seq the store gave them.
            outbox = [e if e.kind is EventKind.STEP_PROGRESS else next(stored) for e in outbox]
        elif batch:
            await store.write(batch)
        self._subscribers.publish(outbox)
        if len(batch.events) < len(outbox):
            await self._publish_live([e for e in outbox if e.kind is EventKind.STEP_PROGRESS])

    async def _publish_live(self, events: list[Event]) -> None:
        """Pass progress to other processes' followers, where the store can; best effort."""
        try:
            await self._ctx.store.publish_live(events)
        except Exception as error:
            logger.debug("could not pass progress on to other processes: %s", error)

    def _event(self, kind: EventKind, step_id: str | None = None, **data: Any) -> None:
        self._outbox.append(Event(plan_id=self.plan.id, kind=kind, step_id=step_id, data=data))

    def _set(self, batch: WriteBatch, slot: _Slot, **update: Any) -> None:
        """Change a step's state (checking the transition) and queue its write."""
        status = update.get("status")
        if status is not None and status is not slot.state.status:
            check_transition(slot.state.status, status)
            self._counts[slot.state.status] -= 1
            self._counts[status] += 1
        slot.state = slot.state.model_copy(update=update)
        self._changes += 1
        batch.step_states.append(slot.state)

    def _seed(self, batch: WriteBatch) -> None:
        """Work out what can run now, and skip what never can."""
        for sid in self._graph.order:
            slot = self._slots[sid]
            if slot.state.status is not StepStatus.PENDING:
                continue
            blocked = False
            for dep in slot.step.depends_on:
                dst = self._slots[dep].state
                if dst.satisfies_dependents:
                    continue
                # An interrupted dependency waits for a decision; it has not failed.
                if dst.status.is_terminal and dst.status is not StepStatus.INTERRUPTED:
                    blocked = True
                slot.waiting += 1
            if blocked:
                self._skip(batch, slot, SkipReason.DEPENDENCY, "a dependency did not succeed")
            elif slot.waiting == 0:
                self._push_ready(slot)

    def _push_ready(self, slot: _Slot) -> None:
        heapq.heappush(self._ready, (-self._graph.height[slot.step.id], slot.index, slot.step.id))

    def _policy(self, step: Step) -> RetryPolicy:
        return retry_policy(step, self._agent, self._ctx.config)

    def _argument_problem(self, step: Step, arguments: dict[str, Any]) -> str | None:
        """Why the resolved arguments cannot be sent, or `None` when they fit (or are unknown)."""
        info = None if self._catalog is None else self._catalog.get(step.server, step.tool)
        if info is None:
            return None  # the tool is unknown here: its server judges
        problems = check_arguments(info, arguments)
        if not problems:
            return None
        return (
            "the arguments, with references resolved, do not fit the tool's input schema, "
            f"so it was not called: {'; '.join(problems)}"
        )

    # --- dispatch and calls -----------------------------------------------------------------

    def _dispatch(self, batch: WriteBatch) -> list[_Launch]:
        launches: list[_Launch] = []
        limit = self._limits.steps_in_flight
        while self._ready and self._phase is RunPhase.RUNNING and len(self._in_flight) < limit:
            _, _, sid = heapq.heappop(self._ready)
            slot = self._slots[sid]
            if slot.state.status.is_terminal:
                continue
            now = utc_now()
            attempt = slot.state.attempts + 1
            slot.run_attempts += 1
            record = AttemptRecord(
                plan_id=self.plan.id,
                version=self.plan.version,
                step_id=sid,
                attempt=attempt,
                started_at=now,
            )
            refusal = self._gate.refusal(slot.step.server, slot.step.tool)
            if refusal is not None:
                error = StepError(kind=ErrorKind.AUTHORIZATION, message=refusal)
                self._fail_before_call(batch, slot, record, error)
                continue
            try:
                arguments = resolve_references(slot.step.arguments, self._outputs)
                problem = self._argument_problem(slot.step, arguments)
            except StepReferenceError as exc:
                problem = str(exc)
            if problem is not None:
                # Nothing was called: the attempt starts and fails at once, and is
                # never retried, since the outputs it reads will not change.
                error = StepError(kind=ErrorKind.INVALID_ARGUMENTS, message=problem)
                self._fail_before_call(batch, slot, record, error)
                continue
            self._set(
                batch,
                slot,
                status=StepStatus.RUNNING,
                attempts=attempt,
                started_at=slot.state.started_at or now,
                error=None,
            )
            batch.attempts.append(record)
            slot.attempt_started = now
            slot.attempt_started_mono = anyio.current_time()
            slot.scope = anyio.CancelScope()
            self._in_flight.add(sid)
            self._event(
                EventKind.STEP_STARTED,
                sid,
                attempt=attempt,
                server=slot.step.server,
                tool=slot.step.tool,
            )
            launches.append((slot, attempt, arguments))
        return launches

    def _fail_before_call(
        self, batch: WriteBatch, slot: _Slot, record: AttemptRecord, error: StepError
    ) -> None:
        """Nothing was called: the attempt starts and fails at once, never retried."""
        self._set(
            batch,
            slot,
            status=StepStatus.RUNNING,
            attempts=record.attempt,
            started_at=slot.state.started_at or record.started_at,
        )
        self._attempt_done(batch, record, StepStatus.FAILED, record.started_at, error)
        self._fail(batch, slot, error, record.attempt)

    def _attempt_done(
        self,
        batch: WriteBatch,
        record: AttemptRecord,
        status: StepStatus,
        finished_at: datetime,
        error: StepError | None = None,
    ) -> None:
        batch.attempts.append(
            record.model_copy(update={"status": status, "finished_at": finished_at, "error": error})
        )

    def _open_attempt(self, slot: _Slot, attempt: int) -> AttemptRecord:
        return AttemptRecord(
            plan_id=self.plan.id,
            version=self.plan.version,
            step_id=slot.step.id,
            attempt=attempt,
            started_at=slot.attempt_started or utc_now(),
        )

    def _sender(self) -> MemoryObjectSendStream[Message]:
        assert self._send is not None
        return self._send

    def _launch(self, tg: TaskGroup, slot: _Slot, attempt: int, arguments: dict[str, Any]) -> None:
        """Start a step's call, now that its `running` state is committed."""
        step = slot.step
        assert slot.scope is not None
        timeout = step.timeout_s if step.timeout_s is not None else self._limits.step_timeout_s
        limiter = self._ctx.limiters.server(step.server)
        tg.start_soon(
            call_step,
            self._ctx.caller,
            limiter,
            step,
            attempt,
            arguments,
            timeout,
            slot.scope,
            self._sender(),
        )

    # --- one method per message -------------------------------------------------------------

    def _handle(self, msg: Message, batch: WriteBatch) -> None:
        if isinstance(msg, Outcome):
            self._handle_outcome(msg, batch)
        elif isinstance(msg, Progress):
            self._handle_progress(msg)
        elif isinstance(msg, RetryDue):
            self._handle_retry_due(msg)
        else:
            self._begin_stop(batch, msg.reason)

    def _handle_progress(self, msg: Progress) -> None:
        if msg.step_id in self._in_flight:
            self._event(
                EventKind.STEP_PROGRESS,
                msg.step_id,
                attempt=msg.attempt,
                progress=msg.progress,
                total=msg.total,
                message=msg.message,
            )

    def _handle_retry_due(self, msg: RetryDue) -> None:
        slot = self._slots[msg.step_id]
        if msg.step_id in self._retrying:
            self._retrying.discard(msg.step_id)
            slot.scope = None
            self._push_ready(slot)

    def _handle_outcome(self, msg: Outcome, batch: WriteBatch) -> None:
        slot = self._slots[msg.step_id]
        self._in_flight.discard(msg.step_id)
        slot.scope = None
        record = self._open_attempt(slot, msg.attempt)
        result = msg.result
        if result is not None and not result.is_error:
            self._succeed(batch, slot, record, result, msg)
            return
        if result is not None:
            text = result.text().strip() or "the tool reported an error and gave no message"
            error = StepError(kind=ErrorKind.TOOL_ERROR, message=text)
            delivery = Delivery.ANSWERED
        elif msg.error is not None:
            error, delivery = msg.error, msg.delivery
        else:
            self._stopped_in_flight(batch, slot, record, msg.finished_at)
            return
        if result is not None:
            slot.state = slot.state.model_copy(update={"result": result})
        policy = self._policy(slot.step)
        decision = decide(
            error.kind,
            delivery,
            policy=policy,
            attempt=slot.run_attempts,
            annotations=_annotations(self._catalog, slot.step),
        )
        if decision.verdict is Verdict.INTERRUPT:
            self._interrupt(batch, slot, record, error, decision.reason, msg.finished_at)
            return
        self._attempt_done(batch, record, StepStatus.FAILED, msg.finished_at, error)
        if self._phase is RunPhase.RUNNING and decision.verdict is Verdict.RETRY:
            self._retry(batch, slot, policy, error, msg.attempt)
            return
        if decision.reason:
            error = StepError(kind=error.kind, message=f"{error.message} ({decision.reason})")
        self._fail(batch, slot, error, msg.attempt, msg.finished_at)

    def _retry(
        self, batch: WriteBatch, slot: _Slot, policy: RetryPolicy, error: StepError, attempt: int
    ) -> None:
        """Wait, still `running`, and queue the step again (a `RetryDue` message)."""
        delay = policy.delay_s(slot.run_attempts, self._ctx.rng)
        self._set(batch, slot, error=error)
        scope = anyio.CancelScope()
        slot.scope = scope
        self._retrying.add(slot.step.id)
        assert self._tg is not None
        self._tg.start_soon(retry_timer, self._sender(), slot.step.id, delay, scope)
        self._event(
            EventKind.STEP_RETRYING,
            slot.step.id,
            attempt=attempt,
            delay_s=round(delay, 3),
            error=error_json(error),
        )

    def _interrupt(
        self,
        batch: WriteBatch,
        slot: _Slot,
        record: AttemptRecord,
        error: StepError,
        reason: str,
        at: datetime,
    ) -> None:
        """The call may have taken effect and may not be repeated: wait for a decision.

        Its dependents stay pending; everything else goes on.
        """
        self._attempt_done(batch, record, StepStatus.INTERRUPTED, at, error)
        error = StepError(kind=error.kind, message=f"{error.message}; {reason}")
        self._set(batch, slot, status=StepStatus.INTERRUPTED, error=error, finished_at=at)
        self._event(
            EventKind.STEP_INTERRUPTED,
            slot.step.id,
            attempt=record.attempt,
            error=error_json(error),
        )

    def _succeed(
        self,
        batch: WriteBatch,
        slot: _Slot,
        record: AttemptRecord,
        result: ToolResult,
        msg: Outcome,
    ) -> None:
        step = slot.step
        output = result.output()
        summary = summarize(result, output)
        self._attempt_done(batch, record, StepStatus.SUCCEEDED, msg.finished_at)
        self._set(
            batch,
            slot,
            status=StepStatus.SUCCEEDED,
            output=output,
            result=result,
            summary=summary,
            error=None,
            finished_at=msg.finished_at,
        )
        # The batch carries the whole result to the store, which keeps it; the run keeps
        # only what reports need, so large results do not stay in memory.
        light = {"result": None, "output": output if summary.inline else None}
        slot.state = slot.state.model_copy(update=light)
        batch.durations.append((step.server, step.tool, msg.duration_s))
        self._durations.observe(step.server, step.tool, msg.duration_s)
        self._event(
            EventKind.STEP_SUCCEEDED,
            step.id,
            attempt=msg.attempt,
            duration_s=round(msg.duration_s, 6),
        )
        if step.id in self._keep_output:
            self._outputs[step.id] = StepValue(output, result.content)
        for child in self._graph.dependents[step.id]:
            cslot = self._slots[child]
            cslot.waiting -= 1
            if cslot.waiting == 0 and cslot.state.status is StepStatus.PENDING:
                self._push_ready(cslot)

    def _fail(
        self,
        batch: WriteBatch,
        slot: _Slot,
        error: StepError,
        attempt: int,
        finished_at: datetime | None = None,
    ) -> None:
        """The step is failed for good: record it, then apply its `on_error`."""
        self._set(
            batch,
            slot,
            status=StepStatus.FAILED,
            error=error,
            finished_at=finished_at or utc_now(),
        )
        self._event(EventKind.STEP_FAILED, slot.step.id, attempt=attempt, error=error_json(error))
        if self._phase is not RunPhase.RUNNING:
            return
        if slot.step.on_error is OnError.CONTINUE:
            self._skip_dependents(batch, slot.step.id)
        else:
            self._culprit = slot.step.id
            self._begin_stop(batch, StopReason.FAIL)

    def _skip(self, batch: WriteBatch, slot: _Slot, reason: SkipReason, why: str) -> None:
        error = StepError(kind=ErrorKind.CANCELLED, message=f"not run: {why}")
        self._set(
            batch,
            slot,
            status=StepStatus.SKIPPED,
            skip_reason=reason,
            error=error,
            finished_at=utc_now(),
        )
        self._event(EventKind.STEP_SKIPPED, slot.step.id, reason=error.message)

    def _skip_dependents(self, batch: WriteBatch, failed: str) -> None:
        stack = list(self._graph.dependents[failed])
        while stack:
            sid = stack.pop()
            slot = self._slots[sid]
            if slot.state.status is not StepStatus.PENDING:
                continue
            why = f"it depends on step {failed!r}, which did not succeed"
            self._skip(batch, slot, SkipReason.DEPENDENCY, why)
            stack.extend(self._graph.dependents[sid])

    # --- stopping and ending ----------------------------------------------------------------

    def _begin_stop(self, batch: WriteBatch, reason: StopReason) -> None:
        """Stop dispatching and cancel what is in flight; a cancel outranks the rest."""
        if self._phase is RunPhase.RUNNING:
            self._enter(RunPhase.STOPPING)
        elif not (
            self._phase is RunPhase.STOPPING
            and reason is StopReason.CANCEL
            and self._stop_reason is not StopReason.CANCEL
        ):
            return
        self._stop_reason = reason
        for sid in list(self._retrying):
            slot = self._slots[sid]
            if slot.scope is not None:
                slot.scope.cancel()
                slot.scope = None
            self._retrying.discard(sid)
            self._stopped_in_flight(batch, slot, None, utc_now())
        for sid in self._in_flight:
            scope = self._slots[sid].scope
            if scope is not None:
                scope.cancel()

    def _deadline_passed(self) -> str:
        return f"the plan's deadline of {self._limits.deadline_s:g} s passed"

    def _stop_error(self) -> tuple[StepStatus, StepError]:
        """How an in-flight step ends when the run stops."""
        if self._stop_reason is StopReason.DEADLINE:
            return StepStatus.FAILED, StepError(
                kind=ErrorKind.TIMEOUT, message=self._deadline_passed()
            )
        if self._stop_reason is StopReason.FAIL:
            return StepStatus.CANCELLED, StepError(
                kind=ErrorKind.CANCELLED,
                message=f"cancelled because step {self._culprit!r} failed (on_error='fail')",
            )
        return StepStatus.CANCELLED, StepError(
            kind=ErrorKind.CANCELLED, message="cancelled: the execution was cancelled"
        )

    def _stopped_in_flight(
        self, batch: WriteBatch, slot: _Slot, record: AttemptRecord | None, at: datetime
    ) -> None:
        status, error = self._stop_error()
        if record is not None and self._stop_reason is not StopReason.CANCEL:
            # Cut off mid-call by a failure or the deadline: it may have taken effect.
            decision = decide(
                error.kind,
                Delivery.AMBIGUOUS,
                policy=self._policy(slot.step),
                attempt=slot.run_attempts,
                annotations=_annotations(self._catalog, slot.step),
            )
            if decision.verdict is Verdict.INTERRUPT:
                self._interrupt(batch, slot, record, error, decision.reason, at)
                return
        if record is not None:
            self._attempt_done(batch, record, status, at, error)
        self._set(batch, slot, status=status, error=error, finished_at=at)
        kind = EventKind.STEP_FAILED if status is StepStatus.FAILED else EventKind.STEP_CANCELLED
        self._event(kind, slot.step.id, attempt=slot.state.attempts, error=error_json(error))

    def _maybe_finish(self, batch: WriteBatch) -> None:
        if self._in_flight or self._phase not in (RunPhase.RUNNING, RunPhase.STOPPING):
            return
        stopping = self._phase is RunPhase.STOPPING
        if not stopping and (self._ready or self._retrying):
            return
        now = utc_now()
        leftover = [s for s in self._slots.values() if not s.state.status.is_terminal]
        waiting = [
            s.step.id for s in self._slots.values() if s.state.status is StepStatus.INTERRUPTED
        ]
        if not stopping and waiting:
            # Nothing else can run: what is left depends on steps awaiting a decision.
            leftover = []
        if not stopping and leftover:
            # Unreachable while dependencies are tracked right; finishing beats hanging.
            logger.error("plan %s: steps %s could never run", self.plan.id, leftover)
        for slot in leftover:
            self._end_leftover(batch, slot, now)
        status = self._end_status(waiting)
        batch.plan_status = PlanStatusChange(
            plan_id=self.plan.id, version=self.plan.version, status=status, finished_at=now
        )
        self._event(
            EventKind.PLAN_FINISHED,
            status=status.value,
            counts={k.value: v for k, v in self._counts.items()},
            duration_s=round((now - self._started_at).total_seconds(), 6),
            message=self._message,
        )
        # The run counts as finished once this batch is committed, not before.
        self._final = (status, now)
        self._enter(RunPhase.ENDING)

    def _end_leftover(self, batch: WriteBatch, slot: _Slot, now: datetime) -> None:
        """End a step the run stops without having run (or finished)."""
        if slot.state.status is StepStatus.RUNNING:
            # Queued for a retry when the stop came: it ends like a step in flight.
            self._stopped_in_flight(batch, slot, None, now)
        elif self._stop_reason is StopReason.CANCEL:
            error = StepError(kind=ErrorKind.CANCELLED, message="not run: cancelled")
            self._set(batch, slot, status=StepStatus.CANCELLED, error=error, finished_at=now)
            self._event(EventKind.STEP_CANCELLED, slot.step.id, error=error_json(error))
        elif self._stop_reason is StopReason.DEADLINE:
            self._skip(batch, slot, SkipReason.STOPPED, self._deadline_passed())
        elif self._stop_reason is StopReason.FAIL:
            why = f"the plan failed when step {self._culprit!r} failed"
            self._skip(batch, slot, SkipReason.STOPPED, why)
        else:
            why = "its dependencies could never be satisfied (a bug)"
            self._skip(batch, slot, SkipReason.DEPENDENCY, why)

    def _end_status(self, waiting: list[str]) -> PlanStatus:
        """The plan's status as the run ends (and why, in `_message`)."""
        if self._stop_reason is None:
            if waiting:
                self._message = interrupted_message(waiting)
                return PlanStatus.INTERRUPTED
            if all(s.state.satisfies_dependents for s in self._slots.values()):
                return PlanStatus.COMPLETED
            return PlanStatus.FAILED
        if self._stop_reason is StopReason.DEADLINE:
            self._message = self._deadline_passed()
        elif self._stop_reason is StopReason.FAIL:
            self._message = f"step {self._culprit!r} failed"
        else:
            self._message = "cancelled on request"
        if waiting and self._stop_reason is not StopReason.CANCEL:
            names = ", ".join(repr(s) for s in sorted(waiting))
            self._message += (
                f"; step(s) {names} may or may not have taken effect: executing the plan "
                "again asks for a decision on them"
            )
        if self._stop_reason is StopReason.CANCEL:
            return PlanStatus.CANCELLED
        return PlanStatus.FAILED
