"""A step's call and the run's timers, beside its coordinator, and the messages they send.

The coordinator works out a call's arguments (`call_arguments`) and starts the
call in the run's task group; the call, a retry timer and the deadline timer
each report back over the run's memory object stream and touch no state of
the run: the coordinator alone acts on what they say.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeAlias

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from executor.asking import Askers, DownstreamQuestion
from executor.calls import ToolCaller, ToolResult
from executor.catalog import Catalog
from executor.errors import Delivery, ErrorKind, StepReferenceError, ToolCallError
from executor.plan import Plan, Step, StepError, utc_now
from executor.refs import StepValue, resolve_references
from executor.tracing import AttemptSpan

__all__ = [
    "Message",
    "Outcome",
    "Progress",
    "RetryDue",
    "StepTask",
    "Stop",
    "StopReason",
    "TaskStarted",
    "call_arguments",
    "call_step",
    "deadline_timer",
    "retry_timer",
]

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Outcome:
    """How a step's call ended: a result, an error, or neither (it was cancelled)."""

    step_id: str
    attempt: int
    result: ToolResult | None = None
    error: StepError | None = None
    delivery: Delivery = Delivery.AMBIGUOUS
    finished_at: datetime = field(default_factory=utc_now)
    duration_s: float = 0.0
    call_s: float | None = None
    """The call's own seconds, when the tool was called (kept with the attempt)."""

    def end_span(self, span: AttemptSpan) -> None:
        """End the attempt's span with how the call ended."""
        if self.error is not None:
            span.finish("failed", self.error.kind.value, self.error.message)
        elif self.result is not None and self.result.is_error:
            span.finish("failed", ErrorKind.TOOL_ERROR.value, "the tool answered isError")
        else:
            span.finish("succeeded" if self.result is not None else "cancelled")


@dataclass(slots=True, frozen=True)
class Progress:
    """Progress the downstream server reported for a call in flight."""

    step_id: str
    attempt: int
    progress: float
    total: float | None
    message: str | None


@dataclass(slots=True, frozen=True)
class RetryDue:
    """A step's wait before its next attempt is over."""

    step_id: str


@dataclass(slots=True, frozen=True)
class TaskStarted:
    """A call became a downstream task: record its id with the attempt, then say so."""

    step_id: str
    attempt: int
    task_id: str
    recorded: anyio.Event


class StopReason(StrEnum):
    """Why a run stops before everything has run."""

    FAIL = "fail"
    DEADLINE = "deadline"
    CANCEL = "cancel"


@dataclass(slots=True, frozen=True)
class Stop:
    """The run is to stop (the deadline passed, or a cancel came)."""

    reason: StopReason


Message: TypeAlias = Outcome | Progress | RetryDue | TaskStarted | Stop
"""Everything the coordinator receives."""


class StepTask:
    """A step's call as the pool sees it when it becomes a downstream task (`TaskHooks`)."""

    def __init__(
        self,
        send: MemoryObjectSendStream[Message],
        plan_id: str,
        step_id: str,
        attempt: int,
        resume: str | None,
        stopping: Callable[[], bool],
        askers: Askers,
    ) -> None:
        self._send = send
        self._plan_id = plan_id
        self._step_id = step_id
        self._attempt = attempt
        self._resume = resume
        self._stopping = stopping
        self._askers = askers

    async def started(self, task_id: str) -> None:
        """Commit the task id with the attempt, through the coordinator, and wait for it."""
        recorded = anyio.Event()
        self._send.send_nowait(TaskStarted(self._step_id, self._attempt, task_id, recorded))
        await recorded.wait()

    def cancel_downstream(self) -> bool:
        """Cancelled by the run (cancel, failure, deadline): yes; by a shutdown: no."""
        return self._stopping()

    def resuming(self) -> str | None:
        """The task recorded before a crash, which this attempt follows."""
        return self._resume

    async def ask(self, server: str, tool: str, request: dict[str, Any]) -> dict[str, Any]:
        """Pass the tool's request to whoever follows the plan (`Scheduler.askers`)."""
        question = DownstreamQuestion(
            plan_id=self._plan_id,
            step_id=self._step_id,
            server=server,
            tool=tool,
            method=str(request.get("method", "")),
            params=dict(request.get("params") or {}),
        )
        return await self._askers.ask(question)


def call_arguments(
    step: Step, outputs: Mapping[str, StepValue], catalog: Catalog | None
) -> tuple[dict[str, Any], None] | tuple[None, str]:
    """The arguments to call a step's tool with, its references resolved; or why none fit.

    Args:
        step: The step to call.
        outputs: What the steps it reads gave.
        catalog: The caller's tools; a tool unknown there is left to its server to judge.

    Returns:
        `(arguments, None)`, or `(None, problem)` when a reference cannot be
        resolved or the arguments do not fit the tool's input schema.
    """
    try:
        arguments = resolve_references(step.arguments, outputs)
    except StepReferenceError as exc:
        return None, str(exc)
    info = None if catalog is None else catalog.get(step.server, step.tool)
    # Imported here: it loads jsonschema, which a process that only follows runs
    # (`taskorch watch`) never needs.
    from executor.validate import check_arguments

    problems = [] if info is None else check_arguments(info, arguments)
    if problems:
        return None, (
            "the arguments, with references resolved, do not fit the tool's input schema, "
            f"so it was not called: {'; '.join(problems)}"
        )
    return arguments, None


async def call_step(
    caller: ToolCaller,
    limiter: anyio.CapacityLimiter,
    plan: Plan,
    step: Step,
    attempt: int,
    arguments: dict[str, Any],
    timeout_s: float | None,
    scope: anyio.CancelScope,
    send: MemoryObjectSendStream[Message],
    task: StepTask | None = None,
) -> None:
    """Call a step's tool within its server's limit, and send how it ended."""
    outcome: Outcome | None = None

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        try:
            send.send_nowait(Progress(step.id, attempt, progress, total, message))
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass

    t0 = anyio.current_time()
    called = False
    span = AttemptSpan(plan.id, plan.version, step.id, step.server, step.tool, attempt)
    with scope, span:
        try:
            try:
                # Uncontended, take the slot without a checkpoint: one event-loop
                # round less between a dependency's end and this call's start.
                limiter.acquire_nowait()
            except anyio.WouldBlock:
                await limiter.acquire()
            try:
                logger.debug("step %r: calling %s.%s", step.id, step.server, step.tool)
                t0 = anyio.current_time()
                called = True
                result = await caller.call(
                    step.server,
                    step.tool,
                    arguments,
                    timeout_s=timeout_s,
                    on_progress=on_progress,
                    task=task,
                )
            finally:
                limiter.release()
            outcome = Outcome(step.id, attempt, result=result)
        except ToolCallError as exc:
            error = StepError(kind=exc.kind, message=str(exc))
            outcome = Outcome(step.id, attempt, error=error, delivery=exc.delivery)
        except Exception as exc:
            logger.exception("calling %s.%s for step %r failed", step.server, step.tool, step.id)
            outcome = Outcome(
                step.id,
                attempt,
                error=StepError(
                    kind=ErrorKind.INTERNAL,
                    message=f"the call raised {type(exc).__name__}: {exc}",
                ),
            )
    if outcome is None:
        outcome = Outcome(step.id, attempt)
    outcome.duration_s = anyio.current_time() - t0
    if called:
        outcome.call_s = outcome.duration_s
    outcome.end_span(span)
    send.send_nowait(outcome)


async def retry_timer(
    send: MemoryObjectSendStream[Message], step_id: str, delay: float, scope: anyio.CancelScope
) -> None:
    """Send `RetryDue` after `delay` seconds, unless `scope` is cancelled first."""
    with scope:
        await anyio.sleep(delay)
        send.send_nowait(RetryDue(step_id))


async def deadline_timer(send: MemoryObjectSendStream[Message], delay: float) -> None:
    """Send `Stop(DEADLINE)` after `delay` seconds."""
    await anyio.sleep(delay)
    send.send_nowait(Stop(StopReason.DEADLINE))
