"""What every transport shares: the stream pair it yields, and what a supervisor lends it.

A transport is an async context manager yielding the SDK's stream pair
(`mcp.client.Transport`), so `mcp.Client` drives the protocol on top of it.
Each server spec builds its own (`ServerSpec.transport`), given the `Wiring`
its supervisor lends; `WatchedTransport` wraps any of them to report when its
read side ends (the server closed the connection or died).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio
import anyio.abc
import mcp_types
from mcp.client._transport import TransportStreams
from mcp.shared._stream_protocols import ReadStream
from mcp.shared.message import SessionMessage

if TYPE_CHECKING:
    from executor.downstream.transports.stderr import StderrLog

__all__ = ["MAX_MESSAGE_BYTES", "WatchedTransport", "Wiring", "parse_message", "redact_url"]

MAX_MESSAGE_BYTES = 256 * 1024 * 1024
"""Largest JSON-RPC message accepted from a server: tool results carry files, often twice
(as text and as structured content), and results are stored, not answered whole."""


@dataclass(frozen=True, slots=True)
class Wiring:
    """What a supervisor lends the transport of one session (a local server uses it all)."""

    stderr: StderrLog
    """Where a local server's stderr goes."""
    on_exit: Callable[[int], None]
    """Called with a local server's return code as soon as it is gone."""
    grace_s: float
    """How long a local server may take to exit once its stdin closes."""
    kill_grace_s: float
    """How long its process group may take to exit after SIGTERM."""
    server: str
    """The server's configured name (whose OAuth tokens a remote server uses)."""
    oauth_dir: Path | None
    """Where OAuth tokens are kept; `None` for `executor.oauth.default_token_dir()`."""


def parse_message(data: str | bytes) -> mcp_types.JSONRPCMessage:
    """Parse one JSON-RPC message (raises `ValueError` or `ValidationError`)."""
    return mcp_types.jsonrpc_message_adapter.validate_json(data, by_name=False)


def redact_url(url: object) -> str:
    """The URL without credentials or query string, safe for messages and logs."""
    parts = urlsplit(str(url))
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


class _WatchedReadStream(anyio.abc.AsyncResource):
    """A read stream that reports its end once (`AsyncResource` gives `async with`)."""

    __slots__ = ("_inner", "_on_end")

    def __init__(
        self, inner: ReadStream[SessionMessage | Exception], on_end: Callable[[], None]
    ) -> None:
        self._inner = inner
        self._on_end = on_end

    @property
    def last_context(self) -> Any:
        # The dispatcher reads this (by getattr) to run handlers in the sender's context.
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> SessionMessage | Exception:
        try:
            return await self._inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._on_end()
            raise

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __aiter__(self) -> _WatchedReadStream:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        # Inlined rather than calling `receive`: one frame less on every message.
        try:
            return await self._inner.receive()
        except anyio.EndOfStream:
            self._on_end()
            raise StopAsyncIteration from None
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._on_end()
            raise


class WatchedTransport:
    """Wrap a transport so that `on_end` is called when its read side ends."""

    def __init__(
        self, inner: AbstractAsyncContextManager[TransportStreams], on_end: Callable[[], None]
    ) -> None:
        """Wrap `inner`; `on_end` runs (synchronously, once per end) when reading stops."""
        self._inner = inner
        self._on_end = on_end

    async def __aenter__(self) -> TransportStreams:
        read_stream, write_stream = await self._inner.__aenter__()
        return _WatchedReadStream(read_stream, self._on_end), write_stream

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        return await self._inner.__aexit__(exc_type, exc, tb)
