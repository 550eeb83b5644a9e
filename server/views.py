"""What the faces hand back: plans, steps, runs, progress and tools as JSON-able models.

These are the output schemas of the MCP tools and the shape of the `plan://{id}`
resource, so a model reading them can act on every field. A step is shown as
the plan model has it (`StepView` is a `Step`) plus its outcome; a run as the
engine reports it (`RunView` from an `ExecutionReport`). Built by pure
functions; nothing here touches the store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from executor import (
    AgentConfig,
    OnError,
    Plan,
    PlanStatus,
    RetryPolicy,
    RunAnalysis,
    Step,
    StepError,
    StepState,
    StepStatus,
    ToolInfo,
)
from executor.outputs import OutputSummary
from server.hints import next_action_for, output_uri

if TYPE_CHECKING:
    from executor import ExecutionProgress, ExecutionReport, StepReport

__all__ = [
    "AgentList",
    "ContentView",
    "OutputPreview",
    "PlanList",
    "PlanSummary",
    "PlanView",
    "ProgressView",
    "RunView",
    "StepOutputPage",
    "StepView",
    "ToolList",
    "ToolView",
    "content_uri",
    "next_action",
    "output_uri",
    "plan_view",
    "preview_of",
    "progress_view",
    "run_view",
    "step_view",
    "summaries",
    "tool_view",
]

# defer_build: the schema is built at first use, not at import (read commands import
# many models and validate few).
_FROZEN = ConfigDict(frozen=True, defer_build=True)
_QUERY_SHOWN = 200
"""Characters of a query `list_plans` shows."""


class OutputPreview(BaseModel):
    """An output too large for the answer: its beginning, size and shape, and where the rest is."""

    model_config = _FROZEN

    size_bytes: int
    """Bytes of the whole output (UTF-8 text, or compact JSON)."""
    kind: Literal["text", "json"]
    """`text`: the tool's text; `json`: structured content or text that parsed as JSON."""
    head: str
    """The output's beginning (its compact JSON when kind is json), cut between characters."""
    shape: Any = None
    """For JSON: its keys and the type of each value, a few levels deep."""
    uri: str
    """A resource holding the whole output (a resource_link to it is in the answer)."""
    more: str
    """The call that reads it page by page (`path` reads one value in it)."""


class ContentView(BaseModel):
    """A content block the tool returned (image, audio, embedded resource, link, or text)."""

    model_config = _FROZEN

    index: int
    """Its position: later steps read it as `${step.content.N}` (e.g. `.data`, `.text`)."""
    type: str
    """text, image, audio, resource or resource_link."""
    mime_type: str | None = None
    """Its MIME type, when given."""
    size_bytes: int = 0
    """Bytes of its payload (base64 data for images and audio)."""
    uri: str
    """A resource of taskorch holding the block (images come as image content when they fit)."""
    source_uri: str | None = None
    """The URI the tool gave (embedded resources, resource links)."""
    name: str | None = None
    """The resource link's name."""


def _left_to_default(value: object) -> bool:
    return value is None or value is OnError.FAIL


class StepView(Step):
    """One step as the plan has it (arguments as written), and where it stands in the latest run."""

    # The run settings are shown only where a step sets them: answers are budgeted,
    # and most steps leave them to their agent and the config.
    timeout_s: float | None = Field(default=None, exclude_if=_left_to_default)
    """Per-attempt timeout, when the step sets one."""
    retry: RetryPolicy | None = Field(default=None, exclude_if=_left_to_default)
    """Retry policy, when the step sets one."""
    on_error: OnError = Field(default=OnError.FAIL, exclude_if=_left_to_default)
    """`continue` when the step's failure skips only its dependents (else `fail`, not shown)."""
    status: StepStatus = StepStatus.PENDING
    """pending, running, succeeded, failed, skipped, cancelled or interrupted."""
    attempts: int = 0
    """Attempts started in the latest run."""
    output: Any = None
    """The step's output once it succeeded (structured content, else text or parsed JSON),
    when it fits the answer; else null and `output_preview` says what it is."""
    output_preview: OutputPreview | None = None
    """Set instead of `output` when the output is too large for the answer."""
    content: list[ContentView] = Field(default_factory=list)
    """Every content block the tool returned, when any is not text (images, audio,
    resources, links); empty otherwise (the output has the text)."""
    error: StepError | None = None
    """Why the step did not succeed, when it did not (the message cut at 2,000 characters)."""
    started_at: datetime | None = None
    """When the step first started in the latest run."""
    finished_at: datetime | None = None
    """When it reached a final status."""
    duration_s: float | None = None
    """Seconds from start to finish."""


class PlanView(BaseModel):
    """A plan version, its approval state and every step."""

    model_config = _FROZEN

    plan_id: str
    """The plan's id, shared by all its versions."""
    version: int
    """This version's number."""
    status: PlanStatus
    """draft, awaiting_confirmation, confirmed, executing, completed, failed, cancelled,
    rejected or interrupted."""
    plan_hash: str
    """Digest of what would run; `confirm_plan` approves exactly this hash."""
    approved: bool
    """Whether the approval on record is for this exact content."""
    query: str = ""
    """What was asked for."""
    strategy: str = ""
    """How the plan means to get there."""
    agent: str | None = None
    """The agent whose policy applies."""
    session_id: str | None = None
    """The session the plan belongs to."""
    created_at: datetime | None = None
    """When this version was made."""
    steps: list[StepView]
    """The steps, in the order written."""
    next_action: str = ""
    """What to do next, as a tool call to make."""
    timing: RunAnalysis | None = None
    """Where its latest run spent its time (critical path, each step's share, running
    versus waiting for a slot versus retries); null when it never ran."""


class PlanSummary(BaseModel):
    """One line of `list_plans`."""

    model_config = _FROZEN

    plan_id: str
    """The plan's id."""
    version: int
    """Latest version."""
    status: PlanStatus
    """Its status."""
    query: str
    """What was asked for, its first 200 characters (ending in '…' when cut)."""
    steps: int
    """How many steps it has."""
    agent: str | None = None
    """The agent whose policy applies."""
    session_id: str | None = None
    """The session it belongs to."""
    created_at: datetime | None = None
    """When the latest version was made."""


class PlanList(BaseModel):
    """The answer of `list_plans`."""

    model_config = _FROZEN

    plans: list[PlanSummary]
    """Newest first."""
    count: int
    """How many are listed."""


class ProgressView(BaseModel):
    """Where a run stands."""

    model_config = _FROZEN

    plan_id: str
    """The plan."""
    status: PlanStatus
    """The plan's status."""
    total: int
    """Steps in the plan."""
    completed: int
    """Steps that succeeded."""
    failed: int
    """Steps that failed."""
    running: int
    """Steps in flight."""
    percent: float
    """Share of steps that are done (any final status), 0 to 100."""
    elapsed_s: float
    """Seconds since the run started (0 before it does)."""
    eta_s: float | None
    """Estimated seconds left; null when nothing is known to estimate from."""
    running_steps: list[str] = Field(default_factory=list)
    """Ids of the steps in flight."""
    counts: dict[str, int] = Field(default_factory=dict)
    """Steps in each status."""


class RunView(BaseModel):
    """What `execute_plan` and `cancel_execution` answer: a run's outcome, or that it started."""

    model_config = _FROZEN

    plan_id: str
    """The plan."""
    version: int
    """The version that ran."""
    status: PlanStatus
    """The plan's status now."""
    finished: bool
    """Whether the run is over (completed, failed, cancelled) or waiting for a decision."""
    message: str
    """One sentence on the outcome and what to do next."""
    needs_decision: list[str] = Field(default_factory=list)
    """Interrupted steps that wait for `on_interrupted` ('rerun' or 'skip')."""
    started_at: datetime | None = None
    """When the latest run started."""
    finished_at: datetime | None = None
    """When it ended."""
    duration_s: float | None = None
    """Seconds from start to end, when both are known."""
    progress: ProgressView
    """Counts, percent, elapsed time and ETA."""
    steps: list[StepView]
    """Every step with its status, attempts, output or error."""


class StepOutputPage(BaseModel):
    """The answer of `get_step_output`: one page of a step's output (or of a value in it)."""

    model_config = _FROZEN

    plan_id: str
    """The plan."""
    version: int
    """The plan version."""
    step_id: str
    """The step."""
    path: str = ""
    """The reference path read inside the output (empty: the whole output)."""
    kind: Literal["text", "json"]
    """`text`: the bytes are the text itself; `json`: they are compact JSON."""
    total_bytes: int
    """Bytes of the whole text (UTF-8)."""
    offset: int
    """Byte offset of this page."""
    next_offset: int | None
    """Byte offset of the next page; null after the last one."""
    data: str
    """This page's text; concatenating the pages rebuilds the output byte for byte."""


class ToolView(BaseModel):
    """One downstream tool a plan may call."""

    model_config = _FROZEN

    server: str
    """The server's configured name: the step's `server`."""
    tool: str
    """The tool's name: the step's `tool`."""
    title: str | None = None
    """A human title."""
    description: str = ""
    """What the tool does, in its server's words."""
    input_schema: dict[str, Any]
    """JSON Schema of the step's `arguments`."""
    output_schema: dict[str, Any] | None = None
    """JSON Schema of the output that later steps can reference."""
    read_only: bool
    """The tool changes nothing."""
    destructive: bool
    """The tool may destroy or overwrite things."""
    idempotent: bool
    """Calling it again with the same arguments has no further effect."""
    open_world: bool
    """The tool reaches outside a closed domain."""


class ToolList(BaseModel):
    """The answer of `list_tools`."""

    model_config = _FROZEN

    tools: list[ToolView]
    """Tools of every reachable server, by server then name."""
    count: int
    """How many."""
    servers_down: list[str] = Field(default_factory=list)
    """Configured servers that could not be reached (their tools are missing)."""


class AgentList(BaseModel):
    """The answer of `list_agents`."""

    model_config = _FROZEN

    agents: list[AgentConfig]
    """Every agent, by name."""
    default_agent: str | None = None
    """The agent used when a request names none (`null`: built-in defaults)."""


def next_action(plan: Plan) -> str:
    """Say what a caller should do next with this plan, as the tool call to make."""
    return next_action_for(plan.id, plan.status, plan.plan_hash)


_ERROR_SHOWN = 2000
"""Characters of an error message a view shows (a tool's error text can be a whole file)."""


def _shortened(text: str) -> str:
    if len(text) <= _ERROR_SHOWN:
        return text
    return f"{text[:_ERROR_SHOWN]}… ({len(text) - _ERROR_SHOWN} more characters not shown)"


def content_uri(plan_id: str, step_id: str, index: int) -> str:
    """The resource holding one content block a step's tool returned."""
    return f"plan://{plan_id}/steps/{step_id}/content/{index}"


def preview_of(summary: OutputSummary, plan_id: str, step_id: str, head: str) -> OutputPreview:
    """The preview of an output, with `head` as much of its beginning as fits."""
    return OutputPreview(
        size_bytes=summary.size_bytes,
        kind=summary.kind,
        head=head,
        shape=summary.shape,
        uri=output_uri(plan_id, step_id),
        more=f"get_step_output(plan_id={plan_id!r}, step_id={step_id!r}, offset=0)",
    )


def step_view(step: Step, outcome: StepState | StepReport | None, plan_id: str = "") -> StepView:
    """A step as shown to callers, with its outcome so far (pending when `None`).

    Args:
        step: The plan's step.
        outcome: Its stored state, or its line of a run report (which has no times).
        plan_id: The plan, for the URIs of outputs and content blocks.
    """
    error = outcome.error if outcome is not None else None
    timed = outcome if isinstance(outcome, StepState) else None
    summary = outcome.summary if outcome is not None else None
    preview = None
    if summary is not None and not summary.inline:
        preview = preview_of(summary, plan_id, step.id, summary.head)
    content = [
        ContentView(
            index=c.index,
            type=c.type,
            mime_type=c.mime_type,
            size_bytes=c.size_bytes,
            uri=content_uri(plan_id, step.id, c.index),
            source_uri=c.uri,
            name=c.name,
        )
        for c in (summary.content if summary is not None else ())
    ]
    return StepView(
        **dict(step),
        status=outcome.status if outcome else StepStatus.PENDING,
        attempts=outcome.attempts if outcome else 0,
        output=outcome.output if outcome and preview is None else None,
        output_preview=preview,
        content=content,
        error=None
        if error is None
        else error.model_copy(update={"message": _shortened(error.message)}),
        started_at=timed.started_at if timed else None,
        finished_at=timed.finished_at if timed else None,
        duration_s=outcome.duration_s if outcome else None,
    )


def plan_view(
    plan: Plan,
    states: Mapping[str, StepState] | None = None,
    timing: RunAnalysis | None = None,
) -> PlanView:
    """Build the view of a plan version and its step states (and its run's timing)."""
    return PlanView(
        plan_id=plan.id,
        version=plan.version,
        status=plan.status,
        plan_hash=plan.plan_hash,
        approved=plan.is_approved,
        query=plan.query,
        strategy=plan.strategy,
        agent=plan.agent,
        session_id=plan.session_id,
        created_at=plan.created_at,
        steps=[step_view(step, (states or {}).get(step.id), plan.id) for step in plan.steps],
        next_action=next_action(plan),
        timing=timing,
    )


def run_view(
    plan: Plan,
    report: ExecutionReport,
    progress: ExecutionProgress,
    *,
    started: bool = False,
    message: str | None = None,
) -> RunView:
    """The view of a run's report, every step of `plan` shown with its outcome.

    Args:
        plan: The plan version the report is of.
        report: The engine's report.
        progress: The run's progress when the report was made.
        started: The run was just started and not waited for (says so in the message).
        message: The message to give instead of the report's own.
    """
    by_id = {s.id: s for s in report.steps}
    status = report.status
    return RunView(
        plan_id=plan.id,
        version=plan.version,
        status=status,
        finished=status.is_terminal or status is PlanStatus.INTERRUPTED,
        message=message or report.message or _outcome(plan, report, started),
        needs_decision=list(report.needs_decision),
        started_at=report.started_at,
        finished_at=report.finished_at,
        duration_s=report.duration_s,
        progress=progress_view(progress),
        steps=[step_view(step, by_id.get(step.id), plan.id) for step in plan.steps],
    )


def _outcome(plan: Plan, report: ExecutionReport, started: bool) -> str:
    pid = plan.id
    match report.status:
        case PlanStatus.COMPLETED:
            return f"All {len(plan.steps)} steps succeeded; each step's output is in `steps`."
        case PlanStatus.FAILED:
            failed = [s.id for s in report.steps if s.status is StepStatus.FAILED]
            return (
                f"The plan failed (failed steps: {', '.join(failed) or 'none'}); read their "
                f"errors, then execute_plan(plan_id={pid!r}) re-runs only what failed or was "
                "skipped."
            )
        case PlanStatus.CANCELLED:
            return "The run was cancelled; calls in flight were cancelled downstream."
        case PlanStatus.EXECUTING if started:
            return f"Started; follow it with get_progress(plan_id={pid!r})."
        case _:
            return f"The plan is {report.status.value}."


def progress_view(progress: ExecutionProgress) -> ProgressView:
    """Turn the scheduler's snapshot into the tool's answer."""
    return ProgressView(
        plan_id=progress.plan_id,
        status=progress.status,
        total=progress.total,
        completed=progress.completed,
        failed=progress.failed,
        running=progress.running,
        percent=round(progress.percent, 2),
        elapsed_s=round(progress.elapsed_s, 3),
        eta_s=None if progress.eta_s is None else round(progress.eta_s, 3),
        running_steps=list(progress.running_steps),
        counts={status.value: n for status, n in progress.counts.items()},
    )


def tool_view(info: ToolInfo) -> ToolView:
    """Describe one catalog entry for `list_tools`."""
    return ToolView(
        server=info.server,
        tool=info.name,
        title=info.title,
        description=info.description,
        input_schema=info.input_schema,
        output_schema=info.output_schema,
        read_only=info.annotations.read_only,
        destructive=info.annotations.destructive,
        idempotent=info.annotations.idempotent,
        open_world=info.annotations.open_world,
    )


def summaries(plans: Sequence[Plan]) -> PlanList:
    """Build the `list_plans` answer."""
    items = [
        PlanSummary(
            plan_id=p.id,
            version=p.version,
            status=p.status,
            query=p.query if len(p.query) <= _QUERY_SHOWN else p.query[: _QUERY_SHOWN - 1] + "…",
            steps=len(p.steps),
            agent=p.agent,
            session_id=p.session_id,
            created_at=p.created_at,
        )
        for p in plans
    ]
    return PlanList(plans=items, count=len(items))
