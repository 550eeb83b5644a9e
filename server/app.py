"""The MCP face: taskorch's tools and resources over stdio or streamable HTTP.

Every tool is a thin call into the `TaskOrchestrator`; this module only turns
MCP arguments into calls and answers into structured content. Errors are
converted at one boundary (`_boundary`): a `UserError` becomes a tool error
saying what to fix, a failed downstream call or an unusable database becomes
a tool error saying what broke, and anything else is a bug the SDK reports
generically while the server keeps serving.

Approval. A plan that needs approval is approved with `confirm_plan`, always.
When the host supports form elicitation, `execute_plan` on an unapproved plan
also asks the user directly, through the SDK's `Resolve`/`Elicit` form, which
works on both protocol eras (a mid-call request on 2025-11-25, an
`InputRequiredResult` round on 2026-07-28). The approval binds to the hash
shown in the question, which `server.approval` writes.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import inspect
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextvars import ContextVar
from typing import Annotated, Any, Literal

from mcp.server import MCPServer
from mcp.server.lowlevel.helper_types import ReadResourceContents
from mcp.server.mcpserver import (
    AcceptedElicitation,
    CancelledElicitation,
    Context,
    DeclinedElicitation,
    Elicit,
    ElicitationResult,
    Resolve,
)
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import (
    CallToolResult,
    Completion,
    CompletionArgument,
    CompletionContext,
    ContentBlock,
    ImageContent,
    InputRequiredResult,
    PromptReference,
    ResourceLink,
    ResourceTemplateReference,
    TextContent,
    ToolAnnotations,
)
from pydantic import AnyUrl, BaseModel, ConfigDict, Field
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from executor._utils import leaf_exceptions
from executor.catalog import Catalog
from executor.errors import NotFoundError, StoreError, TaskorchError, ToolCallError, UserError
from executor.plan import OnError, Plan, RetryPolicy
from executor.policy import AgentConfig, AgentLimits, AutoApprove, ToolPolicy
from executor.status import PlanStatus
from planner.errors import PlannerError
from planner.host import HostPlanning, HostPlanOutcome, host_supports_sampling
from planner.models import PlanRequest
from server.answers import MAX_LINKS, answer_bytes
from server.approval import approval_text
from server.http_guard import HttpLimits, check_bind
from server.orchestrator import AgentList, TaskOrchestrator
from server.render import render_graph, render_timeline
from server.stats_view import StatsView, render_stats_chart, render_stats_json, stats_view
from server.views import (
    ExecutionReport,
    PlanList,
    PlanView,
    ProgressView,
    StepOutputPage,
    ToolList,
)

__all__ = [
    "DEFAULT_HTTP_PORT",
    "INSTRUCTIONS",
    "ApprovalForm",
    "BearerTokenMiddleware",
    "StepSpec",
    "TaskorchServer",
    "build_http_app",
    "build_server",
    "serve_http",
    "serve_stdio",
]

logger = logging.getLogger(__name__)

DEFAULT_HTTP_PORT = 8765
"""The port `taskorch serve --http` listens on unless told otherwise."""

INSTRUCTIONS = """\
taskorch plans, approves and runs multi-step workflows over the tools of other MCP servers.
Workflow: list_tools to see what can be called; create_plan with a query and (recommended)
the steps yourself; show the plan to the user and confirm_plan with its plan_hash;
execute_plan (wait=true streams progress and returns every step's output; wait=false
returns at once, then get_progress). In a step's arguments, "${step_id}" or
"${step_id.key.0}" is replaced by an earlier step's output (keeping its JSON type when
it is the whole string, as text inside a longer string); a reference adds the dependency.
Answers stay within a budget: an output too large comes as `output_preview` (its size,
beginning and JSON shape) plus a resource_link; get_step_output pages through it, or reads one
value with `path`. Images a tool returned come as image content when they fit, else as links.
Server "taskorch" has built-in steps (extract, select, split_lines, join, format) that turn
text answers into values. Resources: plan://{plan_id} (JSON), plan://{plan_id}/graph (Mermaid
flowchart), plan://{plan_id}/timeline (Mermaid Gantt), plan://{plan_id}/steps/{step_id}/output
(a whole output), .../output/{path} (a value in it), .../content/{index} (a content block).
get_stats says which tools are slow or fail and which servers go down; stats://tools and
stats://servers (JSON), stats://chart (Mermaid)."""


# --- argument models ----------------------------------------------------------------------


class StepSpec(BaseModel):
    """One step of a caller-written plan."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(
        description="Unique step id: a letter or '_', then letters, digits, '_' or '-' "
        "(at most 64). Later steps read its output as ${id} or ${id.key.0}."
    )
    server: str = Field(description="The downstream server's name, as list_tools shows it.")
    tool: str = Field(description="The tool's name on that server, as list_tools shows it.")
    arguments: dict[str, Any] = Field(
        default_factory=dict,
        description="The tool's arguments; any string value may hold ${step.path} references.",
    )
    depends_on: list[str] = Field(
        default_factory=list,
        description="Ids of steps that must succeed first (references add theirs).",
    )
    description: str | None = Field(default=None, description="What the step is for.")
    timeout_s: float | None = Field(default=None, description="Per-attempt timeout in seconds.")
    on_error: OnError | None = Field(
        default=None,
        description="'fail' (default): the plan fails at once; 'continue': skip this "
        "step's dependents and let independent steps go on.",
    )
    retry: RetryPolicy | None = Field(default=None, description="Retry policy for this step.")


class ApprovalForm(BaseModel):
    """What the host's approval dialog asks."""

    approve: bool = Field(description="Run this plan now?")
    reason: str = Field(default="", description="Why (optional, kept with the plan).")


# --- the server ---------------------------------------------------------------------------


class TaskorchServer(MCPServer[Any]):
    """An `MCPServer` that carries the orchestrator its tools call."""

    def __init__(self, orchestrator: TaskOrchestrator, *, name: str = "taskorch") -> None:
        """Build the server (use `build_server`, which also registers the tools)."""
        super().__init__(
            name,
            title="taskorch",
            instructions=INSTRUCTIONS,
            version=_version(),
            log_level="WARNING",
        )
        self.orchestrator = orchestrator

    async def read_resource(
        self, uri: AnyUrl | str, context: Context[Any, Any] | None = None
    ) -> Iterable[ReadResourceContents] | InputRequiredResult:
        """Read a resource; step outputs and content blocks carry their own MIME types."""
        match = _STEP_URI.fullmatch(str(uri))
        if match is None:
            return await super().read_resource(uri, context)
        try:
            return [await _step_resource(self.orchestrator, *match.groups())]
        except NotFoundError as exc:
            raise ResourceNotFoundError(str(exc)) from exc
        except TaskorchError as exc:
            raise ResourceError(str(exc)) from exc


_STEP_URI = re.compile(r"plan://([^/]+)/steps/([^/]+)/(?:output(?:/([^/]+))?|content/(\d+))")


async def _step_resource(
    orch: TaskOrchestrator, plan_id: str, step_id: str, path: str | None, index: str | None
) -> ReadResourceContents:
    """A step's whole output, a value in it, or one of its content blocks."""
    if index is None:
        _, text, is_json = await orch.step_output_text(plan_id, step_id, path or "")
        return ReadResourceContents(text, "application/json" if is_json else "text/plain")
    block = await orch.step_content(plan_id, step_id, int(index))
    kind = block.get("type")
    if kind in ("image", "audio"):
        data = base64.b64decode(str(block.get("data", "")), validate=False)
        return ReadResourceContents(data, block.get("mimeType") or "application/octet-stream")
    if kind == "resource":
        inner = block.get("resource") or {}
        mime = inner.get("mimeType")
        if "blob" in inner:
            blob = base64.b64decode(str(inner["blob"]), validate=False)
            return ReadResourceContents(blob, mime or "application/octet-stream")
        return ReadResourceContents(str(inner.get("text", "")), mime or "text/plain")
    if kind == "text":
        return ReadResourceContents(str(block.get("text", "")), "text/plain")
    return ReadResourceContents(json.dumps(block, ensure_ascii=False), "application/json")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("taskorch")
    except PackageNotFoundError:
        return "0"


def _orchestrator(ctx: Context[Any, Any]) -> TaskOrchestrator:
    server = ctx.mcp_server
    if not isinstance(server, TaskorchServer):
        raise ToolError("internal: this tool is served outside a TaskorchServer")
    return server.orchestrator


@contextlib.contextmanager
def _boundary() -> Iterator[None]:
    """Turn taskorch's errors into tool errors a caller can act on.

    Errors that reach here inside exception groups (from task groups) are
    unwrapped: the caller is told each of taskorch's own errors, not "error".
    """
    try:
        yield
    except TaskorchError as exc:
        raise _tool_error(exc) from exc
    except BaseExceptionGroup as group:
        leaves = leaf_exceptions(group)
        ours = [e for e in leaves if isinstance(e, TaskorchError)]
        if not ours or len(ours) != len(leaves):
            raise
        messages = dict.fromkeys(str(_tool_error(e)) for e in ours)
        raise ToolError("; ".join(messages)) from group


def _tool_error(exc: TaskorchError) -> ToolError:
    if isinstance(exc, UserError):
        return ToolError(str(exc))
    if isinstance(exc, ToolCallError):
        return ToolError(f"a downstream call failed ({exc.kind.value}): {exc}")
    if isinstance(exc, StoreError):
        return ToolError(f"the taskorch database cannot be used: {exc}")
    if isinstance(exc, PlannerError):
        # Not a bug: the model timed out, could not be reached or was cut off, and the
        # message names the setting to change.
        return ToolError(f"planning failed ({exc.failure.value}): {exc}")
    # InternalError and the like: a bug, but the caller still gets a clear answer.
    logger.error("internal error", exc_info=exc)
    return ToolError(f"internal error in taskorch: {exc}")


# --- answers within the budget -------------------------------------------------------------


async def _answer(orch: TaskOrchestrator, view: PlanView | ExecutionReport) -> CallToolResult:
    """The tool result for a bounded view: its JSON, images that fit, links to the rest.

    The view is already fitted (`server.answers.fit`) with room for a link per preview
    and per non-text block; an image replaces its link when the budget still has room.
    """
    data = view.model_dump(mode="json")
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    used = answer_bytes(view)
    budget = orch.answer_budget_bytes
    blocks: list[ContentBlock] = [TextContent(text=text)]
    links = 0
    for step in view.steps:
        candidates: list[tuple[str, str, str | None, int]] = []
        if step.output_preview is not None:
            preview = step.output_preview
            of_output = "application/json" if preview.kind == "json" else "text/plain"
            candidates.append((preview.uri, f"{step.id} output", of_output, preview.size_bytes))
        for item in step.content:
            if item.type == "text":
                continue
            if item.type == "image" and used + item.size_bytes <= budget:
                block = await orch.step_content(view.plan_id, step.id, item.index, view.version)
                blocks.append(
                    ImageContent(data=str(block["data"]), mime_type=item.mime_type or "image/png")
                )
                used += item.size_bytes
                continue
            name = f"{step.id} content {item.index} ({item.type})"
            candidates.append((item.uri, name, item.mime_type, item.size_bytes))
        for uri, name, mime, size in candidates:
            if links >= MAX_LINKS:
                break
            links += 1
            blocks.append(ResourceLink(uri=uri, name=name, mime_type=mime, size=size))
    return CallToolResult(content=blocks, structured_content=data)


# --- approval through elicitation -----------------------------------------------------------

# The hash the approval question showed, for the tool body of the same request: the
# answer approves that content and nothing else, even if a new version appeared since.
_ASKED_HASH: ContextVar[str | None] = ContextVar("taskorch_asked_hash", default=None)


def _can_elicit(ctx: Context[Any, Any]) -> bool:
    caps = ctx.client_capabilities
    elicitation = caps.elicitation if caps is not None else None
    # A bare `elicitation: {}` (before modes existed) means form support; url-only does not.
    return elicitation is not None and (elicitation.form is not None or elicitation.url is None)


async def _ask_approval(plan_id: str, ctx: Context[Any, Any]) -> Elicit[ApprovalForm] | None:
    """Ask the user to approve `plan_id` when it needs it and the host can ask."""
    _ASKED_HASH.set(None)
    if not _can_elicit(ctx):
        return None
    try:
        plan = await _orchestrator(ctx).load_plan(plan_id)
    except TaskorchError:
        return None  # the tool body reports the problem
    if plan.status not in (PlanStatus.DRAFT, PlanStatus.AWAITING_CONFIRMATION):
        return None
    try:
        catalog = await _orchestrator(ctx).catalog()
    except TaskorchError:
        catalog = Catalog()  # every step is then shown with its effects unknown
    _ASKED_HASH.set(plan.plan_hash)
    return Elicit(approval_text(plan, catalog), ApprovalForm)


# --- planning with the host's model ---------------------------------------------------------


async def _host_plan_request(
    query: str,
    steps: list[StepSpec] | None,
    agent: str | None,
    session_id: str | None,
    revise: str | None,
    feedback: str,
    ctx: Context[Any, Any],
) -> PlanRequest | None:
    """Plan with the host's model only when nothing else can: no steps, no model configured."""
    if steps is not None or not host_supports_sampling(ctx):
        return None
    orch = _orchestrator(ctx)
    try:
        request = await orch.plan_request(
            query, agent, session_id, revise=revise, feedback=feedback
        )
    except TaskorchError:
        return None  # the tool body reports the problem (unknown agent or plan, ...)
    if orch.model_configured(request.agent):
        return None
    return request


_HOST_PLANNING = HostPlanning(_host_plan_request)


# --- tools --------------------------------------------------------------------------------

_PlanId = Annotated[str, Field(description="The plan's id, as create_plan or list_plans gave it.")]


async def create_plan(
    ctx: Context[Any, Any],
    query: Annotated[str, Field(description="What the user wants done, in their words.")],
    planned: Annotated[HostPlanOutcome | None, Resolve(_HOST_PLANNING.resolver)],
    steps: Annotated[
        list[StepSpec] | None,
        Field(
            description="The steps, written by you (recommended: no model call, validated "
            "against the live tool catalog). Omit to let taskorch's planner write them."
        ),
    ] = None,
    agent: Annotated[
        str | None,
        Field(description="The agent whose tool policy, limits and approval rule apply."),
    ] = None,
    session_id: Annotated[
        str | None,
        Field(description="Groups plans: the planner sees the session's earlier plans."),
    ] = None,
    strategy: Annotated[
        str, Field(description="With `steps`: how the plan gets there, in a sentence.")
    ] = "",
    revise: Annotated[
        str | None,
        Field(
            description="A plan_id to revise: the answer is a new version of that plan "
            "(which must not be confirmed or running), needing its own approval."
        ),
    ] = None,
    feedback: Annotated[
        str, Field(description="With `revise` and no `steps`: what the planner should change.")
    ] = "",
) -> PlanView:
    """Create a plan: a graph of tool calls across the configured MCP servers.

    Pass `steps` to write the plan yourself: each step names a `server` and `tool`
    from list_tools, its `arguments`, and `depends_on`. Arguments may read earlier
    outputs with references: "${s1}" (the whole output, JSON type kept) or
    "${s1.items.0.name}" (a path into it); inside a longer string the value is
    interpolated as text. Steps run as soon as their dependencies succeed, so
    independent steps run in parallel. The plan is validated (known tools, valid
    arguments, no cycles) and stored; problems come back as an error listing each
    one and how to fix it. The answer holds `plan_hash`: unless the agent
    auto-approves, call confirm_plan with it before execute_plan.
    """
    orch = _orchestrator(ctx)
    raw = None if steps is None else [s.model_dump(exclude_none=True) for s in steps]
    with _boundary():
        return await orch.create_task_plan(
            query,
            session_id=session_id,
            agent_id=agent,
            steps=raw,
            strategy=strategy,
            revise=revise,
            feedback=feedback,
            host_outcome=planned,
        )


async def confirm_plan(
    ctx: Context[Any, Any],
    plan_id: _PlanId,
    approve: Annotated[
        bool, Field(description="true to approve the plan, false to reject it.")
    ] = True,
    plan_hash: Annotated[
        str | None,
        Field(
            description="The plan_hash you reviewed; approval is refused if the plan "
            "changed since. Omit to approve the latest version as it is now."
        ),
    ] = None,
    reason: Annotated[str | None, Field(description="Why; kept with the plan.")] = None,
) -> PlanView:
    """Approve (or reject) a plan so that it can run.

    Approval binds to the plan's content: it covers exactly the `plan_hash` given,
    and a changed plan needs a new approval. Only approve what the user agreed to.
    """
    with _boundary():
        return await _orchestrator(ctx).confirm_task_plan(
            plan_id, approve, plan_hash=plan_hash, reason=reason
        )


async def execute_plan(
    ctx: Context[Any, Any],
    plan_id: _PlanId,
    approval: Annotated[ElicitationResult[ApprovalForm], Resolve(_ask_approval)],
    wait: Annotated[
        bool,
        Field(
            description="true: stream progress notifications and return the final report; "
            "false: start the run and return at once (follow it with get_progress)."
        ),
    ] = True,
    on_interrupted: Annotated[
        Literal["rerun", "skip"] | None,
        Field(
            description="For a plan waiting on steps that may or may not have taken effect "
            "(in flight at a crash, or failed without a clear answer) and are not safe to "
            "repeat: 'rerun' runs them again, 'skip' skips them."
        ),
    ] = None,
) -> Annotated[CallToolResult, ExecutionReport]:
    """Run an approved plan, in parallel where its dependencies allow.

    With wait=true the call streams MCP progress notifications (each step, and the
    downstream servers' own progress) and returns every step's status, output or
    error. Outputs too large for the answer come as a preview and a resource link
    (get_step_output pages through them); images come as image content when they
    fit. Running a failed plan again re-runs only the steps that failed or were
    skipped. If the plan is not approved yet and the host supports it, the user is
    asked to approve it; otherwise call confirm_plan first.
    """
    orch = _orchestrator(ctx)

    async def forward(progress: float, total: float | None, message: str | None) -> None:
        await ctx.report_progress(progress, total, message)

    with _boundary():
        if isinstance(approval, DeclinedElicitation):
            await orch.confirm_task_plan(
                plan_id, False, plan_hash=_ASKED_HASH.get(), reason="declined in the host"
            )
            report = await orch.execution_report(
                plan_id, "The user declined; the plan is rejected."
            )
            return await _answer(orch, report)
        if isinstance(approval, CancelledElicitation):
            raise ToolError(
                "the approval dialog was dismissed: the plan still awaits confirmation; "
                f"call confirm_plan(plan_id={plan_id!r}) once the user agrees"
            )
        if isinstance(approval, AcceptedElicitation) and isinstance(approval.data, ApprovalForm):
            answer = approval.data
            await orch.confirm_task_plan(
                plan_id,
                answer.approve,
                plan_hash=_ASKED_HASH.get(),
                reason=answer.reason or ("approved" if answer.approve else "rejected"),
            )
            if not answer.approve:
                report = await orch.execution_report(plan_id, "The user rejected the plan.")
                return await _answer(orch, report)
        report = await orch.execute_task_plan(
            plan_id, wait=wait, on_interrupted=on_interrupted, on_progress=forward
        )
        return await _answer(orch, report)


async def get_progress(ctx: Context[Any, Any], plan_id: _PlanId) -> ProgressView:
    """Where a plan's run stands: step counts, percent done, elapsed seconds and an ETA.

    The ETA comes from each tool's recorded durations along the remaining critical
    path; it is null when nothing is known to estimate from.
    """
    with _boundary():
        return await _orchestrator(ctx).get_progress(plan_id)


async def cancel_execution(
    ctx: Context[Any, Any], plan_id: _PlanId
) -> Annotated[CallToolResult, ExecutionReport]:
    """Cancel a plan's run: calls in flight are cancelled downstream and nothing more starts.

    A confirmed plan that has not started is cancelled too. Cancelling a plan that
    already finished changes nothing and says so.
    """
    orch = _orchestrator(ctx)
    with _boundary():
        return await _answer(orch, await orch.cancel_task_execution(plan_id))


async def get_plan(
    ctx: Context[Any, Any],
    plan_id: _PlanId,
    version: Annotated[
        int | None, Field(ge=1, description="A version number; omit for the latest.")
    ] = None,
) -> Annotated[CallToolResult, PlanView]:
    """A plan with every step's arguments, status, attempts, output and error.

    Outputs too large for the answer come as a preview and a resource link.
    """
    orch = _orchestrator(ctx)
    with _boundary():
        return await _answer(orch, await orch.get_task_plan(plan_id, version=version))


async def get_step_output(
    ctx: Context[Any, Any],
    plan_id: _PlanId,
    step_id: Annotated[str, Field(description="The step whose output to read.")],
    offset: Annotated[
        int, Field(ge=0, description="Byte offset: 0, then the previous page's next_offset.")
    ] = 0,
    limit: Annotated[
        int | None,
        Field(ge=1, description="Most bytes in this page (default: what fits an answer)."),
    ] = None,
    path: Annotated[
        str,
        Field(
            description="A path inside the output, as in references: 'items.10', "
            "'content.1.data' (a content block's data); empty for the whole output."
        ),
    ] = "",
    version: Annotated[
        int | None, Field(ge=1, description="The plan version; omit for the latest.")
    ] = None,
) -> StepOutputPage:
    """Read a step's output page by page, or one value in it, byte for byte.

    Text is paged by bytes of its UTF-8 (cut between characters), JSON by bytes of
    its compact form; with `path` only the value there is read (a string as its
    text). Concatenating the pages from offset 0, each starting at the previous
    page's next_offset, rebuilds the output exactly.
    """
    with _boundary():
        return await _orchestrator(ctx).get_step_output(
            plan_id, step_id, offset=offset, limit=limit, path=path, version=version
        )


async def list_plans(
    ctx: Context[Any, Any],
    status: Annotated[
        list[PlanStatus] | None,
        Field(description="Only plans in these statuses (e.g. ['executing']); omit for all."),
    ] = None,
    session_id: Annotated[str | None, Field(description="Only this session's plans.")] = None,
    limit: Annotated[int, Field(ge=1, le=500, description="Most plans returned.")] = 50,
) -> PlanList:
    """List plans, newest first, with their status and step count."""
    with _boundary():
        return await _orchestrator(ctx).list_task_plans(
            statuses=status, session_id=session_id, limit=limit
        )


async def get_stats(
    ctx: Context[Any, Any],
    server: Annotated[
        str | None, Field(description="Only this downstream server (and its tools).")
    ] = None,
    tool: Annotated[str | None, Field(description="Only tools of this name.")] = None,
    since: Annotated[
        str | None,
        Field(
            description="Only calls from then on: a duration back from now ('30m', '12h', "
            "'1d', '2w') or an ISO-8601 time; omit for everything recorded."
        ),
    ] = None,
    limit: Annotated[int, Field(ge=1, le=100, description="Most tools (and servers) listed.")] = 20,
) -> StatsView:
    """Performance statistics: which tools are slow, which fail, which servers go down.

    Per tool: attempts, succeeded, failed by error kind, retries, p50 / p95 / max
    seconds of successful calls, and the last failure with its time. Per server:
    attempts, failures, restarts and seconds down. Least reliable first, then
    slowest. For where one plan's time went, see get_plan's `timing`.
    """
    with _boundary():
        orch = _orchestrator(ctx)
        stats = await orch.get_stats(server=server, tool=tool, since=since)
        return stats_view(stats, limit=limit, budget_bytes=orch.answer_budget_bytes)


async def list_tools(
    ctx: Context[Any, Any],
    server: Annotated[
        str | None, Field(description="Only this downstream server's tools; omit for all.")
    ] = None,
) -> ToolList:
    """List the downstream tools a plan can call: server, tool, input and output schemas, hints.

    Use `server` and `tool` exactly as shown in create_plan's steps. The output
    schema tells which paths later steps can reference.
    """
    with _boundary():
        return await _orchestrator(ctx).list_tools(server=server)


async def list_agents(ctx: Context[Any, Any]) -> AgentList:
    """List the agents (named policies: allowed tools, limits, approval rule, model)."""
    with _boundary():
        return await _orchestrator(ctx).list_agent_configs()


async def add_agent(
    ctx: Context[Any, Any],
    name: Annotated[
        str, Field(description="The agent's name: letters, digits, '_', '.', '-' (1-64).")
    ],
    description: Annotated[str, Field(description="What the agent is for.")] = "",
    system_prompt: Annotated[str, Field(description="Instructions for planning.")] = "",
    personality: Annotated[str, Field(description="Tone and habits for planning.")] = "",
    model: Annotated[
        str | None, Field(description="litellm model string for planning, e.g. 'openai/gpt-4o'.")
    ] = None,
    allow: Annotated[
        list[str] | None,
        Field(description="Globs over 'server.tool' the agent's plans may call (default all)."),
    ] = None,
    deny: Annotated[
        list[str] | None,
        Field(description="Globs over 'server.tool' never allowed; deny wins over allow."),
    ] = None,
    auto_approve: Annotated[
        AutoApprove,
        Field(
            description="'never': every plan waits for confirm_plan; 'read_only': plans "
            "whose every tool is annotated read-only are confirmed at once."
        ),
    ] = AutoApprove.NEVER,
    limits: Annotated[
        AgentLimits | None, Field(description="Bounds: max_steps, plan_deadline_s, ...")
    ] = None,
    retry: Annotated[
        RetryPolicy | None, Field(description="Default retry policy for its steps.")
    ] = None,
) -> AgentConfig:
    """Add an agent, or replace one added before. Returns the stored agent.

    Agents defined in taskorch's config file are the operator's: they cannot be
    replaced or shadowed (a name differing only in case is refused too).
    """
    policy = ToolPolicy(
        allow=tuple(allow) if allow is not None else ("*",),
        deny=tuple(deny or ()),
    )
    with _boundary():
        try:
            agent = AgentConfig(
                name=name,
                description=description,
                system_prompt=system_prompt,
                personality=personality,
                model=model,
                tool_policy=policy,
                auto_approve=auto_approve,
                limits=limits or AgentLimits(),
                retry=retry,
            )
        except ValueError as exc:
            raise ToolError(f"the agent is not valid: {exc}") from exc
        return await _orchestrator(ctx).add_agent_config(agent)


# --- resources ----------------------------------------------------------------------------


async def _plan_and_states(ctx: Context[Any, Any], plan_id: str) -> tuple[Plan, dict[str, Any]]:
    try:
        return await _orchestrator(ctx).plan_with_states(plan_id)
    except NotFoundError as exc:
        raise ResourceNotFoundError(str(exc)) from exc
    except TaskorchError as exc:
        raise ResourceError(str(exc)) from exc


async def plan_resource(plan_id: str, ctx: Context[Any, Any]) -> str:
    """The plan and every step's state, as JSON (outputs within the answer budget)."""
    try:
        view = await _orchestrator(ctx).get_task_plan(plan_id)
    except NotFoundError as exc:
        raise ResourceNotFoundError(str(exc)) from exc
    except TaskorchError as exc:
        raise ResourceError(str(exc)) from exc
    return json.dumps(view.model_dump(mode="json"), indent=2, ensure_ascii=False)


async def plan_graph_resource(plan_id: str, ctx: Context[Any, Any]) -> str:
    """The plan's DAG as a Mermaid flowchart, nodes coloured by status."""
    plan, states = await _plan_and_states(ctx, plan_id)
    return render_graph(plan, states)


async def plan_timeline_resource(plan_id: str, ctx: Context[Any, Any]) -> str:
    """The plan's run as a Mermaid Gantt chart, one section per server, and its critical path."""
    plan, states = await _plan_and_states(ctx, plan_id)
    try:
        timing = await _orchestrator(ctx).plan_timing(plan, states)
    except TaskorchError as exc:
        raise ResourceError(str(exc)) from exc
    return render_timeline(plan, states, timing=timing)


# Listed templates; `TaskorchServer.read_resource` answers them, each read with its
# own MIME type (a template has one for all), so these only say what they serve.
async def step_output_resource(plan_id: str, step_id: str, ctx: Context[Any, Any]) -> str:
    """A step's whole output."""
    _, text, _ = await _orchestrator(ctx).step_output_text(plan_id, step_id)
    return text


async def step_value_resource(plan_id: str, step_id: str, path: str, ctx: Context[Any, Any]) -> str:
    """The value at a path in a step's output."""
    _, text, _ = await _orchestrator(ctx).step_output_text(plan_id, step_id, path)
    return text


async def step_content_resource(
    plan_id: str, step_id: str, index: str, ctx: Context[Any, Any]
) -> str:
    """One content block of a step, as JSON."""
    block = await _orchestrator(ctx).step_content(plan_id, step_id, int(index))
    return json.dumps(block, ensure_ascii=False)


def _hints(
    *, read_only: bool, destructive: bool = False, idempotent: bool, open_world: bool = False
) -> ToolAnnotations:
    return ToolAnnotations(
        read_only_hint=read_only,
        destructive_hint=destructive,
        idempotent_hint=idempotent,
        open_world_hint=open_world,
    )


_READ = _hints(read_only=True, idempotent=True)

_TOOLS: Sequence[tuple[Any, str, ToolAnnotations]] = (
    (create_plan, "Create a plan", _hints(read_only=False, idempotent=False)),
    (confirm_plan, "Approve or reject a plan", _hints(read_only=False, idempotent=True)),
    (
        execute_plan,
        "Run a plan",
        _hints(read_only=False, destructive=True, idempotent=False, open_world=True),
    ),
    (get_progress, "Progress of a run", _READ),
    (
        cancel_execution,
        "Cancel a run",
        _hints(read_only=False, destructive=True, idempotent=True),
    ),
    (get_plan, "Show a plan", _READ),
    (get_step_output, "Read a step's output", _READ),
    (list_plans, "List plans", _READ),
    (list_tools, "List downstream tools", _READ),
    (get_stats, "Performance statistics", _READ),
    (list_agents, "List agents", _READ),
    (
        add_agent,
        "Add or replace an agent",
        _hints(read_only=False, destructive=True, idempotent=True),
    ),
)


def _stats_resources(
    orchestrator: TaskOrchestrator,
) -> list[tuple[str, str, str, str, str, Callable[[], Awaitable[str]]]]:
    """The `stats://` resources: static URIs get no context, so they close over `orchestrator`."""

    async def figures() -> Any:
        try:
            return await orchestrator.get_stats()
        except TaskorchError as exc:
            raise ResourceError(str(exc)) from exc

    async def tools() -> str:
        return render_stats_json(
            await figures(), "tools", budget_bytes=orchestrator.answer_budget_bytes
        )

    async def servers() -> str:
        return render_stats_json(
            await figures(), "servers", budget_bytes=orchestrator.answer_budget_bytes
        )

    async def chart() -> str:
        return render_stats_chart(await figures())

    return [
        (
            "stats://tools",
            "tool-stats",
            "Tool statistics (JSON)",
            "Every tool's calls, failures by kind, retries, p50 / p95 / max seconds, "
            "last failure; least reliable, then slowest, first.",
            "application/json",
            tools,
        ),
        (
            "stats://servers",
            "server-stats",
            "Server statistics (JSON)",
            "Every downstream server's calls, failures, restarts and time down.",
            "application/json",
            servers,
        ),
        (
            "stats://chart",
            "stats-chart",
            "Slowest tools (Mermaid)",
            "A bar chart of the slowest tools' p95 seconds, with their p50 as a line.",
            "text/vnd.mermaid",
            chart,
        ),
    ]


def build_server(orchestrator: TaskOrchestrator, *, name: str = "taskorch") -> TaskorchServer:
    """Build the MCP server for an (open) orchestrator: tools and resources registered."""
    server = TaskorchServer(orchestrator, name=name)
    for fn, title, hints in _TOOLS:
        server.add_tool(
            fn,
            title=title,
            description=inspect.cleandoc(fn.__doc__ or ""),
            annotations=hints,
            structured_output=True,
        )
    server.resource(
        "plan://{plan_id}",
        name="plan",
        title="Plan (JSON)",
        description="A plan with every step's status, attempts, output and error.",
        mime_type="application/json",
    )(plan_resource)
    server.resource(
        "plan://{plan_id}/steps/{step_id}/output",
        name="step-output",
        title="A step's whole output",
        description="The output of a step that succeeded, whole: its text, or compact JSON.",
    )(step_output_resource)
    server.resource(
        "plan://{plan_id}/steps/{step_id}/output/{path}",
        name="step-output-value",
        title="A value in a step's output",
        description="The value at a reference path (items.0.name) in a step's output.",
    )(step_value_resource)
    server.resource(
        "plan://{plan_id}/steps/{step_id}/content/{index}",
        name="step-content",
        title="A content block of a step",
        description="An image, audio, embedded resource, link or text a step's tool returned.",
    )(step_content_resource)
    server.resource(
        "plan://{plan_id}/graph",
        name="plan-graph",
        title="Plan graph (Mermaid)",
        description="The plan's steps and dependencies as a Mermaid flowchart coloured by status.",
        mime_type="text/vnd.mermaid",
    )(plan_graph_resource)
    server.resource(
        "plan://{plan_id}/timeline",
        name="plan-timeline",
        title="Plan timeline (Mermaid)",
        description="When each step ran, as a Mermaid Gantt chart.",
        mime_type="text/vnd.mermaid",
    )(plan_timeline_resource)
    for uri, name, title, description, mime, handler in _stats_resources(orchestrator):
        server.resource(uri, name=name, title=title, description=description, mime_type=mime)(
            handler
        )
    # The SDK's decorator is untyped; the handler it registers is typed below.
    server.completion()(_completer(orchestrator))  # type: ignore[no-untyped-call]
    return server


_MAX_COMPLETIONS = 100


def _completer(orchestrator: TaskOrchestrator) -> Any:
    """Complete the `plan_id` of the `plan://` resource templates from the stored plans."""

    async def complete(
        ref: PromptReference | ResourceTemplateReference,
        argument: CompletionArgument,
        context: CompletionContext | None,
    ) -> Completion | None:
        if not (
            isinstance(ref, ResourceTemplateReference)
            and ref.uri.startswith("plan://")
            and argument.name == "plan_id"
        ):
            return None
        listed = await orchestrator.list_task_plans(limit=500)
        ids = [p.plan_id for p in listed.plans if p.plan_id.startswith(argument.value)]
        return Completion(
            values=ids[:_MAX_COMPLETIONS],
            total=len(ids),
            has_more=len(ids) > _MAX_COMPLETIONS,
        )

    return complete


# --- transports -----------------------------------------------------------------------------


async def serve_stdio(server: MCPServer[Any]) -> None:
    """Serve over stdin/stdout until the client goes away (logs go to stderr)."""
    await server.run_stdio_async()


class BearerTokenMiddleware:
    """Refuse every HTTP request that lacks `Authorization: Bearer <token>` (401)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        """Wrap `app`; `token` must be non-empty."""
        if not token:
            raise UserError(
                "the bearer token is empty: set a non-empty TASKORCH_TOKEN (or --token), "
                "or unset it"
            )
        self.app = app
        self._token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the token of an HTTP request, then pass it on."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = Headers(scope=scope).get("authorization", "")
        scheme, _, credential = header.partition(" ")
        # Compare in constant time so the token cannot be guessed byte by byte.
        if scheme.lower() == "bearer" and hmac.compare_digest(
            credential.strip().encode(), self._token
        ):
            await self.app(scope, receive, send)
            return
        error = "invalid_token" if header else "invalid_request"
        response = JSONResponse(
            {
                "error": error,
                "error_description": "send 'Authorization: Bearer <token>' with the token "
                "taskorch was started with (TASKORCH_TOKEN, or --token)",
            },
            status_code=401,
            headers={"WWW-Authenticate": f'Bearer realm="taskorch", error="{error}"'},
        )
        await response(scope, receive, send)


_LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")


def build_http_app(
    server: MCPServer[Any],
    *,
    host: str = "127.0.0.1",
    token: str | None = None,
    allowed_hosts: Sequence[str] = (),
) -> ASGIApp:
    """The streamable HTTP app (at `/mcp`), with DNS-rebinding protection and optional auth.

    Args:
        server: The MCP server.
        host: The address bound; requests must name it (or a loopback name) in `Host`.
        token: When set, every request must carry it as a bearer token.
        allowed_hosts: More `Host` values to accept (`name` or `name:port`).
    """
    names = dict.fromkeys([*_LOCAL_HOSTS, f"[{host}]" if ":" in host else host, *allowed_hosts])
    hosts = [h for name in names for h in (name, f"{name}:*")]
    origins = [o for name in names for o in (f"http://{name}", f"http://{name}:*")]
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins
    )
    app: ASGIApp = server.streamable_http_app(
        streamable_http_path="/mcp", transport_security=security, host=host
    )
    if token:
        app = BearerTokenMiddleware(app, token)
    return app


async def serve_http(
    server: MCPServer[Any],
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_HTTP_PORT,
    token: str | None = None,
    allowed_hosts: Sequence[str] = (),
    log_level: str = "warning",
    limits: HttpLimits | None = None,
    allow_no_token: bool = False,
) -> None:
    """Serve streamable HTTP at `http://host:port/mcp` until cancelled.

    Args:
        server: The MCP server.
        host: The address to bind.
        port: The port to bind.
        token: When set, every request must carry it as a bearer token.
        allowed_hosts: More `Host` values to accept (`name` or `name:port`).
        log_level: uvicorn's log level.
        limits: Connection cap and timeouts (`HttpLimits()` when `None`).
        allow_no_token: Serve beyond loopback without a token anyway (with a warning).

    Raises:
        UserError: `host` is not loopback and there is no token (see `check_bind`).
    """
    warning = check_bind(host, token, allow_no_token=allow_no_token)
    if warning is not None:
        logger.warning("%s", warning)
    import uvicorn

    from server.http_protocol import protocol_for

    limits = limits or HttpLimits()
    app = build_http_app(server, host=host, token=token, allowed_hosts=allowed_hosts)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level.lower(),
        lifespan="on",
        access_log=False,
        http=protocol_for(limits),
        ws="none",  # nothing here speaks WebSocket: refuse upgrades rather than hold them
        timeout_keep_alive=limits.keep_alive_s,
        # Counted with the connection asking: past the cap, a request is answered 503.
        limit_concurrency=limits.max_connections + 1,
    )
    await uvicorn.Server(config).serve()
