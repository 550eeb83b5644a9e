"""How to reach one downstream server: one model per transport, in a tagged union.

These are the entries of the Claude Desktop `mcpServers` object once read
(`server/config.py` reads files and the environment into them). Secrets, the
`env` values of a stdio server and the `headers` of a remote one, are
`SecretStr`: they never show in `repr`, logs or `model_dump(mode="json")`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from executor.policy import ToolFilter

__all__ = [
    "HttpServerSpec",
    "ServerSpec",
    "SseServerSpec",
    "StdioServerSpec",
    "WebSocketServerSpec",
]

DEFAULT_TIMEOUT_S = 300.0
"""Per-call timeout when neither the step nor the server sets one."""
DEFAULT_MAX_TIMEOUT_S = 3600.0
"""Hard cap on one call, however much progress the server reports."""
DEFAULT_MAX_CONCURRENCY = 8
"""Calls in flight per server when the server does not set a limit."""


class _Common(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    timeout_s: float | None = Field(default=None, gt=0)
    """Per-call timeout for this server's tools (else 300 s)."""
    max_concurrency: int | None = Field(default=None, ge=1, le=1024)
    """Calls in flight to this server at once (else 8)."""
    allowed_tools: tuple[str, ...] | None = None
    """Globs over tool names; only matching tools are listed (else all)."""
    denied_tools: tuple[str, ...] = ()
    """Globs over tool names that are never listed or called, case ignored; wins over
    `allowed_tools`."""

    @property
    def tool_filter(self) -> ToolFilter:
        """`allowed_tools` and `denied_tools`, as the rule checked before every call."""
        return ToolFilter(allowed=self.allowed_tools, denied=self.denied_tools)


class StdioServerSpec(_Common):
    """A server run as a child process speaking over stdin/stdout."""

    type: Literal["stdio"] = "stdio"
    """Transport tag."""
    command: str = Field(min_length=1)
    """Executable to run."""
    args: tuple[str, ...] = ()
    """Its arguments."""
    env: dict[str, SecretStr] = Field(default_factory=dict)
    """Extra environment for the child (secret: never logged or stored)."""
    cwd: str | None = None
    """Working directory for the child."""


class HttpServerSpec(_Common):
    """A server over streamable HTTP."""

    type: Literal["http"] = "http"
    """Transport tag."""
    url: str = Field(pattern=r"^https?://")
    """Endpoint, such as `http://127.0.0.1:8000/mcp`."""
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    """Extra request headers, such as `Authorization` (secret)."""


class SseServerSpec(_Common):
    """A server over the older HTTP+SSE transport."""

    type: Literal["sse"] = "sse"
    """Transport tag."""
    url: str = Field(pattern=r"^https?://")
    """SSE endpoint, such as `http://127.0.0.1:8000/sse`."""
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    """Extra request headers (secret)."""


class WebSocketServerSpec(_Common):
    """A server over WebSocket (subprotocol `mcp`)."""

    type: Literal["websocket"] = "websocket"
    """Transport tag."""
    url: str = Field(pattern=r"^wss?://")
    """Endpoint, such as `ws://127.0.0.1:8000/mcp`."""
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    """Extra handshake headers (secret)."""


ServerSpec = Annotated[
    StdioServerSpec | HttpServerSpec | SseServerSpec | WebSocketServerSpec,
    Field(discriminator="type"),
]
"""Any downstream server spec, tagged by `type`."""
