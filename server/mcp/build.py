"""The MCP server of an open orchestrator, every tool and resource registered; stdio."""

from __future__ import annotations

from typing import Any

from mcp.server import MCPServer

from server.mcp.resources import register_resources
from server.mcp.server import TaskorchServer
from server.mcp.tools import register_tools
from server.service import TaskOrchestrator

__all__ = ["build_server", "serve_stdio"]


def build_server(orchestrator: TaskOrchestrator, *, name: str = "taskorch") -> TaskorchServer:
    """Build the MCP server for an (open) orchestrator: tools and resources registered."""
    server = TaskorchServer(orchestrator, name=name)
    register_tools(server)
    register_resources(server)
    return server


async def serve_stdio(server: MCPServer[Any]) -> None:
    """Serve over stdin/stdout until the client goes away (logs go to stderr)."""
    await server.run_stdio_async()
