"""The face: the Python API (`TaskOrchestrator`), the MCP server, the CLI and config loading.

Names are imported on first use, so that `import server.config` (or the CLI's
`--help`) does not load the MCP SDK and the engine.
"""

from __future__ import annotations

import typing

from executor._utils import export_lazily as _export_lazily

if typing.TYPE_CHECKING or not _export_lazily(globals()):
    from server.config import HttpLimits as HttpLimits
    from server.config import Limits as Limits
    from server.config import TaskorchConfig as TaskorchConfig
    from server.config import load_config as load_config
    from server.config import resolve_db_path as resolve_db_path
    from server.mcp import TaskorchServer as TaskorchServer
    from server.mcp import build_http_app as build_http_app
    from server.mcp import build_server as build_server
    from server.mcp import serve_http as serve_http
    from server.mcp import serve_stdio as serve_stdio
    from server.planning import PlannerFor as PlannerFor
    from server.progress import ProgressUpdate as ProgressUpdate
    from server.render import render_graph as render_graph
    from server.render import render_plan_json as render_plan_json
    from server.render import render_timeline as render_timeline
    from server.service import TaskOrchestrator as TaskOrchestrator
    from server.views import AgentList as AgentList
    from server.views import PlanList as PlanList
    from server.views import PlanSummary as PlanSummary
    from server.views import PlanView as PlanView
    from server.views import ProgressView as ProgressView
    from server.views import RunView as RunView
    from server.views import StepView as StepView
    from server.views import ToolList as ToolList
    from server.views import ToolView as ToolView
