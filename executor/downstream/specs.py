"""How to reach one downstream server: one model per transport, in a tagged union.

These are the entries of the Claude Desktop `mcpServers` object once read
(`server/config/` reads files and the environment into them). Each spec
builds its own transport, says which of its values are secrets (`SecretStr`:
never in `repr`, logs or `model_dump(mode="json")`), and tells the config
reader how a config names it. Adding a transport is one spec class here (added to
`AnyServerSpec`) and one module in `transports/`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal, get_args
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from executor.oauth.config import OAuthSpec
from executor.policy import ToolFilter

if TYPE_CHECKING:
    from mcp.client._transport import TransportStreams

    from executor.downstream.transports.base import Wiring

__all__ = [
    "DEFAULT_MAX_CONCURRENCY",
    "DEFAULT_MAX_TIMEOUT_S",
    "DEFAULT_TIMEOUT_S",
    "SPEC_TYPES",
    "AnyServerSpec",
    "BaseServerSpec",
    "HttpServerSpec",
    "ServerSpec",
    "SseServerSpec",
    "StdioServerSpec",
    "WebSocketServerSpec",
    "spec_type_for_url",
]

DEFAULT_TIMEOUT_S = 300.0
"""Per-call timeout when neither the step nor the server sets one."""
DEFAULT_MAX_TIMEOUT_S = 3600.0
"""Hard cap on one call, however much progress the server reports."""
DEFAULT_MAX_CONCURRENCY = 8
"""Calls in flight per server when the server does not set a limit."""

# Each transport's module is imported when a session first needs it, not with
# the specs: reading a config (`taskorch --help`, `serve`'s start) stays light.


class BaseServerSpec(BaseModel, ABC):
    """What every server spec holds, and what each transport's spec must say."""

    # defer_build: the schema is built at first use, not at import (read commands import
    # many models and validate few).
    model_config = ConfigDict(frozen=True, defer_build=True, extra="forbid")

    type: str
    """Transport tag."""
    timeout_s: float | None = Field(default=None, gt=0)
    """Per-call timeout for this server's tools (else 300 s)."""
    max_concurrency: int | None = Field(default=None, ge=1, le=1024)
    """Calls in flight to this server at once (else 8)."""
    allowed_tools: tuple[str, ...] | None = None
    """Globs over tool names; only matching tools are listed (else all)."""
    denied_tools: tuple[str, ...] = ()
    """Globs over tool names that are never listed or called, case ignored; wins over
    `allowed_tools`."""

    aliases: ClassVar[tuple[str, ...]] = ()
    """Other names a config may give the transport (the first is shown in messages)."""

    @property
    def tool_filter(self) -> ToolFilter:
        """`allowed_tools` and `denied_tools`, as the rule checked before every call."""
        return ToolFilter(allowed=self.allowed_tools, denied=self.denied_tools)

    @abstractmethod
    def secrets(self) -> list[str]:
        """The secret values given to the server, to scrub from what it sends."""

    @classmethod
    def claims_url(cls, url: str) -> bool:
        """Whether a config entry with only this (lower-cased) `url` means this transport."""
        return False

    @abstractmethod
    def transport(self, wiring: Wiring) -> AbstractAsyncContextManager[TransportStreams]:
        """The transport to open one session with (entered once per session)."""


class StdioServerSpec(BaseServerSpec):
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

    def secrets(self) -> list[str]:
        """The `env` values."""
        return [value.get_secret_value() for value in self.env.values()]

    def transport(self, wiring: Wiring) -> AbstractAsyncContextManager[TransportStreams]:
        """The child process, in its own process group."""
        from executor.downstream.transports.stdio import StdioProcess

        return StdioProcess(
            self,
            wiring.stderr,
            on_exit=wiring.on_exit,
            grace_s=wiring.grace_s,
            kill_grace_s=wiring.kill_grace_s,
        )


class _RemoteSpec(BaseServerSpec):
    url: str
    """Endpoint."""
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    """Extra request headers, such as `Authorization` (secret)."""

    @field_validator("url")
    @classmethod
    def _has_host_and_port(cls, url: str) -> str:
        # Checked here rather than by the first connection, which fails in the
        # HTTP library's words. The URL is never quoted: it may hold a token.
        parts = urlsplit(url)
        if not parts.hostname:
            scheme = "ws" if parts.scheme.lower().startswith("ws") else "http"
            raise ValueError(f"must name a host, as in {scheme}://127.0.0.1:8000/mcp")
        try:
            port = parts.port
        except ValueError:
            port = 0
        if port == 0:
            raise ValueError("has a port that is not a number from 1 to 65535")
        return url

    def secrets(self) -> list[str]:
        """The `headers` values."""
        return [value.get_secret_value() for value in self.headers.values()]

    def plain_headers(self) -> dict[str, str]:
        """The headers as sent."""
        return {key: value.get_secret_value() for key, value in self.headers.items()}


class HttpServerSpec(_RemoteSpec):
    """A server over streamable HTTP."""

    type: Literal["http"] = "http"
    """Transport tag."""
    url: str = Field(pattern=r"^https?://")
    """Endpoint, such as `http://127.0.0.1:8000/mcp`."""
    auth: OAuthSpec | None = None
    """OAuth to this server (see `executor.oauth.config`); `None` for none."""

    aliases: ClassVar[tuple[str, ...]] = ("streamable-http", "streamable_http", "streamablehttp")

    @model_validator(mode="after")
    def _one_authorization(self) -> HttpServerSpec:
        if self.auth is not None and any(k.lower() == "authorization" for k in self.headers):
            raise ValueError(
                "has both an Authorization header and auth: OAuth sets the header itself; keep one"
            )
        return self

    def secrets(self) -> list[str]:
        """The `headers` values, and the `auth` ones."""
        own = self.auth.secrets() if self.auth is not None else []
        return [*super().secrets(), *own]

    @classmethod
    def claims_url(cls, url: str) -> bool:
        """Any `http://` or `https://` URL."""
        return url.startswith(("http://", "https://"))

    def transport(self, wiring: Wiring) -> AbstractAsyncContextManager[TransportStreams]:
        """A streamable HTTP connection, with OAuth when `auth` is set."""
        from executor.downstream.transports.http import streamable_http_transport

        inner = None
        if self.auth is not None:
            from executor.oauth.transport import oauth_http_transport

            inner = oauth_http_transport(wiring.server, self.url, self.auth, wiring.oauth_dir)
        return streamable_http_transport(self.url, self.plain_headers(), inner)


class SseServerSpec(_RemoteSpec):
    """A server over the older HTTP+SSE transport."""

    type: Literal["sse"] = "sse"
    """Transport tag."""
    url: str = Field(pattern=r"^https?://")
    """SSE endpoint, such as `http://127.0.0.1:8000/sse`."""

    @classmethod
    def claims_url(cls, url: str) -> bool:
        """An HTTP URL whose path ends in `/sse`."""
        return HttpServerSpec.claims_url(url) and urlsplit(url).path.rstrip("/").endswith("/sse")

    def transport(self, wiring: Wiring) -> AbstractAsyncContextManager[TransportStreams]:
        """An SSE event stream, with a POST per message."""
        from executor.downstream.transports.sse import sse_transport

        return sse_transport(self.url, self.plain_headers())


class WebSocketServerSpec(_RemoteSpec):
    """A server over WebSocket (subprotocol `mcp`)."""

    type: Literal["websocket"] = "websocket"
    """Transport tag."""
    url: str = Field(pattern=r"^wss?://")
    """Endpoint, such as `ws://127.0.0.1:8000/mcp`."""

    aliases: ClassVar[tuple[str, ...]] = ("ws",)

    @classmethod
    def claims_url(cls, url: str) -> bool:
        """A `ws://` or `wss://` URL."""
        return url.startswith(("ws://", "wss://"))

    def transport(self, wiring: Wiring) -> AbstractAsyncContextManager[TransportStreams]:
        """A WebSocket connection."""
        from executor.downstream.transports.websocket import websocket_client

        return websocket_client(self.url, self.plain_headers())


AnyServerSpec = StdioServerSpec | HttpServerSpec | SseServerSpec | WebSocketServerSpec
"""Every spec class, in the order messages list them."""

ServerSpec = Annotated[AnyServerSpec, Field(discriminator="type")]
"""Any downstream server spec, tagged by `type`."""

SPEC_TYPES: tuple[type[AnyServerSpec], ...] = get_args(AnyServerSpec)
"""The classes of `AnyServerSpec`, in its order."""


def spec_type_for_url(url: str) -> type[AnyServerSpec] | None:
    """The transport a config entry with only a `url` means: the most specific claiming it.

    Later classes in `SPEC_TYPES` are the more specific (`/sse` is also HTTP).
    """
    lowered = url.strip().lower()
    return next((cls for cls in reversed(SPEC_TYPES) if cls.claims_url(lowered)), None)
