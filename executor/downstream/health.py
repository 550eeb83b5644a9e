"""What the pool reports of each server's state, for `taskorch config check` and `Pool.health()`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

__all__ = ["ServerHealth", "ServerStatus"]

ServerStatus = Literal["up", "down", "starting", "not_started"]
"""A server's state: connected, failed, connecting, or never tried."""


class ServerHealth(BaseModel):
    """One server's state."""

    model_config = ConfigDict(frozen=True)

    name: str
    """The server's configured name."""
    transport: str
    """`stdio`, `http`, `sse` or `websocket`."""
    status: ServerStatus
    """Whether the server is connected."""
    tool_count: int | None = None
    """Tools listed (after `allowed_tools`/`denied_tools`), when connected."""
    protocol_version: str | None = None
    """The negotiated MCP revision, when connected."""
    latency_ms: float | None = None
    """The round trip of the last `tools/list` made by a check."""
    error: str | None = None
    """Why the server is down, in the server's words where it gave some."""
    stderr_tail: tuple[str, ...] = ()
    """The last lines the server wrote to stderr (stdio servers)."""
    restarts: int = 0
    """Times the session was opened again after the first time."""
    pid: int | None = None
    """The stdio server's pid (its process group id), when running."""
