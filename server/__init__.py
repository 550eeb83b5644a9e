"""The face: the MCP server, the Python API, the CLI and config loading.

Names are imported on first use, so that `import server.config` (or the CLI's
`--help`) does not load the MCP SDK and the engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from executor._utils import lazy_exports as _lazy_exports

if TYPE_CHECKING:
    from server.app import TaskorchServer, build_http_app, build_server, serve_http, serve_stdio
    from server.config import TaskorchConfig, load_config, resolve_db_path
    from server.http_guard import HttpLimits
    from server.orchestrator import AgentList, ProgressUpdate, TaskOrchestrator
    from server.render import render_graph, render_plan_json, render_timeline
    from server.views import (
        ExecutionReport,
        PlanList,
        PlanSummary,
        PlanView,
        ProgressView,
        StepView,
        ToolList,
        ToolView,
    )

__all__ = [
    "AgentList",
    "ExecutionReport",
    "HttpLimits",
    "PlanList",
    "PlanSummary",
    "PlanView",
    "ProgressUpdate",
    "ProgressView",
    "StepView",
    "TaskOrchestrator",
    "TaskorchConfig",
    "TaskorchServer",
    "ToolList",
    "ToolView",
    "build_http_app",
    "build_server",
    "load_config",
    "render_graph",
    "render_plan_json",
    "render_timeline",
    "resolve_db_path",
    "serve_http",
    "serve_stdio",
]

_HOME = {
    "AgentList": "server.orchestrator",
    "ExecutionReport": "server.views",
    "HttpLimits": "server.http_guard",
    "PlanList": "server.views",
    "PlanSummary": "server.views",
    "PlanView": "server.views",
    "ProgressUpdate": "server.orchestrator",
    "ProgressView": "server.views",
    "StepView": "server.views",
    "TaskOrchestrator": "server.orchestrator",
    "TaskorchConfig": "server.config",
    "TaskorchServer": "server.app",
    "ToolList": "server.views",
    "ToolView": "server.views",
    "build_http_app": "server.app",
    "build_server": "server.app",
    "load_config": "server.config",
    "render_graph": "server.render",
    "render_plan_json": "server.render",
    "render_timeline": "server.render",
    "resolve_db_path": "server.config",
    "serve_http": "server.app",
    "serve_stdio": "server.app",
}


__getattr__, __dir__ = _lazy_exports(__name__, _HOME, globals())
