"""The MCP tools: each a thin call into the `TaskOrchestrator`, answered as structured content.

Arguments are described for the model that calls them; a step of
`create_plan` is the plan model's own shape (`Step`'s JSON Schema), checked by
the same parser as every plan so that every problem is reported at once.
Answers carrying step outputs stay within the answer budget: JSON, images
that fit, links to the rest. Errors cross `server.mcp.errors.tool_boundary`.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context, ElicitationResult, Resolve
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.utilities.func_metadata import func_metadata
from mcp_types import (
    CallToolResult,
    TextContent,
    ToolAnnotations,
)
from pydantic import Field, WithJsonSchema

from executor import (
    AgentConfig,
    AgentLimits,
    AutoApprove,
    PlanStatus,
    RetryPolicy,
    Step,
    TaskorchError,
)
from executor.policy import ToolPolicy
from planner.host import HostPlanning, HostPlanOutcome, host_supports_sampling
from planner.models import PlanRequest
from server.mcp.approval import ApprovalForm, answer_asked, ask_approval
from server.mcp.errors import tool_boundary
from server.mcp.host_asking import asking_the_waiting_host
from server.mcp.results import tool_result
from server.mcp.server import TaskorchServer, orchestrator_of, server_of
from server.mcp.tasks_ext import task_offer
from server.mcp.tasks_memory import TaskControl
from server.stats_view import StatsView, stats_view
from server.views import (
    AgentList,
    PlanList,
    PlanView,
    ProgressView,
    RunView,
    StepOutputPage,
    ToolList,
)

__all__ = ["STEP_SCHEMA", "register_tools"]

logger = logging.getLogger(__name__)

# What a model reading create_plan's schema should know about each field of a step,
# beyond its type; the shape itself is `Step`'s.
_STEP_WORDS = {
    "id": "Unique step id: a letter or '_', then letters, digits, '_' or '-' (at most 64). "
    "Later steps read its output as ${id} or ${id.key.0}.",
    "server": "The downstream server's name, as list_tools shows it.",
    "tool": "The tool's name on that server, as list_tools shows it.",
    "arguments": "The tool's arguments; any string value may hold ${step.path} references.",
    "depends_on": "Ids of steps that must succeed first (references add theirs).",
    "description": "What the step is for.",
    "timeout_s": "Per-attempt timeout in seconds.",
    "on_error": "'fail' (default): the plan fails at once; 'continue': skip this "
    "step's dependents and let independent steps go on.",
    "retry": "Retry policy for this step.",
}


def _step_schema() -> dict[str, Any]:
    """`Step`'s JSON Schema, its definitions inlined, with `_STEP_WORDS` as descriptions."""
    schema = Step.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(
                    {
                        **defs[ref.removeprefix("#/$defs/")],
                        **{k: v for k, v in node.items() if k != "$ref"},
                    }
                )
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    schema = {k: inline(v) for k, v in schema.items()}
    for name, words in _STEP_WORDS.items():
        schema["properties"][name]["description"] = words
    schema.pop("description", None)
    schema["title"] = "Step"
    return schema


STEP_SCHEMA = _step_schema()
"""The JSON Schema of one step of `create_plan`: the plan model's, described for a model."""

# --- planning with the host's model ---------------------------------------------------------


async def _host_plan_request(
    query: str,
    steps: list[dict[str, Any]] | None,
    agent: str | None,
    session_id: str | None,
    revise: str | None,
    feedback: str,
    ctx: Context[Any, Any],
) -> PlanRequest | None:
    """Plan with the host's model only when nothing else can: no steps, no model configured."""
    if steps is not None or not host_supports_sampling(ctx):
        return None
    orch = orchestrator_of(ctx)
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
        list[Annotated[dict[str, Any], WithJsonSchema(STEP_SCHEMA)]] | None,
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
) -> Annotated[CallToolResult, PlanView]:
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
    orch = orchestrator_of(ctx)
    # An explicit null is the field left out, as in any optional argument.
    raw = None if steps is None else [{k: v for k, v in s.items() if v is not None} for s in steps]

    async def plan() -> PlanView:
        with tool_boundary():
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

    if task_offer() is not None and raw is None:
        if planned is not None or await orch.plans_with_model(agent):
            # A model plans and the host speaks MCP tasks: the planning is its task.
            async def work(_: TaskControl) -> CallToolResult:
                try:
                    return _plan_result(await plan())
                except Exception as exc:
                    return _error_result("create_plan", exc)

            return await server_of(ctx).plan_tasks.run(work)
    return _plan_result(await plan())


def _plan_shape() -> PlanView:
    """The shape create_plan answers with, for `_PLAN_RESULT` (never called)."""
    raise NotImplementedError


_PLAN_RESULT = func_metadata(_plan_shape, structured_output=True)


def _plan_result(view: PlanView) -> CallToolResult:
    """What a tool returning `view` answers: the SDK's conversion, inline or from a task."""
    result = _PLAN_RESULT.convert_result(view)
    assert isinstance(result, CallToolResult)
    return result


def _error_result(tool: str, exc: Exception) -> CallToolResult:
    """What the SDK answers for a tool body that raised `exc` (a task's work answers the same).

    A `ToolError` keeps its text after the SDK's prefix; anything else is a bug,
    logged here, whose text does not reach the client.
    """
    if isinstance(exc, ToolError):
        text = f"Error executing tool {tool}: {exc}"
    else:
        logger.error("tool %r raised an unexpected exception", tool, exc_info=exc)
        text = f"Error executing tool {tool}"
    return CallToolResult(content=[TextContent(text=text)], is_error=True)


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
    with tool_boundary():
        return await orchestrator_of(ctx).confirm_task_plan(
            plan_id, approve, plan_hash=plan_hash, reason=reason
        )


async def execute_plan(
    ctx: Context[Any, Any],
    plan_id: _PlanId,
    approval: Annotated[ElicitationResult[ApprovalForm], Resolve(ask_approval)],
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
) -> Annotated[CallToolResult, RunView]:
    """Run an approved plan, in parallel where its dependencies allow.

    With wait=true the call streams MCP progress notifications (each step, and the
    downstream servers' own progress) and returns every step's status, output or
    error. Outputs too large for the answer come as a preview and a resource link
    (get_step_output pages through them); images come as image content when they
    fit. Running a failed plan again re-runs only the steps that failed or were
    skipped. If the plan is not approved yet and the host supports it, the user is
    asked to approve it; otherwise call confirm_plan first.
    """
    orch = orchestrator_of(ctx)

    async def forward(progress: float, total: float | None, message: str | None) -> None:
        await ctx.report_progress(progress, total, message)

    with tool_boundary():
        refused = await answer_asked(orch, plan_id, approval)
        if refused is not None:
            return await tool_result(orch, await orch.execution_report(plan_id, refused))
        offer = task_offer()
        if offer is not None:  # the host speaks MCP tasks: the run becomes its task
            return await server_of(ctx).run_tasks.start(offer, plan_id, on_interrupted)
        # While the host waits it can be asked the downstream tools' questions.
        asking = asking_the_waiting_host(ctx, orch.scheduler.askers, plan_id)
        with asking if wait else nullcontext():
            report = await orch.execute_task_plan(
                plan_id, wait=wait, on_interrupted=on_interrupted, on_progress=forward
            )
        return await tool_result(orch, report)


async def get_progress(ctx: Context[Any, Any], plan_id: _PlanId) -> ProgressView:
    """Where a plan's run stands: step counts, percent done, elapsed seconds and an ETA.

    The ETA comes from each tool's recorded durations along the remaining critical
    path; it is null when nothing is known to estimate from.
    """
    with tool_boundary():
        return await orchestrator_of(ctx).get_progress(plan_id)


async def cancel_execution(
    ctx: Context[Any, Any], plan_id: _PlanId
) -> Annotated[CallToolResult, RunView]:
    """Cancel a plan's run: calls in flight are cancelled downstream and nothing more starts.

    A confirmed plan that has not started is cancelled too. Cancelling a plan that
    already finished changes nothing and says so.
    """
    orch = orchestrator_of(ctx)
    with tool_boundary():
        return await tool_result(orch, await orch.cancel_task_execution(plan_id))


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
    orch = orchestrator_of(ctx)
    with tool_boundary():
        return await tool_result(orch, await orch.get_task_plan(plan_id, version=version))


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
    with tool_boundary():
        return await orchestrator_of(ctx).get_step_output(
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
    with tool_boundary():
        return await orchestrator_of(ctx).list_task_plans(
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
    with tool_boundary():
        orch = orchestrator_of(ctx)
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
    with tool_boundary():
        return await orchestrator_of(ctx).list_tools(server=server)


async def list_agents(ctx: Context[Any, Any]) -> AgentList:
    """List the agents (named policies: allowed tools, limits, approval rule, model)."""
    with tool_boundary():
        return await orchestrator_of(ctx).list_agent_configs()


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
    with tool_boundary():
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
        return await orchestrator_of(ctx).add_agent_config(agent)


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


def register_tools(server: TaskorchServer) -> None:
    """Add every tool to `server`, described, annotated and with its output schema."""
    for fn, title, hints in _TOOLS:
        server.add_tool(
            fn,
            title=title,
            description=inspect.cleandoc(fn.__doc__ or ""),
            annotations=hints,
            structured_output=True,
        )
