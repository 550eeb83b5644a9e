"""The execution engine: runs approved plans durably, in parallel, as their DAG allows.

Usage:

```python
async with Scheduler(store, pool, SchedulerConfig(max_parallel_steps=16)) as scheduler:
    await scheduler.resume()                        # once, at start: pick up crashed runs
    run = await scheduler.start(plan_id)            # returns as soon as the run is durable
    async with scheduler.subscribe(plan_id) as events:  # live events, ends with plan_finished
        async for event in events:
            print(event.kind, event.step_id, scheduler.progress_now(plan_id))
    report = await run.wait()                       # ExecutionReport: every step, its outcome
```

The API (all on `Scheduler`; a `Run` is the handle of one active run):

- `start(plan_id, *, version=None, on_interrupted=None) -> Run` checks approval
  (`ApprovalError` unless `approved_hash == plan_hash`), commits the plan as
  `executing` and starts the run in the background. Nothing yields between
  registering the run and returning, so a `subscribe()` right after `start()`
  sees every event of the run, `execution_started` included. A plan left
  `executing` by a process that is gone is taken over and resumed (see Leases);
  one a live process runs is refused, naming that process.
- `execute(plan_id, *, version=None, wait=True, on_interrupted=None) -> ExecutionReport`
  is `start` and, with `wait`, `Run.wait()`; without, the report as it stands.
- `cancel(plan_id, *, wait_s=None) -> ExecutionReport` ends an active run
  `cancelled` (in-flight calls are cancelled downstream; nothing runs
  afterwards; well under a second), asks another live process to do so and
  waits for it (see Cancel requests), or cancels a `confirmed` / `interrupted`
  / orphaned `executing` plan in the store.
- `wait(plan_id)`, `report(plan_id, version=None)`: the final (or current) report.
- `progress(plan_id) -> ExecutionProgress`: a snapshot; `progress_now` is its
  synchronous form for active runs.
- `subscribe(plan_id) -> Subscription`: an async iterator of `Event`s of the
  plan's active run (`step_started`, `step_progress` — forwarded downstream
  progress —, `step_succeeded`, `step_failed`, `step_retrying`, `step_skipped`,
  `step_cancelled`, `plan_finished`, ...); it ends after the run ends, and at
  once if the plan has no active run here. A slow subscriber never slows the
  run: past `subscription_buffer` unread events, further ones are dropped
  and counted in `Subscription.dropped` (the store's event log has them all,
  except `step_progress`, which is live only).
- `resume() -> list[Run]` claims the `executing` plan versions no live process
  runs (after a crash: see Leases) and resumes them; call it at start (and
  again later to take over runs whose owner's lease has since expired).
- `get_run(plan_id) -> Run | None`, `active() -> list[PlanId]`: runs in progress here;
  `owner(plan_id) -> RunOwner | None`: who runs it, wherever, and whether it is alive.

`Run` (the handle): `plan`, `plan_id`, `version`, `done`, `await wait()`,
`cancel()`, `report()`, `progress()`, `subscribe()`. `ExecutionReport` lists
every step (`StepReport`: status, attempts, duration, output or error), with
`message` (why it ended, or what it waits for) and `needs_decision`.

Semantics:

- **Readiness.** A step is dispatched the moment its last dependency succeeds
  (no levels, no polling), highest first by the length of the chain it heads.
  Three limits hold at once: runs in progress (`max_concurrent_executions`),
  steps in flight per run (the agent's `max_parallel_steps`, else the
  config's), and calls in flight per server (`max_calls_per_server`, per-server
  overrides; the pool keeps its own limit as well).
- **One writer.** Each run has one coordinator task, the only writer of its
  state. Step calls run in the run's task group, each under its own
  `CancelScope`, and send their outcome back over a memory object stream.
  The coordinator folds every message that is waiting into one `WriteBatch`
  and commits it before acting on it: a step's `running` state and attempt
  record are committed before its tool is called, a result before any
  dependent is called.
- **Data.** `${step.path}` references are resolved just before a step is
  called, and the arguments are then checked against the tool's `inputSchema`
  (from the caller's catalog, read when the run starts); a reference that does
  not resolve, or arguments that do not fit, fail the step with
  `invalid_arguments` without calling the tool (never retried).
- **Retries.** The step's `RetryPolicy`, else the agent's, else the config's:
  exponential backoff with jitter, non-retryable kinds, one `AttemptRecord`
  per try. While it waits for a retry a step stays `running`. Whether a failed
  call may be repeated at all is `executor.retry.decide`'s call, from the
  failure's delivery and the tool's annotations in the caller's catalog: a
  call that may have taken effect (a timeout, a server lost mid-call) is
  retried only for a tool annotated idempotent or read-only (or a policy with
  `non_idempotent`), and is otherwise `interrupted`; an argument or protocol
  error is never retried; a tool error only for a tool safe to repeat.
- **Interrupted steps** wait for a decision and block only their dependents:
  everything else runs to the end, and the plan becomes `interrupted` once
  nothing else can run. A run that stops on a failure or its deadline marks a
  call it cut off `interrupted` too, when its tool is not safe to repeat.
- **Timeouts.** The per-step timeout (step, else agent, else config, else the
  pool's default) goes to the caller, which enforces it (the pool extends it
  while the server reports progress). The plan's deadline (`deadline_s`, else
  the agent's) counts from the run's `started_at` — set when a run starts, when
  a failed plan is re-run and when an interrupted one gets its decision, but
  kept across a resume after a crash. Past it, in-flight steps fail with
  `timeout`, the rest are `skipped`, and the plan fails.
- **Failure.** `on_error="fail"`: calls in flight are cancelled (they end
  `cancelled` — or `succeeded` if the result came back first), steps not
  started end `skipped`, the plan `failed`. `on_error="continue"`: the step's
  dependents (transitively) are `skipped`, independent branches go on, and the
  plan ends `failed`, because not everything succeeded. A plan ends
  `completed` only when every step succeeded (or was skipped by decision).
- **Cancellation.** In-flight steps and steps not started end `cancelled`,
  and so does the plan; pending retries are dropped.
- **Durability and resume.** A step found `running` after a crash with its
  last attempt still open was in flight: the same rule decides (a crash spends
  no attempt): it is queued again when its tool is annotated idempotent or
  read-only in the caller's catalog, otherwise it is marked `interrupted`, and
  the run resumes everything that does not depend on it before the plan waits
  for a decision. A step found `running` between attempts (waiting to retry) is
  simply queued again. Executing an interrupted plan again (or a failed one that
  has interrupted steps) takes `on_interrupted`: `"rerun"`
  calls those steps again (their side effect may happen twice), `"skip"`
  marks them `skipped` and treats them as done without an output — they are
  never run again, not even by re-running a failed plan, and their dependents
  run (a dependent that reads a skipped step's output fails with
  `invalid_arguments`). A mapping `{step_id: "rerun" | "skip"}` decides step
  by step. Without a decision an interrupted run does not start and the report
  says why (`message`, `needs_decision`). Executing a `failed` plan again
  re-runs only its failed, skipped and cancelled steps; succeeded steps are
  never re-run and their outputs are read from the store.
- **Shutdown.** Leaving the `Scheduler` context cancels active runs without
  writing anything more: to the store they look exactly like a crash, and
  `resume()` at the next start treats them so (a non-idempotent call that was
  in flight may have happened, so it is `interrupted`). Only their leases are
  released, so that the next start need not wait for them to expire.
- **Progress.** `ExecutionProgress.eta_s` is the larger of the remaining
  critical path and the remaining work over the steps allowed in flight, with
  durations from the store's per-tool history (read when the run starts),
  else this run's own means; `None` when any step left has nothing to go by.

Other processes: the store keeps no state another process could make stale,
and every status change is checked against the stored status inside the
write's transaction.

Leases: each `Scheduler` has a unique owner id (`Scheduler.lease.owner`:
host, pid, process start time, random token), and every run it executes is
held by a lease on the plan version's row — an owner and an expiry
(`SchedulerConfig.lease_s`, 30 s by default). `start()` claims the run in the
same transaction that makes the plan `executing`; `resume()` claims, in one
atomic conditional UPDATE, only versions without an owner (rows from before
leases, runs released at shutdown), with an expired lease, or whose owner is a
process on this machine that has ended — so two processes resuming at once
never both take a plan, and a live owner's runs are never taken. The owner
renews the leases of the runs going on here every `lease_s / 3` (one
transaction) and with every write of a run; a run that ends (or is cancelled, or waits for a
decision) releases its lease with its final status change. Every write of a
run requires the plan to be still `executing` and still held by this owner
(`WriteBatch.expect`), and the renewal notices a run that is no longer held,
so a run another process changed or took over stops — in-flight calls
cancelled, nothing more written — at the latest `lease_s / 3` later
(`Run.wait()` then raises a `UserError` saying so). A lease is wall-clock
time in the database: processes sharing one should have clocks in step to
well within `lease_s`, and an event loop blocked longer than `lease_s`
may lose its runs to another process (which then stops them here).

Taking over: `start()` on a plan version that is `executing` with no live
owner (no owner, a lapsed lease, or an owner process on this machine that has
ended) claims it for this scheduler alone (the same atomic claim) and resumes
it as `resume()` would; whoever else finds it so does the same, so a run whose
process was killed is finished by the next `execute` from any face.

Cancel requests: `cancel()` of a run that another live process holds writes
a request on the plan version (`Store.request_cancel`). Every scheduler waits
for requests on the runs it holds (`Store.wait_cancel_requests`: with SQLite a
cheap poll of `PRAGMA data_version` every `control_poll_s`; a server database
would notify) and cancels such a run as if `cancel()` were called here; the
asking side answers `cancelled` once the run has ended, or after `wait_s` says
the request stands. A request outlives its asker and a crash of the owner:
whoever takes the run over cancels it instead of resuming it.

A store failure stops a run cleanly: a write that fails (a full disk, say)
cancels the calls in flight, writes nothing more, releases the lease (the run
is no longer renewed even if that release fails) and makes `Run.wait()` raise
a `StoreError` saying what failed; the plan stays `executing`, and `start()`
takes it over and resumes it once the cause is fixed.
"""

from __future__ import annotations

import heapq
import logging
import math
import os
import random
import socket
import uuid
from collections import deque
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import TracebackType
from typing import Any, Literal, TypeAlias

import anyio
import psutil
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from pydantic import BaseModel, ConfigDict, Field

from executor.asking import Askers, DownstreamQuestion
from executor.calls import ToolCaller, ToolResult
from executor.catalog import Catalog, ToolAnnotations
from executor.errors import (
    ApprovalError,
    Delivery,
    ErrorKind,
    InternalError,
    NotFoundError,
    PlanValidationError,
    StepReferenceError,
    StoreError,
    ToolCallError,
    TransitionError,
    UserError,
)
from executor.ids import PlanId
from executor.outputs import OutputSummary, summarize
from executor.plan import (
    ExecutionProgress,
    OnError,
    Plan,
    PlanStatus,
    RetryPolicy,
    Step,
    StepError,
    StepStatus,
    check_transition,
    utc_now,
)
from executor.policy import AgentConfig, CallGate, ToolFilter, approved_agent
from executor.progress import DurationModel, PlanGraph, estimate_remaining_s
from executor.records import AttemptRecord, Event, EventKind, StepState, ToolStats
from executor.refs import StepValue, find_references, resolve_references
from executor.retry import Verdict, decide
from executor.store import (
    ExpectedPlanStatus,
    LeaseInfo,
    PlanStatusChange,
    RunLease,
    Store,
    WriteBatch,
)
from executor.validate import check_arguments

__all__ = [
    "Decision",
    "ExecutionReport",
    "OnInterrupted",
    "Run",
    "RunOwner",
    "Scheduler",
    "SchedulerConfig",
    "StepReport",
    "Subscription",
    "rejected_message",
]

logger = logging.getLogger(__name__)

Decision: TypeAlias = Literal["rerun", "skip"]
"""What to do with a step interrupted by a crash: call it again, or skip it."""

OnInterrupted: TypeAlias = Decision | Mapping[str, Decision]
"""One decision for every interrupted step, or one per step id."""


class SchedulerConfig(BaseModel):
    """Limits and defaults of the execution engine."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_concurrent_executions: int = Field(default=4, ge=1, le=10_000)
    """Runs in progress at once; further runs wait (still `executing`) for a slot."""
    max_parallel_steps: int = Field(default=16, ge=1, le=10_000)
    """Steps in flight per run, unless the plan's agent sets its own."""
    max_calls_per_server: int = Field(default=8, ge=1, le=10_000)
    """Calls in flight per downstream server, across all runs."""
    server_max_calls: dict[str, int] = Field(default_factory=dict)
    """Per-server overrides of `max_calls_per_server`."""
    tool_filters: dict[str, ToolFilter] = Field(default_factory=dict)
    """Each server's `allowed_tools` / `denied_tools`, checked before every call."""
    default_retry: RetryPolicy = RetryPolicy()
    """Retry policy for steps whose plan and agent set none."""
    default_step_timeout_s: float | None = Field(default=None, gt=0)
    """Per-attempt timeout when neither step nor agent sets one (`None`: the caller's)."""
    subscription_buffer: int = Field(default=10_000, ge=1)
    """Unread events a subscription holds before it drops further ones."""
    resume_catalog_timeout_s: float = Field(default=60.0, gt=0)
    """How long a run starting (or `resume()`) waits for the caller's catalog: the tool
    annotations that say what is safe to repeat, and the input schemas."""
    lease_s: float = Field(default=30.0, gt=0, le=86_400)
    """How long this process's claim on a run holds without renewal; renewed every
    third of it. A crashed process's runs can be resumed elsewhere once it passes."""
    control_poll_s: float = Field(default=0.2, gt=0, le=60)
    """How often the runs here look for cancel requests from other processes, and a
    cancel from here looks whether another process's run has stopped."""
    cancel_wait_s: float = Field(default=10.0, ge=0, le=86_400)
    """How long `cancel()` waits for another process to stop its run before answering
    that the request is made and the run still stopping."""


class StepReport(BaseModel):
    """One step's outcome in an `ExecutionReport`."""

    model_config = ConfigDict(frozen=True)

    id: str
    """The step id."""
    server: str
    """The server it calls."""
    tool: str
    """The tool it calls."""
    status: StepStatus
    """Where it stands."""
    attempts: int
    """Attempts made, over every run of the plan."""
    duration_s: float | None
    """Seconds from its first attempt of the latest run to its end, when both are known."""
    output: Any = None
    """Its output, when it succeeded and is small (`summary.inline`)."""
    error: StepError | None = None
    """Why it failed, was skipped, cancelled or interrupted."""
    summary: OutputSummary | None = None
    """Size, beginning, shape and content blocks of its output, when it succeeded."""


class ExecutionReport(BaseModel):
    """Where a plan's run stands, or how it ended, step by step."""

    model_config = ConfigDict(frozen=True)

    plan_id: PlanId
    """The plan."""
    version: int
    """The version that ran."""
    status: PlanStatus
    """The plan's status."""
    started_at: datetime | None = None
    """When the latest run started."""
    finished_at: datetime | None = None
    """When it ended (`None` while running)."""
    duration_s: float | None = None
    """Seconds from start to end, when both are known."""
    counts: dict[StepStatus, int]
    """Steps in each status (every status present)."""
    steps: tuple[StepReport, ...]
    """Every step, in plan order."""
    message: str | None = None
    """Anything the caller should know, such as what decision an interrupted plan awaits."""
    needs_decision: tuple[str, ...] = ()
    """Interrupted steps (by a crash, or an ambiguous failure) that await `on_interrupted`
    (`rerun` or `skip`)."""


@dataclass(frozen=True, slots=True)
class RunOwner:
    """Who runs an `executing` plan version, and whether it still can (see Leases).

    Attributes:
        plan_id: The plan.
        version: The plan version.
        owner: The owner's id; `None` when nobody holds the run (it was let go).
        host: The owner's machine, when its id says.
        pid: The owner's process id on that machine, when its id says.
        alive: Whether that process still runs; known on this machine only
            (`None` elsewhere: the lease decides).
        lease_until: When the owner's claim lapses unless renewed.
        lapsed: Whether it has lapsed.
        here: Whether the owner is the scheduler asking.
    """

    plan_id: PlanId
    version: int
    owner: str | None
    host: str | None
    pid: int | None
    alive: bool | None
    lease_until: datetime | None
    lapsed: bool
    here: bool

    @property
    def holds(self) -> bool:
        """Whether a live owner holds the run, so that no other process may take it."""
        return self.owner is not None and self.alive is not False and not self.lapsed

    def describe(self) -> str:
        """Say who runs the plan, and whether it still does, in a clause."""
        if self.owner is None:
            return "nobody runs it (the process that ran it let it go)"
        if self.here:
            return "this process runs it"
        who = (
            f"process {self.pid} on {self.host}"
            if self.pid is not None
            else f"owner {self.owner!r}"
        )
        until = "" if self.lease_until is None else f"{self.lease_until:%H:%M:%S} UTC"
        if self.alive is False:
            return f"{who} ran it and is no longer running"
        if self.lapsed:
            return f"{who} ran it but has not renewed its lease since {until}"
        if self.alive:
            return f"{who} runs it and is alive (its lease holds until {until})"
        return (
            f"{who} runs it (another machine: it holds the run while it renews its "
            f"lease, now until {until})"
        )


class Subscription:
    """Live events of one plan's run, as an async iterator.

    Iteration ends after the run ends (its `plan_finished` event is the last)
    or when the subscription is closed. Use it as a context manager, or call
    `close()`, to stop receiving early.

    Attributes:
        plan_id: The plan followed.
        dropped: Events not delivered because the buffer was full.
    """

    def __init__(self, plan_id: str, limit: int) -> None:
        self.plan_id = plan_id
        self.dropped = 0
        self._limit = limit
        self._items: deque[Event] = deque()
        self._closed = False
        self._wakeup: anyio.Event | None = None

    @property
    def closed(self) -> bool:
        """Whether no further events will arrive."""
        return self._closed

    def _push(self, event: Event) -> None:
        if self._closed:
            return
        if len(self._items) >= self._limit:
            self.dropped += 1
            return
        self._items.append(event)
        if self._wakeup is not None:
            self._wakeup.set()

    def close(self) -> None:
        """Stop the subscription; events already received can still be read."""
        self._closed = True
        if self._wakeup is not None:
            self._wakeup.set()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        while not self._items:
            if self._closed:
                raise StopAsyncIteration
            # A fresh event per wait: set() from _push wakes exactly this waiter.
            self._wakeup = anyio.Event()
            await self._wakeup.wait()
        return self._items.popleft()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# --- messages from step tasks and timers to the coordinator -------------------------------


@dataclass(slots=True)
class _Outcome:
    step_id: str
    attempt: int
    result: ToolResult | None = None
    error: StepError | None = None
    delivery: Delivery = Delivery.AMBIGUOUS
    finished_at: datetime = field(default_factory=utc_now)
    duration_s: float = 0.0
    call_s: float | None = None
    """The call's own seconds, when the tool was called (kept with the attempt)."""

    @property
    def cancelled(self) -> bool:
        return self.result is None and self.error is None


@dataclass(slots=True, frozen=True)
class _Progress:
    step_id: str
    attempt: int
    progress: float
    total: float | None
    message: str | None


@dataclass(slots=True, frozen=True)
class _RetryDue:
    step_id: str


@dataclass(slots=True, frozen=True)
class _TaskStarted:
    """A call became a downstream task: record its id with the attempt, then say so."""

    step_id: str
    attempt: int
    task_id: str
    recorded: anyio.Event


class _StopReason(StrEnum):
    FAIL = "fail"
    DEADLINE = "deadline"
    CANCEL = "cancel"


@dataclass(slots=True, frozen=True)
class _Stop:
    reason: _StopReason


_Msg: TypeAlias = _Outcome | _Progress | _RetryDue | _TaskStarted | _Stop


class _StepTask:
    """A step's call as the pool sees it when the call becomes a downstream task."""

    def __init__(self, run: Run, slot: _Slot, attempt: int) -> None:
        self._run = run
        self._step_id = slot.step.id
        self._attempt = attempt
        self._resume = slot.resume_task

    async def started(self, task_id: str) -> None:
        """Commit the task id with the attempt, through the coordinator, and wait for it."""
        send = self._run._send
        assert send is not None
        recorded = anyio.Event()
        send.send_nowait(_TaskStarted(self._step_id, self._attempt, task_id, recorded))
        await recorded.wait()

    def cancel_downstream(self) -> bool:
        """Cancelled by the run (cancel, failure, deadline): yes; by a shutdown: no."""
        return self._run._stop is not None

    def resuming(self) -> str | None:
        """The task recorded before a crash, which this attempt follows."""
        return self._resume

    async def ask(self, server: str, tool: str, request: dict[str, Any]) -> dict[str, Any]:
        """Pass the tool's request to whoever follows the plan (`Scheduler.askers`)."""
        run = self._run
        question = DownstreamQuestion(
            plan_id=run.plan.id,
            step_id=self._step_id,
            server=server,
            tool=tool,
            method=str(request.get("method", "")),
            params=dict(request.get("params") or {}),
        )
        return await run._sched.askers.ask(question)


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
    task_id: str | None = None
    """The downstream task the attempt in flight became (MCP Tasks)."""
    resume_task: str | None = None
    """A downstream task recorded before a crash: the next attempt follows it."""


_LOOK_AGAIN_S = 1.0
"""How long to wait after the store failed to say whether there are cancel requests."""

_ETA_RECOMPUTE_ABOVE = 1_000
"""Plans with more steps than this recompute their ETA at most every quarter second."""
_ETA_RECOMPUTE_EVERY_S = 0.25


def _satisfies(state: StepState) -> bool:
    """Whether a dependent may run after this step."""
    if state.status is StepStatus.SUCCEEDED:
        return True
    return _skipped_by_decision(state)


def _skipped_by_decision(state: StepState) -> bool:
    return (
        state.status is StepStatus.SKIPPED
        and state.error is not None
        and state.error.kind is ErrorKind.INTERRUPTED
    )


def _count(states: Collection[StepState]) -> dict[StepStatus, int]:
    counts = dict.fromkeys(StepStatus, 0)
    for s in states:
        counts[s.status] += 1
    return counts


def _progress(
    plan_id: PlanId,
    status: PlanStatus,
    total: int,
    counts: dict[StepStatus, int],
    running_steps: tuple[str, ...],
    elapsed_s: float,
    eta_s: float | None,
) -> ExecutionProgress:
    """The progress snapshot of a run of `total` steps, with these counts (every status)."""
    done = sum(n for st, n in counts.items() if st.is_terminal)
    return ExecutionProgress(
        plan_id=plan_id,
        status=status,
        total=total,
        counts=counts,
        completed=counts[StepStatus.SUCCEEDED],
        failed=counts[StepStatus.FAILED],
        running=counts[StepStatus.RUNNING],
        running_steps=running_steps,
        percent=100.0 * done / total if total else 100.0,
        elapsed_s=elapsed_s,
        eta_s=eta_s,
    )


def _error_json(error: StepError | None) -> dict[str, str] | None:
    return None if error is None else {"kind": error.kind.value, "message": error.message}


def _new_batch() -> WriteBatch:
    return WriteBatch(step_states=[], attempts=[], events=[], durations=[])


def _build_report(
    plan: Plan,
    states: Mapping[str, StepState],
    status: PlanStatus,
    started_at: datetime | None,
    finished_at: datetime | None,
    message: str | None = None,
) -> ExecutionReport:
    steps = []
    for step in plan.steps:
        st = states.get(step.id) or StepState(
            plan_id=plan.id, version=plan.version, step_id=step.id
        )
        steps.append(
            StepReport(
                id=step.id,
                server=step.server,
                tool=step.tool,
                status=st.status,
                attempts=st.attempts,
                duration_s=st.duration_s,
                output=st.output,
                error=st.error,
                summary=st.summary,
            )
        )
    duration = None
    if started_at is not None and finished_at is not None:
        duration = (finished_at - started_at).total_seconds()
    needs = tuple(s.id for s in steps if s.status is StepStatus.INTERRUPTED)
    if status is PlanStatus.INTERRUPTED and message is None and needs:
        message = _interrupted_message(needs)
    return ExecutionReport(
        plan_id=plan.id,
        version=plan.version,
        status=status,
        started_at=started_at,
        finished_at=finished_at,
        duration_s=duration,
        counts=_count([s for s in (states.get(x.id) for x in plan.steps) if s is not None]),
        steps=tuple(steps),
        message=message,
        needs_decision=needs if status is PlanStatus.INTERRUPTED else (),
    )


def _interrupted_message(step_ids: Collection[str]) -> str:
    names = ", ".join(repr(s) for s in sorted(step_ids))
    return (
        f"the plan waits for a decision: step(s) {names} may or may not have taken effect "
        "(each step's error says why), and their tools are not annotated idempotent or "
        "read-only; everything that does not depend on them has run. Execute the plan "
        "again with on_interrupted='rerun' (call them again, possibly repeating their "
        "effect) or on_interrupted='skip' (treat them as done without an output and go on)"
    )


def _retry_policy(step: Step, agent: AgentConfig | None, config: SchedulerConfig) -> RetryPolicy:
    """The step's retry policy, else its agent's, else the scheduler's default."""
    if step.retry is not None:
        return step.retry
    if agent is not None and agent.retry is not None:
        return agent.retry
    return config.default_retry


def _annotations(catalog: Catalog, step: Step) -> ToolAnnotations | None:
    info = catalog.get(step.server, step.tool)
    return None if info is None else info.annotations


class Run:
    """One active run of one plan version; the coordinator is its only writer.

    Attributes:
        plan: The plan version being run.
    """

    def __init__(
        self,
        scheduler: Scheduler,
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
        resume_tasks: Mapping[str, str] | None = None,
    ) -> None:
        self.plan = plan
        self._sched = scheduler
        self._store = scheduler.store
        self._caller = scheduler.caller
        # The policy as approved and the agent's as it is now, both checked before each
        # call; limits and retry are the ones approved with the plan.
        self._gate = CallGate.for_plan(plan, agent, scheduler.config.tool_filters)
        agent = approved_agent(plan, agent)
        self._agent = agent
        self._graph = graph or PlanGraph.of(plan.steps)
        limits = agent.limits if agent is not None else None
        self._limit = (
            limits.max_parallel_steps
            if limits is not None and limits.max_parallel_steps is not None
            else scheduler.config.max_parallel_steps
        )
        self._step_timeout = (
            limits.step_timeout_s
            if limits is not None and limits.step_timeout_s is not None
            else scheduler.config.default_step_timeout_s
        )
        deadline = plan.deadline_s
        if deadline is None and limits is not None:
            deadline = limits.plan_deadline_s
        self._deadline_s = deadline
        self._started_at = started_at or utc_now()
        # Every write checks that the plan is still executing AND still ours, and renews
        # our lease on it.
        self._expect = ExpectedPlanStatus(
            plan.id, plan.version, PlanStatus.EXECUTING, lease=scheduler.lease
        )
        self._finished_at: datetime | None = None
        self._status = PlanStatus.EXECUTING
        self._message: str | None = None
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
            if resume_tasks is not None:
                slot.resume_task = resume_tasks.get(step.id)
            self._slots[step.id] = slot
            if st.status is StepStatus.SUCCEEDED and step.id in referenced:
                self._to_load.append(step.id)
        self._counts = _count([s.state for s in self._slots.values()])
        self._changes = 0
        self._eta_cache: tuple[float, int, float | None] = (-1.0, -1, None)
        self._ready: list[tuple[int, int, str]] = []
        self._in_flight: set[str] = set()
        self._retrying: set[str] = set()
        self._stop: _StopReason | None = None
        self._culprit: str | None = None
        self._finished = False
        self._ending: tuple[PlanStatus, datetime] | None = None
        self._start_events = start_events
        self._outbox: list[Event] = []
        self._subscribers: list[Subscription] = []
        self._done = anyio.Event()
        self._failure: BaseException | None = None
        self._report: ExecutionReport | None = None
        self._tg: TaskGroup | None = None
        self._queue_scope: anyio.CancelScope | None = None
        self._cancel_requested = False
        # Made in _main, so that a run whose task never starts leaves no stream open.
        self._send: MemoryObjectSendStream[_Msg] | None = None
        self._recv: MemoryObjectReceiveStream[_Msg] | None = None
        # Step calls waiting for their downstream task id to be committed.
        self._recorded: list[anyio.Event] = []

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
    def done(self) -> bool:
        """Whether the run has ended (or stopped because the scheduler closed)."""
        return self._done.is_set()

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
                self._send.send_nowait(_Stop(_StopReason.CANCEL))
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                pass  # The run has just ended.

    def _lose(self) -> None:
        """Another process changed the plan or took the run over: stop, writing nothing more.

        In-flight calls are cancelled; `wait()` raises a `UserError` saying why.
        """
        if self.done or self._ending is not None or self._failure is not None:
            return
        self._failure = UserError(
            f"the run of plan {self.plan.id!r} version {self.plan.version} stopped: another "
            "process changed it or took it over (this process's lease on it is gone); look "
            "at the plan again before doing anything with it"
        )
        logger.warning("%s", self._failure)
        if self._queue_scope is not None:
            self._queue_scope.cancel()
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    def subscribe(self) -> Subscription:
        """Follow this run's events from now on (see `Subscription`)."""
        sub = Subscription(self.plan.id, self._sched.config.subscription_buffer)
        if self.done:
            sub.close()
        else:
            self._subscribers.append(sub)
        return sub

    def report(self) -> ExecutionReport:
        """The report as the run stands now (final once `done`)."""
        if self._report is not None:
            return self._report
        return _build_report(
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
        return _progress(
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
        return estimate_remaining_s(self._graph, remaining, self._limit)

    # --- the coordinator --------------------------------------------------------------------

    async def _main(self) -> None:
        send, recv = anyio.create_memory_object_stream[_Msg](math.inf)
        self._send, self._recv = send, recv
        if self._cancel_requested:
            send.send_nowait(_Stop(_StopReason.CANCEL))
        try:
            self._publish(self._start_events)
            self._start_events = []
            acquired = False
            with anyio.CancelScope() as scope:
                # A cancel while queued for a slot cancels this wait; the queued
                # _Stop message then ends the run before anything is dispatched.
                self._queue_scope = scope
                await self._sched._executions.acquire_on_behalf_of(self)
                acquired = True
                if self._catalog is None:
                    self._catalog = await self._sched._tool_catalog()
            self._queue_scope = None
            try:
                if self._failure is None:  # not lost while it waited for a slot
                    await self._coordinate()
            finally:
                if acquired:
                    self._sched._executions.release_on_behalf_of(self)
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
            for sub in self._subscribers:
                sub.close()
            self._subscribers.clear()
            if self._finished:
                self._report = self.report()
            elif self._failure is None:
                self._message = (
                    "the scheduler closed during the run; it resumes when taskorch starts again"
                )
            else:
                self._message = str(self._failure)
                # Stopped for good here: let any process (or a later execute) take it,
                # rather than hold a run nothing works on.
                with anyio.CancelScope(shield=True):
                    await self._sched._release(self.plan.id, self.plan.version)
            self._sched._forget(self)
            self._done.set()

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
            result = await self._store.get_step_result(self.plan.id, self.plan.version, sid)
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
            if self._failure is not None:
                return
            await self._load_outputs()
            if self._deadline_s is not None:
                left = self._deadline_s - (utc_now() - self._started_at).total_seconds()
                tg.start_soon(self._deadline_timer, max(left, 0.0))
            batch = _new_batch()
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
                try:
                    await self._commit(batch)
                    recorded, self._recorded = self._recorded, []
                    for event in recorded:
                        event.set()
                except TransitionError as exc:
                    # Another process changed the plan (cancelled it, say): stop here,
                    # call nothing more, and cancel what is in flight.
                    raise UserError(
                        f"the run of plan {self.plan.id!r} stopped: {exc}; "
                        "look at the plan again before doing anything with it"
                    ) from exc
                for launch in launches:
                    tg.start_soon(self._call, *launch)
                if self._ending is not None:
                    self._status, self._finished_at = self._ending
                    self._finished = True
                    break
                batch = _new_batch()
                try:
                    # A message that came during the commit is handled at once:
                    # receive() would first yield one event-loop turn (a checkpoint)
                    # even with a message waiting. The commit has just yielded anyway.
                    msg = recv.receive_nowait()
                except anyio.WouldBlock:
                    msg = await recv.receive()
                self._handle(msg, batch)
            tg.cancel_scope.cancel()

    async def _commit(self, batch: WriteBatch) -> None:
        outbox, self._outbox = self._outbox, []
        batch.events = [e for e in outbox if e.kind is not EventKind.STEP_PROGRESS]
        batch.expect = self._expect
        if len(batch.step_states) > 1:
            # A step can change twice in one batch (retrying, then stopped); the last wins.
            batch.step_states = list({s.step_id: s for s in batch.step_states}.values())
        if len(batch.attempts) > 1:
            batch.attempts = list({(a.step_id, a.attempt): a for a in batch.attempts}.values())
        if batch.events and self._subscribers:
            stored = iter(await self._store.write_returning_events(batch))
            # Hand subscribers the events with the seq the store gave them.
            outbox = [e if e.kind is EventKind.STEP_PROGRESS else next(stored) for e in outbox]
        elif batch:
            await self._store.write(batch)
        self._publish(outbox)

    def _publish(self, events: list[Event]) -> None:
        if not self._subscribers:
            return
        self._subscribers = [s for s in self._subscribers if not s.closed]
        for ev in events:
            for sub in self._subscribers:
                sub._push(ev)

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
                if _satisfies(dst):
                    continue
                # An interrupted dependency waits for a decision; it has not failed.
                if dst.status.is_terminal and dst.status is not StepStatus.INTERRUPTED:
                    blocked = True
                slot.waiting += 1
            if blocked:
                self._skip(batch, slot, "a dependency did not succeed")
            elif slot.waiting == 0:
                self._push_ready(slot)

    def _push_ready(self, slot: _Slot) -> None:
        heapq.heappush(self._ready, (-self._graph.height[slot.step.id], slot.index, slot.step.id))

    def _policy(self, step: Step) -> RetryPolicy:
        return _retry_policy(step, self._agent, self._sched.config)

    def _annotations(self, step: Step) -> ToolAnnotations | None:
        return None if self._catalog is None else _annotations(self._catalog, step)

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

    def _dispatch(self, batch: WriteBatch) -> list[tuple[_Slot, int, dict[str, Any]]]:
        launches: list[tuple[_Slot, int, dict[str, Any]]] = []
        while self._ready and self._stop is None and len(self._in_flight) < self._limit:
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
                task_id=slot.resume_task,
            )
            slot.task_id = slot.resume_task
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
                self._set(
                    batch,
                    slot,
                    status=StepStatus.RUNNING,
                    attempts=attempt,
                    started_at=slot.state.started_at or now,
                )
                self._attempt_done(batch, record, StepStatus.FAILED, now, error)
                self._fail(batch, slot, error, attempt)
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

    def _open_attempt(
        self, slot: _Slot, attempt: int, call_s: float | None = None
    ) -> AttemptRecord:
        return AttemptRecord(
            plan_id=self.plan.id,
            version=self.plan.version,
            step_id=slot.step.id,
            attempt=attempt,
            started_at=slot.attempt_started or utc_now(),
            call_s=call_s,
            task_id=slot.task_id,
        )

    async def _call(self, slot: _Slot, attempt: int, arguments: dict[str, Any]) -> None:
        step = slot.step
        scope = slot.scope
        assert scope is not None
        outcome: _Outcome | None = None
        send = self._send
        assert send is not None

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            try:
                send.send_nowait(_Progress(step.id, attempt, progress, total, message))
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                pass

        timeout = step.timeout_s if step.timeout_s is not None else self._step_timeout
        t0 = anyio.current_time()
        called = False
        limiter = self._sched._server_limiter(step.server)
        with scope:
            try:
                try:
                    # Uncontended, take the slot without a checkpoint: one event-loop
                    # round less between a dependency's end and this call's start.
                    limiter.acquire_nowait()
                except anyio.WouldBlock:
                    await limiter.acquire()
                try:
                    t0 = anyio.current_time()
                    called = True
                    result = await self._caller.call(
                        step.server,
                        step.tool,
                        arguments,
                        timeout_s=timeout,
                        on_progress=on_progress,
                        task=_StepTask(self, slot, attempt),
                    )
                finally:
                    limiter.release()
                outcome = _Outcome(step.id, attempt, result=result)
            except ToolCallError as exc:
                error = StepError(kind=exc.kind, message=str(exc))
                outcome = _Outcome(step.id, attempt, error=error, delivery=exc.delivery)
            except Exception as exc:
                logger.exception(
                    "calling %s.%s for step %r failed", step.server, step.tool, step.id
                )
                outcome = _Outcome(
                    step.id,
                    attempt,
                    error=StepError(
                        kind=ErrorKind.INTERNAL,
                        message=f"the call raised {type(exc).__name__}: {exc}",
                    ),
                )
        if outcome is None:
            outcome = _Outcome(step.id, attempt)
        outcome.duration_s = anyio.current_time() - t0
        if called:
            outcome.call_s = outcome.duration_s
        send.send_nowait(outcome)

    async def _retry_timer(self, step_id: str, delay: float, scope: anyio.CancelScope) -> None:
        send = self._send
        assert send is not None
        with scope:
            await anyio.sleep(delay)
            send.send_nowait(_RetryDue(step_id))

    async def _deadline_timer(self, delay: float) -> None:
        send = self._send
        assert send is not None
        await anyio.sleep(delay)
        send.send_nowait(_Stop(_StopReason.DEADLINE))

    def _handle(self, msg: _Msg, batch: WriteBatch) -> None:
        if isinstance(msg, _Outcome):
            self._handle_outcome(msg, batch)
        elif isinstance(msg, _Progress):
            if msg.step_id in self._in_flight:
                self._event(
                    EventKind.STEP_PROGRESS,
                    msg.step_id,
                    attempt=msg.attempt,
                    progress=msg.progress,
                    total=msg.total,
                    message=msg.message,
                )
        elif isinstance(msg, _TaskStarted):
            self._task_started(msg, batch)
        elif isinstance(msg, _RetryDue):
            slot = self._slots[msg.step_id]
            if msg.step_id in self._retrying:
                self._retrying.discard(msg.step_id)
                slot.scope = None
                self._push_ready(slot)
        else:
            self._begin_stop(batch, msg.reason)

    def _task_started(self, msg: _TaskStarted, batch: WriteBatch) -> None:
        slot = self._slots[msg.step_id]
        if msg.step_id in self._in_flight and slot.state.attempts == msg.attempt:
            slot.task_id = msg.task_id
            batch.attempts.append(self._open_attempt(slot, msg.attempt))
        self._recorded.append(msg.recorded)

    def _handle_outcome(self, msg: _Outcome, batch: WriteBatch) -> None:
        slot = self._slots[msg.step_id]
        self._in_flight.discard(msg.step_id)
        slot.scope = None
        record = self._open_attempt(slot, msg.attempt, msg.call_s)
        slot.task_id = slot.resume_task = None
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
            annotations=self._annotations(slot.step),
        )
        if decision.verdict is Verdict.INTERRUPT:
            self._interrupt(batch, slot, record, error, decision.reason, msg.finished_at)
            return
        self._attempt_done(batch, record, StepStatus.FAILED, msg.finished_at, error)
        if self._stop is None and decision.verdict is Verdict.RETRY:
            delay = policy.delay_s(slot.run_attempts, self._sched._rng)
            self._set(batch, slot, error=error)
            scope = anyio.CancelScope()
            slot.scope = scope
            self._retrying.add(slot.step.id)
            assert self._tg is not None
            self._tg.start_soon(self._retry_timer, slot.step.id, delay, scope)
            self._event(
                EventKind.STEP_RETRYING,
                slot.step.id,
                attempt=msg.attempt,
                delay_s=round(delay, 3),
                error=_error_json(error),
            )
            return
        if decision.reason:
            error = StepError(kind=error.kind, message=f"{error.message} ({decision.reason})")
        self._fail(batch, slot, error, msg.attempt, msg.finished_at)

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
            error=_error_json(error),
        )

    def _succeed(
        self,
        batch: WriteBatch,
        slot: _Slot,
        record: AttemptRecord,
        result: ToolResult,
        msg: _Outcome,
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
        self._event(EventKind.STEP_FAILED, slot.step.id, attempt=attempt, error=_error_json(error))
        if self._stop is not None:
            return
        if slot.step.on_error is OnError.CONTINUE:
            self._skip_dependents(batch, slot.step.id)
        else:
            self._culprit = slot.step.id
            self._begin_stop(batch, _StopReason.FAIL)

    def _skip(self, batch: WriteBatch, slot: _Slot, why: str) -> None:
        error = StepError(kind=ErrorKind.CANCELLED, message=f"not run: {why}")
        self._set(batch, slot, status=StepStatus.SKIPPED, error=error, finished_at=utc_now())
        self._event(EventKind.STEP_SKIPPED, slot.step.id, reason=error.message)

    def _skip_dependents(self, batch: WriteBatch, failed: str) -> None:
        stack = list(self._graph.dependents[failed])
        while stack:
            sid = stack.pop()
            slot = self._slots[sid]
            if slot.state.status is not StepStatus.PENDING:
                continue
            self._skip(batch, slot, f"it depends on step {failed!r}, which did not succeed")
            stack.extend(self._graph.dependents[sid])

    def _begin_stop(self, batch: WriteBatch, reason: _StopReason) -> None:
        """Stop dispatching and cancel what is in flight; a cancel outranks the rest."""
        if self._ending is not None:
            return
        if self._stop is not None and not (
            reason is _StopReason.CANCEL and self._stop is not _StopReason.CANCEL
        ):
            return
        self._stop = reason
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

    def _stop_error(self) -> tuple[StepStatus, StepError]:
        """How an in-flight step ends when the run stops."""
        if self._stop is _StopReason.DEADLINE:
            return StepStatus.FAILED, StepError(
                kind=ErrorKind.TIMEOUT,
                message=f"the plan's deadline of {self._deadline_s:g} s passed",
            )
        if self._stop is _StopReason.FAIL:
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
        if record is not None and self._stop is not _StopReason.CANCEL:
            # Cut off mid-call by a failure or the deadline: it may have taken effect.
            decision = decide(
                error.kind,
                Delivery.AMBIGUOUS,
                policy=self._policy(slot.step),
                attempt=slot.run_attempts,
                annotations=self._annotations(slot.step),
            )
            if decision.verdict is Verdict.INTERRUPT:
                self._interrupt(batch, slot, record, error, decision.reason, at)
                return
        if record is not None:
            self._attempt_done(batch, record, status, at, error)
        self._set(batch, slot, status=status, error=error, finished_at=at)
        kind = EventKind.STEP_FAILED if status is StepStatus.FAILED else EventKind.STEP_CANCELLED
        self._event(kind, slot.step.id, attempt=slot.state.attempts, error=_error_json(error))

    def _maybe_finish(self, batch: WriteBatch) -> None:
        if self._in_flight or self._ending is not None:
            return
        if self._stop is None and (self._ready or self._retrying):
            return
        now = utc_now()
        leftover = [s for s in self._slots.values() if not s.state.status.is_terminal]
        waiting = [
            s.step.id for s in self._slots.values() if s.state.status is StepStatus.INTERRUPTED
        ]
        if self._stop is None and waiting:
            # Nothing else can run: what is left depends on steps awaiting a decision.
            leftover = []
        if self._stop is None and leftover:
            # Unreachable while dependencies are tracked right; finishing beats hanging.
            logger.error("plan %s: steps %s could never run", self.plan.id, leftover)
        for slot in leftover:
            if slot.state.status is StepStatus.RUNNING:
                # Queued for a retry when the stop came: it ends like a step in flight.
                self._stopped_in_flight(batch, slot, None, now)
            elif self._stop is _StopReason.CANCEL:
                error = StepError(kind=ErrorKind.CANCELLED, message="not run: cancelled")
                self._set(batch, slot, status=StepStatus.CANCELLED, error=error, finished_at=now)
                self._event(EventKind.STEP_CANCELLED, slot.step.id, error=_error_json(error))
            elif self._stop is _StopReason.DEADLINE:
                self._skip(batch, slot, f"the plan's deadline of {self._deadline_s:g} s passed")
            elif self._stop is _StopReason.FAIL:
                self._skip(batch, slot, f"the plan failed when step {self._culprit!r} failed")
            else:
                self._skip(batch, slot, "its dependencies could never be satisfied (a bug)")
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
        self._ending = (status, now)

    def _end_status(self, waiting: list[str]) -> PlanStatus:
        """The plan's status as the run ends (and why, in `_message`)."""
        if self._stop is None:
            if waiting:
                self._message = _interrupted_message(waiting)
                return PlanStatus.INTERRUPTED
            if all(_satisfies(s.state) for s in self._slots.values()):
                return PlanStatus.COMPLETED
            return PlanStatus.FAILED
        if self._stop is _StopReason.DEADLINE:
            self._message = f"the plan's deadline of {self._deadline_s:g} s passed"
        elif self._stop is _StopReason.FAIL:
            self._message = f"step {self._culprit!r} failed"
        else:
            self._message = "cancelled on request"
        if waiting and self._stop is not _StopReason.CANCEL:
            names = ", ".join(repr(s) for s in sorted(waiting))
            self._message += (
                f"; step(s) {names} may or may not have taken effect: executing the plan "
                "again asks for a decision on them"
            )
        return PlanStatus.CANCELLED if self._stop is _StopReason.CANCEL else PlanStatus.FAILED


class Scheduler:
    """Runs approved plans from a `Store` through a `ToolCaller` (see the module docs).

    Use it as an async context manager: runs live in its task group.
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
        self._rng = rng or random.Random()
        self._executions = anyio.CapacityLimiter(self.config.max_concurrent_executions)
        self._server_limits: dict[str, anyio.CapacityLimiter] = {}
        self._runs: dict[str, Run] = {}
        self._starting: set[str] = set()
        self._tg: TaskGroup | None = None
        self.lease = RunLease(_new_owner_id(), self.config.lease_s)
        """This scheduler's claim on the runs it executes (`lease.owner` is unique)."""
        # Claims are taken and turned into runs one at a time (resume, take-over, a
        # cancel of an abandoned run), so that two of them never resume one run.
        self._claim_lock = anyio.Lock()
        self._claims: set[tuple[str, int]] = set()
        """Runs claimed and being resumed: held, but not in `_runs` yet."""
        self._unreleased: set[tuple[str, int]] = set()
        """Runs that stopped here whose lease could not be released yet."""
        self._watch_scope: anyio.CancelScope | None = None
        self.askers = Askers()
        """Who answers the questions downstream tools ask, by plan (`executor.asking`)."""

    async def __aenter__(self) -> Scheduler:
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        tg.start_soon(self._keep_leases)
        tg.start_soon(self._watch_cancel_requests)
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
                try:
                    await self.store.release_leases(self.lease.owner)
                except Exception as error:
                    logger.warning("could not release this process's run leases: %s", error)

    async def _keep_leases(self) -> None:
        """Renew the leases of the runs here every third of their length; stop lost runs.

        Only runs that are going on here are renewed: one that stopped (on a store
        failure, say) lapses even if releasing it failed, and is released later.
        """
        while True:
            await anyio.sleep(self.lease.lease_s / 3)
            if self._unreleased:
                stopped = set(self._unreleased)
                self._unreleased -= stopped
                for plan_id, version in stopped:
                    await self._release(plan_id, version)
            # Only runs registered before the renewal can be judged by it: a run's
            # claim is committed before the run is registered.
            judged = list(self._runs.values())
            keys = {(r.plan_id, r.version) for r in judged} | self._claims
            if not keys:
                continue
            try:
                held = await self.store.renew_leases(self.lease, keys)
            except Exception:
                logger.exception("could not renew this process's run leases; will retry")
                continue
            for run in judged:
                if (run.plan_id, run.version) not in held:
                    run._lose()

    async def _watch_cancel_requests(self) -> None:
        """Cancel the runs here that another process asked to cancel (see `cancel`).

        The store says when one of the runs it is given has a request; a run that
        starts here restarts the wait, so that it is watched too.
        """
        while True:
            watched = {
                (r.plan_id, r.version): r
                for r in self._runs.values()
                if not r.done and not r._cancel_requested
            }
            asked: set[tuple[PlanId, int]] = set()
            with anyio.CancelScope() as scope:
                self._watch_scope = scope
                try:
                    if watched:
                        asked = await self.store.wait_cancel_requests(
                            set(watched), poll_s=self.config.control_poll_s
                        )
                    else:
                        await anyio.sleep_forever()
                except Exception as error:
                    logger.warning("could not look for cancel requests (%s); looking again", error)
                    await anyio.sleep(_LOOK_AGAIN_S)
            self._watch_scope = None
            for key in asked:
                run = watched.get(key)
                if run is not None:
                    logger.info("plan %s: another process asked to cancel the run", key[0])
                    run.cancel()

    def _server_limiter(self, server: str) -> anyio.CapacityLimiter:
        limiter = self._server_limits.get(server)
        if limiter is None:
            size = self.config.server_max_calls.get(server, self.config.max_calls_per_server)
            limiter = self._server_limits[server] = anyio.CapacityLimiter(size)
        return limiter

    def _forget(self, run: Run) -> None:
        if self._runs.get(run.plan.id) is run:
            del self._runs[run.plan.id]

    def active(self) -> list[PlanId]:
        """Ids of the plans with a run in progress in this scheduler."""
        return [PlanId(p) for p in self._runs]

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
    ) -> Run:
        """Start running a plan (or re-run its failed part, or resume it after a decision).

        A plan `executing` with no live owner (its process ended, or its lease
        lapsed, or it let the run go after a failure) is taken over and resumed
        here; a plan already running here gives that run's handle.

        Args:
            plan_id: The plan.
            version: The version to run; the latest when `None`.
            on_interrupted: What to do with the interrupted steps of an
                `interrupted` plan, or of a `failed` one (ignored otherwise).

        Returns:
            The run's handle; it is already finished (with `needs_decision`)
            when an interrupted plan was given no decision.

        Raises:
            NotFoundError: No such plan or version.
            ApprovalError: The plan is not approved, or not for its current content.
            UserError: The plan is running in another live process, or has nothing
                left to run.
            PlanValidationError: The plan's dependencies cannot be run (a cycle,
                an unknown step).
        """
        if self._tg is None:
            raise InternalError(
                "the Scheduler is not running: use it as `async with Scheduler(...)`"
            )
        active = self._runs.get(plan_id)
        if active is not None and on_interrupted is None:
            latest = version or max(await self.store.plan_versions(plan_id), default=0)
            if latest == active.version and self._runs.get(plan_id) is active:
                return active  # asked twice: follow the run that is going on
        if plan_id in self._runs or plan_id in self._starting:
            raise UserError(
                f"plan {plan_id!r} is already executing: follow it with get_progress, "
                "or cancel it first"
            )
        self._starting.add(plan_id)
        try:
            return await self._start(plan_id, version, on_interrupted)
        finally:
            self._starting.discard(plan_id)

    async def _start(
        self, plan_id: str, version: int | None, on_interrupted: OnInterrupted | None
    ) -> Run:
        plan = await self.store.get_plan(plan_id, version)
        status = plan.status
        if status is PlanStatus.REJECTED:
            raise ApprovalError(rejected_message(plan))
        if status in (PlanStatus.DRAFT, PlanStatus.AWAITING_CONFIRMATION):
            raise ApprovalError(
                f"plan {plan.id!r} version {plan.version} is {status.value}, not confirmed: "
                "confirm it before executing it"
            )
        if not plan.is_approved:
            raise ApprovalError(
                f"plan {plan.id!r} version {plan.version} changed after it was approved "
                f"(approved {plan.approved_hash!r}, now {plan.plan_hash!r}): confirm this version"
            )
        if status is PlanStatus.EXECUTING:
            run = await self._take_over(plan)
            if run.done and run.report().status is PlanStatus.INTERRUPTED and on_interrupted:
                # Taken over, it waits for a decision: the caller has given one.
                return await self._start(plan.id, plan.version, on_interrupted)
            return run
        if status in (PlanStatus.COMPLETED, PlanStatus.CANCELLED):
            raise UserError(
                f"plan {plan.id!r} version {plan.version} is {status.value}: nothing is left "
                "to run; create a new plan (or a new version) to run it again"
            )
        graph = PlanGraph.of(plan.steps)  # refuse a plan that can never finish, up front
        states = await self.store.get_step_states(plan.id, plan.version)
        agent = await self._agent(plan)
        history = await self.store.tool_stats()
        now = utc_now()
        batch = _new_batch()
        started_at: datetime | None = now
        events: list[Event] = []
        if status is PlanStatus.INTERRUPTED:
            waiting = [s for s in states.values() if s.status is StepStatus.INTERRUPTED]
            if on_interrupted is None and waiting:
                return self._finished_run(plan, states, agent, history)
            decided = self._apply_decision(batch, plan, states, waiting, on_interrupted)
            events.append(
                Event(
                    plan_id=plan.id, kind=EventKind.EXECUTION_RESUMED, data={"decisions": decided}
                )
            )
        else:
            rerun = self._reset_for_rerun(batch, states) if status is PlanStatus.FAILED else []
            data: dict[str, Any] = {"version": plan.version, "steps": len(plan.steps)}
            if status is PlanStatus.FAILED:
                data["rerun"] = rerun
                # A failed run may have cut calls off mid-way: they take the same decision.
                waiting = [s for s in states.values() if s.status is StepStatus.INTERRUPTED]
                if waiting and on_interrupted is not None:
                    data["decisions"] = self._apply_decision(
                        batch, plan, states, waiting, on_interrupted
                    )
            events.append(Event(plan_id=plan.id, kind=EventKind.EXECUTION_STARTED, data=data))
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
            self,
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

    async def _take_over(self, plan: Plan) -> Run:
        """Claim an executing plan version whose owner is gone, and resume it here.

        Raises:
            UserError: A live process holds it (the message says which).
        """
        key = (plan.id, plan.version)
        async with self._claim_lock:
            active = self._runs.get(plan.id)
            if active is not None and active.version == plan.version:
                return active  # resume() took it meanwhile
            info = await self.store.get_lease(plan.id, plan.version)
            if info is None:
                raise UserError(
                    f"plan {plan.id!r} version {plan.version} stopped executing while it was "
                    "being started (another process?): look at it again"
                )
            owner = _run_owner(info, self.lease.owner)
            if not owner.here:
                gone = [info.owner] if info.owner is not None and owner.alive is False else []
                if not await self.store.claim_runs(self.lease, gone_owners=gone, runs=[key]):
                    raise UserError(
                        f"plan {plan.id!r} is already executing: {owner.describe()}. Follow "
                        f"it with get_progress (`taskorch watch {plan.id}`), or cancel it"
                    )
            self._claims.add(key)
            try:
                run = await self._obey_cancel_request(plan, info)
                if run is not None:
                    return run
                states = await self.store.get_step_states(plan.id, plan.version)
                run = await self._resume_one(plan, states, await self._tool_catalog())
                if run is None:
                    raise ApprovalError(
                        f"plan {plan.id!r} is executing but not approved for its content"
                    )
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await self._release(plan.id, plan.version)
                raise
            finally:
                self._claims.discard(key)
        logger.info("took over plan %s version %d: %s", plan.id, plan.version, owner.describe())
        return run

    def _launch(self, run: Run) -> None:
        assert self._tg is not None
        self._runs[run.plan.id] = run
        self._tg.start_soon(run._main)
        if self._watch_scope is not None:
            self._watch_scope.cancel()  # watch this run for cancel requests too

    def _finished_run(
        self,
        plan: Plan,
        states: Mapping[str, StepState],
        agent: AgentConfig | None,
        history: Mapping[tuple[str, str], ToolStats],
    ) -> Run:
        """A handle on a run that will not start: the plan waits for a decision."""
        run = Run(
            self, plan, states, agent=agent, history=history, started_at=None, start_events=[]
        )
        run._status = plan.status
        run._report = _build_report(plan, states, plan.status, None, None)
        run._done.set()
        return run

    @staticmethod
    def _reset_for_rerun(batch: WriteBatch, states: Mapping[str, StepState]) -> list[str]:
        rerun: list[str] = []
        for st in states.values():
            if st.status in (StepStatus.FAILED, StepStatus.CANCELLED) or (
                st.status is StepStatus.SKIPPED and not _skipped_by_decision(st)
            ):
                check_transition(st.status, StepStatus.PENDING)
                batch.step_states.append(
                    st.model_copy(
                        update={
                            "status": StepStatus.PENDING,
                            "output": None,
                            "result": None,
                            "error": None,
                            "started_at": None,
                            "finished_at": None,
                        }
                    )
                )
                rerun.append(st.step_id)
        return rerun

    @staticmethod
    def _apply_decision(
        batch: WriteBatch,
        plan: Plan,
        states: Mapping[str, StepState],
        waiting: list[StepState],
        on_interrupted: OnInterrupted | None,
    ) -> dict[str, str]:
        ids = {s.step_id for s in waiting}
        if isinstance(on_interrupted, str) or on_interrupted is None:
            decisions: dict[str, str] = dict.fromkeys(ids, on_interrupted or "rerun")
        else:
            unknown = sorted(set(on_interrupted) - ids)
            if unknown:
                raise UserError(
                    f"on_interrupted names step(s) {unknown} of plan {plan.id!r}, which are "
                    f"not interrupted; the interrupted ones are {sorted(ids)}"
                )
            missing = sorted(ids - set(on_interrupted))
            if missing:
                raise UserError(
                    f"on_interrupted gives no decision for step(s) {missing} of plan "
                    f"{plan.id!r}: give 'rerun' or 'skip' for each, or one for all"
                )
            decisions = dict(on_interrupted)
        for sid, decision in decisions.items():
            if decision not in ("rerun", "skip"):
                raise UserError(
                    f"on_interrupted for step {sid!r} is {decision!r}: use 'rerun' or 'skip'"
                )
            st = states[sid]
            if decision == "rerun":
                check_transition(st.status, StepStatus.PENDING)
                batch.step_states.append(
                    st.model_copy(
                        update={"status": StepStatus.PENDING, "error": None, "finished_at": None}
                    )
                )
            else:
                check_transition(st.status, StepStatus.SKIPPED)
                batch.step_states.append(
                    st.model_copy(
                        update={
                            "status": StepStatus.SKIPPED,
                            "finished_at": utc_now(),
                            "error": StepError(
                                kind=ErrorKind.INTERRUPTED,
                                message=(
                                    "skipped by decision after an interruption: treated as "
                                    "done without an output, and never run again"
                                ),
                            ),
                        }
                    )
                )
        return decisions

    async def _agent(self, plan: Plan) -> AgentConfig | None:
        if plan.agent is None:
            return None
        try:
            return await self.store.get_agent(plan.agent)
        except NotFoundError:
            logger.warning(
                "plan %s names agent %r, which is not in the store: using the defaults",
                plan.id,
                plan.agent,
            )
            return None

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

    # --- resume after a crash -------------------------------------------------------------

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
        if self._tg is None:
            raise InternalError(
                "the Scheduler is not running: use it as `async with Scheduler(...)`"
            )
        async with self._claim_lock:
            gone = await self._gone_owners()
            claimed = await self.store.claim_runs(self.lease, gone_owners=gone)
            self._claims.update(claimed)
            try:
                return await self._resume_claimed(claimed)
            finally:
                self._claims.difference_update(claimed)

    async def _resume_claimed(self, claimed: list[tuple[PlanId, int]]) -> list[Run]:
        runs: list[Run] = []
        catalog: Catalog | None = None
        for plan_id, version in claimed:
            active = self._runs.get(plan_id)
            if active is not None and active.version == version:
                continue  # already running here; the claim merely renewed its lease
            if plan_id in self._starting:
                # start() is on it right now, and takes the run over itself if need be.
                await self._release(plan_id, version)
                continue
            if active is not None:
                logger.warning(
                    "plan %s version %d is executing, but another version of the plan runs "
                    "here: it is left for later",
                    plan_id,
                    version,
                )
                await self._release(plan_id, version)
                continue
            self._starting.add(plan_id)
            run: Run | None = None
            try:
                plan = await self.store.get_plan(plan_id, version)
                run = await self._obey_cancel_request(plan)
                if run is not None:
                    runs.append(run)
                    continue
                states = await self.store.get_step_states(plan.id, plan.version)
                if catalog is None:
                    catalog = await self._tool_catalog()
                run = await self._resume_one(plan, states, catalog)
                if run is not None:
                    runs.append(run)
            except Exception:
                logger.exception("could not resume plan %s version %d", plan_id, version)
            finally:
                self._starting.discard(plan_id)
            if run is None:
                # Not run here: let another process (or a later resume) have it.
                await self._release(plan_id, version)
        return runs

    async def _obey_cancel_request(self, plan: Plan, info: LeaseInfo | None = None) -> Run | None:
        """Cancel a run just claimed, instead of resuming it, if a cancel request stands.

        Whoever asked was told the run ends as soon as its owner sees the request;
        the new owner sees it before it calls anything.
        """
        if info is None:
            info = await self.store.get_lease(plan.id, plan.version)
        if info is None or info.cancel_requested_at is None:
            return None
        logger.info("plan %s: a cancel request stands; cancelling the run taken over", plan.id)
        expect = ExpectedPlanStatus(plan.id, plan.version, PlanStatus.EXECUTING, lease=self.lease)
        report = await self._cancel_in_store(plan, expect)
        states = await self.store.get_step_states(plan.id, plan.version)
        ended = plan.model_copy(update={"status": report.status})
        return self._finished_run(ended, states, None, {})

    async def _release(self, plan_id: str, version: int) -> None:
        try:
            await self.store.release_leases(self.lease.owner, [(plan_id, version)])
        except Exception as error:
            # Not renewed any more, it lapses anyway; meanwhile try again.
            self._unreleased.add((plan_id, version))
            logger.warning("could not release the lease on plan %s: %s", plan_id, error)

    async def _gone_owners(self) -> list[str]:
        """Owners of fresh leases that are processes on this machine which have ended."""
        now = utc_now()
        owners = {
            lease.owner
            for lease in await self.store.list_leases()
            if lease.owner is not None and lease.until is not None and lease.until > now
        }
        return sorted(o for o in owners if _owner_is_gone(o))

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

    async def _resume_one(
        self, plan: Plan, states: dict[str, StepState], catalog: Catalog
    ) -> Run | None:
        if not plan.is_approved:
            logger.error(
                "plan %s is executing but not approved for its content: left alone", plan.id
            )
            return None
        started_at, _ = await self.store.get_run_times(plan.id, plan.version)
        agent = await self._agent(plan)
        history = await self.store.tool_stats()
        now = utc_now()
        batch = _new_batch()
        # Written only while the claim resume() just made is still ours.
        batch.expect = ExpectedPlanStatus(
            plan.id, plan.version, PlanStatus.EXECUTING, lease=self.lease
        )
        retry_counts: dict[str, int] = {}
        interrupted: list[Event] = []
        resume_tasks: dict[str, str] = {}
        for sid, st in states.items():
            if st.status is not StepStatus.RUNNING:
                continue
            attempts = await self.store.get_attempts(plan.id, plan.version, sid)
            # Only failed attempts count against the retry policy: a crash is not the tool's.
            retry_counts[sid] = sum(
                1
                for a in attempts
                if (started_at is None or a.started_at >= started_at)
                and a.status not in (StepStatus.RUNNING, StepStatus.INTERRUPTED)
            )
            last = attempts[-1] if attempts else None
            step = plan.step(sid)
            if last is not None and last.status is not StepStatus.RUNNING:
                # Between attempts (waiting to retry): nothing was in flight.
                batch.step_states.append(_requeued(st))
                continue
            if last is not None and last.task_id is not None:
                # The call had become a downstream task, which went on without us:
                # follow it again; calling again could repeat its effect.
                note = f"taskorch stopped while following downstream task {last.task_id}"
                batch.attempts.append(
                    last.model_copy(
                        update={
                            "status": StepStatus.INTERRUPTED,
                            "finished_at": now,
                            "error": StepError(kind=ErrorKind.INTERRUPTED, message=note),
                        }
                    )
                )
                batch.step_states.append(_requeued(st))
                resume_tasks[sid] = last.task_id
                continue
            decision = decide(
                ErrorKind.INTERRUPTED,
                Delivery.AMBIGUOUS,
                policy=_retry_policy(step, agent, self.config),
                attempt=retry_counts[sid],
                annotations=_annotations(catalog, step),
            )
            message = "taskorch stopped while this call was in flight"
            if decision.reason:
                message = f"{message}; {decision.reason}"
            error = StepError(kind=ErrorKind.INTERRUPTED, message=message)
            if last is not None:
                batch.attempts.append(
                    last.model_copy(
                        update={
                            "status": StepStatus.INTERRUPTED,
                            "finished_at": now,
                            "error": error,
                        }
                    )
                )
            if decision.verdict is Verdict.RETRY:
                batch.step_states.append(_requeued(st))
                continue
            check_transition(st.status, StepStatus.INTERRUPTED)
            batch.step_states.append(
                st.model_copy(
                    update={"status": StepStatus.INTERRUPTED, "error": error, "finished_at": now}
                )
            )
            interrupted.append(
                Event(
                    plan_id=plan.id,
                    kind=EventKind.STEP_INTERRUPTED,
                    step_id=sid,
                    data={"error": _error_json(error)},
                )
            )
        merged = dict(states)
        for new in batch.step_states:
            merged[new.step_id] = new
        # The run goes on with everything that does not depend on an interrupted step,
        # and waits for a decision only once nothing else can run.
        requeued = [s.step_id for s in batch.step_states if s.status is StepStatus.PENDING]
        batch.events = [
            Event(
                plan_id=plan.id,
                kind=EventKind.EXECUTION_RESUMED,
                data={"requeued": requeued, "interrupted": [e.step_id for e in interrupted]},
            ),
            *interrupted,
        ]
        events = await self.store.write_returning_events(batch)
        run = Run(
            self,
            plan,
            merged,
            agent=agent,
            history=history,
            started_at=started_at,
            start_events=events,
            retry_counts=retry_counts,
            catalog=catalog,
            resume_tasks=resume_tasks,
        )
        self._launch(run)
        return run

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
        return await self._cancel_in_store(plan)

    async def _cancel_elsewhere(self, plan: Plan, wait_s: float) -> ExecutionReport:
        """Cancel a run this process does not run: ask its owner, or take it if it is gone."""
        key = (plan.id, plan.version)
        deadline = anyio.current_time() + wait_s
        asked = False
        while True:
            info = await self.store.get_lease(*key)
            if info is None:  # not executing any more: its owner ended it
                return await self.report(plan.id, plan.version)
            owner = _run_owner(info, self.lease.owner)
            if not owner.holds or owner.here:
                async with self._claim_lock:
                    run = self._runs.get(plan.id)
                    if run is not None and run.version == plan.version:
                        run.cancel()
                        return await run.wait()
                    gone = [info.owner] if info.owner is not None and owner.alive is False else []
                    if owner.here or await self.store.claim_runs(
                        self.lease, gone_owners=gone, runs=[key]
                    ):
                        expect = ExpectedPlanStatus(*key, PlanStatus.EXECUTING, lease=self.lease)
                        return await self._cancel_in_store(plan, expect)
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

    async def _cancel_in_store(
        self, plan: Plan, expect: ExpectedPlanStatus | None = None
    ) -> ExecutionReport:
        """Cancel a plan no process runs, by writing it `cancelled` with its unfinished steps."""
        states = await self.store.get_step_states(plan.id, plan.version)
        now = utc_now()
        batch = _new_batch()
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
        await self.store.write(batch)
        return await self.report(plan.id, plan.version)

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
            owner = _run_owner(info, self.lease.owner)
            message = f"the plan is executing: {owner.describe()}" + (
                ""
                if owner.holds
                else f"; execute_plan(plan_id={plan.id!r}) takes the run over and resumes it"
            )
        return _build_report(plan, states, plan.status, started, finished, message)

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
        return None if info is None else _run_owner(info, self.lease.owner)

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
        listed = [states[s.id] for s in plan.steps if s.id in states]
        elapsed = 0.0
        if started is not None:
            end = finished if finished is not None and plan.status.is_terminal else utc_now()
            elapsed = max((end - started).total_seconds(), 0.0)
        eta: float | None
        if plan.status.is_terminal:
            eta = 0.0
        elif plan.status in (PlanStatus.INTERRUPTED, PlanStatus.EXECUTING):
            # Waiting for a decision, or running elsewhere: no honest estimate.
            eta = None
        else:
            eta = await self._static_eta(plan, states)
        return _progress(
            plan.id,
            plan.status,
            len(plan.steps),
            _count(listed),
            tuple(s.step_id for s in listed if s.status is StepStatus.RUNNING),
            elapsed,
            eta,
        )

    async def _static_eta(self, plan: Plan, states: Mapping[str, StepState]) -> float | None:
        """How long a run that has not started would take, from history alone."""
        model = DurationModel(await self.store.tool_stats())
        remaining = {
            s.id: model.estimate(s.server, s.tool)
            for s in plan.steps
            if s.id not in states or not states[s.id].status.is_terminal
        }
        agent = await self._agent(plan)
        limit = self.config.max_parallel_steps
        if agent is not None and agent.limits.max_parallel_steps is not None:
            limit = agent.limits.max_parallel_steps
        try:
            graph = PlanGraph.of(plan.steps)
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
            sub = Subscription(plan_id, self.config.subscription_buffer)
            sub.close()
            return sub
        return run.subscribe()


def _process_start(pid: int) -> str:
    """When process `pid` started, as text; tells it from a later process given its pid."""
    return f"{psutil.Process(pid).create_time():.3f}"


def _new_owner_id() -> str:
    """A lease owner id unique to this scheduler: host, process, process start, token."""
    pid = os.getpid()
    return f"{socket.gethostname()}|{pid}|{_process_start(pid)}|{uuid.uuid4().hex[:12]}"


def _owner_parts(owner: str) -> tuple[str, int, str] | None:
    """The host, pid and process start of an owner id of ours; `None` for another form."""
    parts = owner.split("|")
    if len(parts) != 4:
        return None
    try:
        return parts[0], int(parts[1]), parts[2]
    except ValueError:
        return None


def _owner_alive(owner: str) -> bool | None:
    """Whether `owner`'s process still runs; `None` when that cannot be told from here.

    Only processes on this machine can be looked at: owners elsewhere (or in a form
    not ours) are judged by their lease alone.
    """
    parts = _owner_parts(owner)
    if parts is None or parts[0] != socket.gethostname():
        return None
    _, pid, started = parts
    if pid == os.getpid():
        return True  # another scheduler in this very process
    try:
        return _process_start(pid) == started  # else the pid now names another process
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return None  # cannot tell (access denied): wait for the lease to expire


def _owner_is_gone(owner: str) -> bool:
    """Whether `owner` is a scheduler of a process on this machine that has ended."""
    return _owner_alive(owner) is False


def _run_owner(info: LeaseInfo, me: str) -> RunOwner:
    parts = None if info.owner is None else _owner_parts(info.owner)
    return RunOwner(
        plan_id=info.plan_id,
        version=info.version,
        owner=info.owner,
        host=None if parts is None else parts[0],
        pid=None if parts is None else parts[1],
        alive=None if info.owner is None else _owner_alive(info.owner),
        lease_until=info.until,
        lapsed=info.until is None or info.until <= utc_now(),
        here=info.owner == me,
    )


def rejected_message(plan: Plan) -> str:
    """What anyone trying to run or approve a rejected plan is told, wherever they try."""
    return (
        f"plan {plan.id!r} version {plan.version} was rejected: a rejected plan never runs "
        "and cannot be approved again; create a new plan to run it"
    )


def _requeued(state: StepState) -> StepState:
    check_transition(state.status, StepStatus.PENDING)
    return state.model_copy(update={"status": StepStatus.PENDING, "finished_at": None})
