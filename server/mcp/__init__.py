"""The MCP face: taskorch's tools and resources, served over stdio or streamable HTTP.

`server` (the `MCPServer` carrying the orchestrator), `tools`, `resources`,
`approval` (the host's dialog), `errors` (the one boundary to MCP errors),
`build` (registration, stdio), `http` (the app, its token and its guards:
`http_guard` for where it may listen, `http_protocol` for slow clients).
"""

from __future__ import annotations

import typing

from executor._utils import export_lazily as _export_lazily

if typing.TYPE_CHECKING or not _export_lazily(globals()):
    from server.mcp.build import build_server as build_server
    from server.mcp.build import serve_stdio as serve_stdio
    from server.mcp.http import BearerTokenMiddleware as BearerTokenMiddleware
    from server.mcp.http import build_http_app as build_http_app
    from server.mcp.http import serve_http as serve_http
    from server.mcp.http_guard import DEFAULT_HTTP_PORT as DEFAULT_HTTP_PORT
    from server.mcp.http_guard import check_bind as check_bind
    from server.mcp.http_guard import is_loopback as is_loopback
    from server.mcp.server import INSTRUCTIONS as INSTRUCTIONS
    from server.mcp.server import TaskorchServer as TaskorchServer
