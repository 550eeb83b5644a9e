"""What the store keeps about runs: step states, attempts, events, statistics."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from executor.calls import ToolResult
from executor.ids import PlanId
from executor.outputs import OutputSummary
from executor.plan import StepError, utc_now
from executor.status import SkipReason, StepStatus

__all__ = [
    "AttemptRecord",
    "Event",
    "EventKind",
    "LastFailure",
    "PlannerAttempt",
    "ServerEvent",
    "ServerEventKind",
    "StepState",
    "ToolCallStats",
    "ToolStats",
]


class StepState(BaseModel):
    """Where one step of one plan version stands, and what it produced."""

    # defer_build: the schema is built at first use, not at import (read commands import
    # many models and validate few).
    model_config = ConfigDict(frozen=True, defer_build=True)

    plan_id: PlanId
    """The plan."""
    version: int
    """The plan version this state belongs to."""
    step_id: str
    """The step."""
    status: StepStatus = StepStatus.PENDING
    """Where the step stands."""
    attempts: int = 0
    """Attempts started so far."""
    output: Any = None
    """The step's output (see `ToolResult.output`), once it succeeded. Read from the
    store, it is there only when `summary.inline` (or the row predates summaries);
    `Store.get_step_result` has the whole result."""
    result: ToolResult | None = None
    """The full MCP result of the last finished attempt, when it is in memory: given
    to the store to keep (once, in its result table), and `None` when read back."""
    summary: OutputSummary | None = None
    """Size, beginning, shape and content blocks of the output, once it succeeded."""
    error: StepError | None = None
    """Why the step failed, was skipped, cancelled or interrupted."""
    skip_reason: SkipReason | None = None
    """Why it is `skipped` (`None` otherwise, and for skips stored before reasons were)."""
    started_at: datetime | None = None
    """When the first attempt of this run started."""
    finished_at: datetime | None = None
    """When the step reached a terminal status."""

    @property
    def satisfies_dependents(self) -> bool:
        """Whether its dependents may run: it succeeded, or was skipped by decision."""
        return self.status is StepStatus.SUCCEEDED or (
            self.status is StepStatus.SKIPPED and self.skip_reason is SkipReason.DECISION
        )

    @property
    def duration_s(self) -> float | None:
        """Seconds from start to finish, when both are known."""
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


class AttemptRecord(BaseModel):
    """One try at running a step."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    plan_id: PlanId
    """The plan."""
    version: int
    """The plan version."""
    step_id: str
    """The step."""
    attempt: int = Field(ge=1)
    """1 for the first try."""
    started_at: datetime
    """When the call was made."""
    finished_at: datetime | None = None
    """When it ended; `None` while in flight."""
    status: StepStatus = StepStatus.RUNNING
    """`running` while in flight, then `succeeded`, `failed`, `cancelled` or `interrupted`."""
    error: StepError | None = None
    """Why the attempt failed."""
    call_s: float | None = Field(default=None, ge=0)
    """Seconds the call itself took, from a monotonic clock, once it ended: the
    attempt's time less its wait for the server's call limit. `None` when the tool
    was never called (refused or cancelled first) or the call is still in flight."""
    task_id: str | None = None
    """The downstream task the call became (MCP Tasks), recorded before it is polled:
    after a crash the step follows this task instead of calling the tool again."""


class EventKind(StrEnum):
    """What an event records."""

    PLAN_CREATED = "plan_created"
    PLAN_CONFIRMED = "plan_confirmed"
    PLAN_REJECTED = "plan_rejected"
    EXECUTION_STARTED = "execution_started"
    EXECUTION_RESUMED = "execution_resumed"
    STEP_STARTED = "step_started"
    STEP_PROGRESS = "step_progress"
    STEP_SUCCEEDED = "step_succeeded"
    STEP_FAILED = "step_failed"
    STEP_RETRYING = "step_retrying"
    STEP_SKIPPED = "step_skipped"
    STEP_CANCELLED = "step_cancelled"
    STEP_INTERRUPTED = "step_interrupted"
    PLAN_FINISHED = "plan_finished"


class Event(BaseModel):
    """One entry of the append-only event log."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    seq: int = 0
    """Position in the log, assigned by the store (0 until stored)."""
    plan_id: PlanId
    """The plan."""
    kind: EventKind
    """What happened."""
    step_id: str | None = None
    """The step it happened to, if any."""
    at: datetime = Field(default_factory=utc_now)
    """When."""
    data: dict[str, Any] = Field(default_factory=dict)
    """Details (JSON)."""


class ToolStats(BaseModel):
    """Running duration statistics of one downstream tool's successful calls."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    server: str
    """The server."""
    tool: str
    """The tool."""
    count: int
    """Calls measured."""
    mean_s: float
    """Mean duration in seconds."""
    m2: float = 0.0
    """Sum of squared deviations (Welford), for the variance."""
    last_s: float = 0.0
    """The most recent duration."""


class PlannerAttempt(BaseModel):
    """One call to a planning model, kept for cost and quality accounting."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    plan_id: PlanId | None = None
    """The plan it produced, when it produced one."""
    attempt: int = Field(ge=1)
    """1 for the first try, then one per repair round."""
    model: str = ""
    """The model string used."""
    prompt_tokens: int | None = None
    """Prompt tokens, as the provider reported or as estimated."""
    completion_tokens: int | None = None
    """Completion tokens, when reported."""
    latency_s: float = 0.0
    """Seconds the model call took."""
    errors: tuple[str, ...] = ()
    """Validation errors this attempt's answer had (empty when valid)."""
    at: datetime = Field(default_factory=utc_now)
    """When."""


class ServerEventKind(StrEnum):
    """What happened to a downstream server's session, as the pool saw it."""

    UP = "up"
    """A session opened (the first time in that pool, or again: a restart)."""
    DOWN = "down"
    """The session ended unasked, or could not be opened."""
    CLOSED = "closed"
    """The pool closed while the server was down: the down time ends here."""


class ServerEvent(BaseModel):
    """One change in a downstream server's availability, kept for its statistics."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    owner: str
    """The pool that saw it (one per process): intervals are taken per owner."""
    server: str
    """The server's configured name."""
    kind: ServerEventKind
    """What happened."""
    at: datetime = Field(default_factory=utc_now)
    """When."""
    restart: bool = False
    """With `up`: the session was opened before in this pool (a restart)."""
    reason: str | None = None
    """With `down`: why, in a line (the server's stderr is never kept here)."""


class LastFailure(BaseModel):
    """The most recent failed attempt of a tool."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    at: datetime | None
    """When it failed."""
    kind: str
    """Its error kind."""
    message: str
    """What was said, cut to a few hundred characters."""
    plan_id: PlanId
    """The plan whose step failed."""
    step_id: str
    """The step."""


class ToolCallStats(BaseModel):
    """What the attempts of one downstream tool add up to over a window of time."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    server: str
    """The server's configured name."""
    tool: str
    """The tool."""
    calls: int
    """Attempts made (each try of a step counts once, retries included)."""
    succeeded: int
    """Attempts that succeeded."""
    failed: int
    """Attempts that failed (`failed_by_kind` splits them by error kind)."""
    cancelled: int = 0
    """Attempts cancelled (the run was cancelled, or stopped after another step failed)."""
    interrupted: int = 0
    """Attempts cut off by a crash of taskorch."""
    running: int = 0
    """Attempts still in flight."""
    retries: int = 0
    """Attempts that were not a step's first (retries, and re-runs of a failed plan)."""
    failure_rate: float = 0.0
    """`failed / (succeeded + failed)`: cancelled, interrupted and running attempts
    are neither (0 when none ended)."""
    failed_by_kind: dict[str, int] = Field(default_factory=dict)
    """Failed attempts per error kind (timeout, tool_error, tool_unavailable, ...)."""
    p50_s: float | None = None
    """Median seconds of a successful call (nearest rank); `None` without one."""
    p95_s: float | None = None
    """95th percentile seconds of a successful call (nearest rank)."""
    max_s: float | None = None
    """Slowest successful call, in seconds."""
    last_failure: LastFailure | None = None
    """The most recent failed attempt, when there is one."""
