"""`TaskorchServer`: the SDK's `MCPServer` carrying the orchestrator its tools call.

It answers the step resources itself (`plan://{id}/steps/{step}/output...`,
`.../content/{index}`) because each read carries its own MIME type, which a
resource template cannot say.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from mcp.server import MCPServer
from mcp.server.lowlevel.helper_types import ReadResourceContents
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.request_state import RequestStateSecurity
from mcp.server.subscriptions import InMemorySubscriptionBus
from mcp_types import CallToolResult, InputRequiredResult
from pydantic import AnyUrl

from executor.tasks_wire import TaskSupport
from server._version import installed_version
from server.mcp.errors import resource_boundary
from server.mcp.plan_tasks import PlanningTasks
from server.mcp.results import tool_result
from server.mcp.run_tasks import RunTasks
from server.mcp.task_listen import TaskListen
from server.mcp.tasks_ext import TaskBackend, TasksExtension, TaskState
from server.service import TaskOrchestrator
from server.views import RunView

__all__ = ["INSTRUCTIONS", "TASK_TOOLS", "TaskorchServer", "orchestrator_of", "server_of"]

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
"""What the server tells a host about how to use it."""

TASK_TOOLS = {"execute_plan": TaskSupport.OPTIONAL, "create_plan": TaskSupport.OPTIONAL}
"""Tools a host that declares MCP tasks gets a task handle from (create_plan: with a model)."""

_STEP_URI = re.compile(r"plan://([^/]+)/steps/([^/]+)/(?:output(?:/([^/]+))?|content/(\d+))")


class TaskorchServer(MCPServer[Any]):
    """An `MCPServer` that carries the orchestrator its tools call."""

    def __init__(self, orchestrator: TaskOrchestrator, *, name: str = "taskorch") -> None:
        """Build the server (use `build_server`, which also registers the tools)."""

        async def answer(report: RunView) -> CallToolResult:
            return await tool_result(orchestrator, report)

        self.run_tasks = RunTasks(orchestrator, answer)
        """A tasks-capable host's runs, as MCP tasks (`server.mcp.run_tasks`)."""
        self.plan_tasks = PlanningTasks(orchestrator)
        """A tasks-capable host's planning with a model (`server.mcp.plan_tasks`)."""
        host_tasks = _HostTasks(self.run_tasks, self.plan_tasks)
        bus = InMemorySubscriptionBus()
        super().__init__(
            name,
            title="taskorch",
            instructions=INSTRUCTIONS,
            version=installed_version(),
            log_level="WARNING",
            extensions=[TasksExtension(host_tasks, TASK_TOOLS)],
            # One bus for the SDK's events and `TaskListen`'s streams, which carry them too.
            subscriptions=bus,
            middleware=[TaskListen(host_tasks, bus)],
            # The input-required round's requestState is sealed with a key from the
            # store: an approval question outlives a restart of taskorch.
            request_state_security=RequestStateSecurity(
                keys=[orchestrator.request_state_key], audience=name
            ),
        )
        self.orchestrator = orchestrator

    async def read_resource(
        self, uri: AnyUrl | str, context: Context[Any, Any] | None = None
    ) -> Iterable[ReadResourceContents] | InputRequiredResult:
        """Read a resource; step outputs and content blocks carry their own MIME types."""
        match = _STEP_URI.fullmatch(str(uri))
        if match is None:
            return await super().read_resource(uri, context)
        with resource_boundary():
            return [await _step_resource(self.orchestrator, *match.groups())]


class _HostTasks:
    """The host's tasks: each `tasks/*` request goes to the backend whose id it names."""

    def __init__(self, runs: RunTasks, plans: PlanningTasks) -> None:
        self._runs = runs
        self._plans = plans

    def _backend(self, task_id: str) -> TaskBackend:
        return self._plans if PlanningTasks.owns(task_id) else self._runs

    async def get(self, task_id: str, owner: str) -> TaskState | None:
        return await self._backend(task_id).get(task_id, owner)

    async def cancel(self, task_id: str, owner: str) -> TaskState | None:
        return await self._backend(task_id).cancel(task_id, owner)

    async def update(
        self, task_id: str, owner: str, responses: Mapping[str, Any]
    ) -> TaskState | None:
        return await self._backend(task_id).update(task_id, owner, responses)


def server_of(ctx: Context[Any, Any]) -> TaskorchServer:
    """The server a request came to."""
    server = ctx.mcp_server
    if not isinstance(server, TaskorchServer):
        raise ToolError("internal: this tool is served outside a TaskorchServer")
    return server


def orchestrator_of(ctx: Context[Any, Any]) -> TaskOrchestrator:
    """The orchestrator of the server a request came to."""
    return server_of(ctx).orchestrator


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
