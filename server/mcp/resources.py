"""The resources: a plan as JSON, its graph and timeline (Mermaid), step outputs, statistics.

`register_resources` adds them to a server, with completion of the `plan_id`
of the `plan://` templates from the stored plans. The step resources are
listed here and answered by `TaskorchServer.read_resource` (each read with its
own MIME type).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from mcp.server.mcpserver import Context
from mcp_types import (
    Completion,
    CompletionArgument,
    CompletionContext,
    PromptReference,
    ResourceTemplateReference,
)

from executor import Plan, Stats, StepState
from server.mcp.errors import resource_boundary
from server.mcp.server import TaskorchServer, orchestrator_of
from server.render import render_graph, render_timeline
from server.service import TaskOrchestrator
from server.stats_view import render_stats_chart, render_stats_json

__all__ = ["register_resources"]

_MAX_COMPLETIONS = 100


async def _plan_and_states(
    ctx: Context[Any, Any], plan_id: str
) -> tuple[Plan, dict[str, StepState]]:
    with resource_boundary():
        return await orchestrator_of(ctx).plan_with_states(plan_id)


async def plan_resource(plan_id: str, ctx: Context[Any, Any]) -> str:
    """The plan and every step's state, as JSON (outputs within the answer budget)."""
    with resource_boundary():
        view = await orchestrator_of(ctx).get_task_plan(plan_id)
    return json.dumps(view.model_dump(mode="json"), indent=2, ensure_ascii=False)


async def plan_graph_resource(plan_id: str, ctx: Context[Any, Any]) -> str:
    """The plan's DAG as a Mermaid flowchart, nodes coloured by status."""
    plan, states = await _plan_and_states(ctx, plan_id)
    return render_graph(plan, states)


async def plan_timeline_resource(plan_id: str, ctx: Context[Any, Any]) -> str:
    """The plan's run as a Mermaid Gantt chart, one section per server, and its critical path."""
    plan, states = await _plan_and_states(ctx, plan_id)
    with resource_boundary():
        timing = await orchestrator_of(ctx).plan_timing(plan, states)
    return render_timeline(plan, states, timing=timing)


# Listed templates; `TaskorchServer.read_resource` answers them, each read with its
# own MIME type (a template has one for all), so these only say what they serve.
async def step_output_resource(plan_id: str, step_id: str, ctx: Context[Any, Any]) -> str:
    """A step's whole output."""
    _, text, _ = await orchestrator_of(ctx).step_output_text(plan_id, step_id)
    return text


async def step_value_resource(plan_id: str, step_id: str, path: str, ctx: Context[Any, Any]) -> str:
    """The value at a path in a step's output."""
    _, text, _ = await orchestrator_of(ctx).step_output_text(plan_id, step_id, path)
    return text


async def step_content_resource(
    plan_id: str, step_id: str, index: str, ctx: Context[Any, Any]
) -> str:
    """One content block of a step, as JSON."""
    block = await orchestrator_of(ctx).step_content(plan_id, step_id, int(index))
    return json.dumps(block, ensure_ascii=False)


def _stats_resources(
    orchestrator: TaskOrchestrator,
) -> list[tuple[str, str, str, str, str, Callable[[], Awaitable[str]]]]:
    """The `stats://` resources: static URIs get no context, so they close over `orchestrator`."""

    async def figures() -> Stats:
        with resource_boundary():
            return await orchestrator.get_stats()

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


def register_resources(server: TaskorchServer) -> None:
    """Add every resource, and `plan_id` completion, to `server`."""
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
    for uri, name, title, description, mime, handler in _stats_resources(server.orchestrator):
        server.resource(uri, name=name, title=title, description=description, mime_type=mime)(
            handler
        )
    # The SDK's decorator is untyped; the handler it registers is typed below.
    server.completion()(_completer(server.orchestrator))  # type: ignore[no-untyped-call]


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
