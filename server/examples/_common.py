"""What the example servers share: tool annotations and the stdio entry point."""

from __future__ import annotations

import logging
import sys

from mcp.server import MCPServer
from mcp_types import ToolAnnotations

PURE = ToolAnnotations(
    read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False
)
"""A tool that computes from its arguments alone."""


def run_stdio(server: MCPServer) -> None:
    """Serve `server` over stdio, logging warnings and worse to stderr only."""
    # MCPServer configures INFO logging on import; stdout belongs to the protocol, and
    # a chatty stderr clutters the downstream log taskorch keeps per server.
    logging.getLogger().setLevel(logging.WARNING)
    try:
        server.run("stdio")
    except KeyboardInterrupt:
        sys.exit(130)
