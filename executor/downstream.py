"""The supervised pool of downstream MCP sessions, their catalog, and failure kinds.

`Pool` implements `executor.calls.ToolCaller`. It keeps one long-lived session
per configured server, opened on first use (concurrent first calls share one
opening) and shared by every call:

- **Supervision.** A session whose server dies (a stdio process exits, a
  connection drops) is noticed at once: calls in flight fail with
  `tool_unavailable` (stdio) or `network` (remote) instead of waiting for their
  timeout. The next use restarts it: the first restart is immediate, further
  consecutive failures wait `restart_backoff_s`, doubling up to
  `restart_backoff_max_s`; meanwhile calls fail fast with the last error and the
  server's last stderr lines. A successful call resets the count. Closing the
  pool ends every stdio child's whole process group (see `StdioProcess`).
  Every session opened, lost or never opened becomes a `ServerEvent` (up,
  down, closed), queued in order the moment it is noticed and handed to
  `on_server_event` by one task, which the orchestrator points at the store
  (the servers' restarts and time down in `get_stats`).
- **Calls.** Each call holds one of the server's `max_concurrency` slots and has
  a deadline: the step's `timeout_s`, else the server's, else the pool default.
  Progress from the server pushes the deadline out again (an idle timeout), but
  never past `max_timeout_s` from the call's start. When the deadline passes, or
  an enclosing cancel scope is cancelled, the request is cancelled downstream
  (`notifications/cancelled`, or a closed stream on 2026-07-28 HTTP).
  Cancellation itself propagates as anyio's cancellation exception;
  `classify_exception` maps it to `ErrorKind.CANCELLED`.
- **Catalog.** Tools of every reachable server, filtered by the server's
  `allowed_tools` / `denied_tools` globs (`executor.policy.ToolFilter`: deny wins
  and ignores case; a filtered tool can be neither listed nor called), refreshed
  when the server reports `tools/list_changed` (a notification before
  2026-07-28, a `subscriptions/listen` event after).
- **Errors.** Failures raise `ToolCallError` with an `ErrorKind` and a
  `Delivery` (whether the request may have reached the tool), both from one
  table, `_FAILURES`. An `isError` result is returned, not raised, unless it is
  a protocol error in disguise: the TypeScript SDK answers argument and protocol
  errors as `isError` results reading "MCP error -32602: ...", and those fail
  like the JSON-RPC errors they are. Messages keep the server's own words.
- **Secrets.** Everything a server sends enters taskorch here, so here the
  configured secrets (`env` and `headers` values, and any `secrets` given) are
  scrubbed from it (`executor.redact`): error messages, results, progress
  messages, tool listings, and stderr (in `StderrLog`).
"""

from __future__ import annotations

import importlib.metadata
import logging
import math
import re
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol

import anyio
import anyio.abc
import mcp_types
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp import Client
from mcp.client._transport import TransportStreams
from mcp.client.session import IncomingMessage
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, ConfigDict, ValidationError

from executor._utils import leaf_exceptions
from executor.calls import ProgressFn, ToolResult, share_long_strings
from executor.catalog import Catalog, ToolAnnotations, ToolInfo
from executor.errors import Delivery, ErrorKind, InternalError, ToolCallError
from executor.records import ServerEvent, ServerEventKind
from executor.redact import Scrubber
from executor.specs import (
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_TIMEOUT_S,
    HttpServerSpec,
    ServerSpec,
    SseServerSpec,
    StdioServerSpec,
    WebSocketServerSpec,
)
from executor.transports import (
    DEFAULT_LOG_LINES_PER_S,
    DEFAULT_LOG_MAX_BYTES,
    HTTP_NOTE,
    HttpNote,
    StderrLog,
    StdioProcess,
    WatchedTransport,
    describe_exit,
    make_http_client,
    sse_transport,
)
from executor.ws_client import websocket_client

if TYPE_CHECKING:
    from rich.table import Table

__all__ = [
    "DEFAULT_MAX_TIMEOUT_S",
    "Pool",
    "ServerEventFn",
    "ServerHealth",
    "ServerStatus",
    "classify_exception",
    "render_health_table",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_TIMEOUT_S = 3600.0
"""Hard cap on one call, however much progress the server reports."""

ServerStatus = Literal["up", "down", "starting", "not_started"]
"""A server's state: connected, failed, connecting, or never tried."""

_STDERR_IN_MESSAGES = 5
_EVENT_WRITE_S = 5.0
"""Longest wait for `on_server_event` to take one event (a slow database, say)."""
_EVENT_REASON_CHARS = 300
_LISTING_PAGES_MAX = 100
_TOOL_NAMES_IN_MESSAGES = 20
_EXIT_DETAILS_WAIT_S = 0.1
_STDERR_HEADER = "\nlast stderr lines:\n"
_SESSION_GONE = "Session terminated"  # the SDK's words for HTTP 404 on a known session
_SDK_HTTP_FALLBACK = "Server returned an error response"  # its words for an error status

try:
    _VERSION = importlib.metadata.version("taskorch")
except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a checkout
    _VERSION = "0"


class ServerEventFn(Protocol):
    """Receives each change in a server's availability (see `Pool`'s `on_server_event`)."""

    async def __call__(self, event: ServerEvent) -> None:
        """Take one event; an exception is logged and otherwise ignored."""


class ServerHealth(BaseModel):
    """One server's state, as `taskorch config check` and `Pool.health()` report it."""

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


def classify_exception(exc: BaseException) -> ErrorKind:
    """The `ErrorKind` for anything a call can end with, cancellation included."""
    if isinstance(exc, ToolCallError):
        return exc.kind
    if isinstance(exc, anyio.get_cancelled_exc_class()):
        return ErrorKind.CANCELLED
    if isinstance(exc, TimeoutError):
        return ErrorKind.TIMEOUT
    return ErrorKind.INTERNAL


class _Failure(StrEnum):
    """Every way the pool sees a call fail; `_FAILURES` says what each one means."""

    NO_SERVER = "no_server"
    TOOL_HIDDEN = "tool_hidden"
    BAD_TIMEOUT = "bad_timeout"
    NOT_SENT = "not_sent"
    """No session, or no tool listing, to send the request with (the cause says why)."""
    UNKNOWN_TOOL = "unknown_tool"
    QUEUED_TOO_LONG = "queued_too_long"
    """The deadline passed before the request went out."""
    NO_ANSWER = "no_answer"
    """The deadline passed after the request went out."""
    SESSION_FORGOTTEN = "session_forgotten"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    UNREACHABLE = "unreachable"
    CONNECTION_BROKE = "connection_broke"
    GATEWAY_ERROR = "gateway_error"
    SERVER_ERROR = "server_error"
    HTTP_REFUSED = "http_refused"
    POOL_CLOSED = "pool_closed"
    SERVER_EXITED = "server_exited"
    CONNECTION_LOST = "connection_lost"
    INVALID_ANSWER = "invalid_answer"
    INVALID_REQUEST = "invalid_request"
    METHOD_NOT_FOUND = "method_not_found"
    """Also a tool that requires task augmentation (MCP 2025-11-25 tasks)."""
    INVALID_PARAMS = "invalid_params"
    SERVER_TIMEOUT = "server_timeout"
    TOOL_FAILED = "tool_failed"


_D = Delivery
_FAILURES: dict[_Failure, tuple[ErrorKind | None, Delivery]] = {
    # Before the request goes out: nothing can have run.
    _Failure.NO_SERVER: (ErrorKind.TOOL_UNAVAILABLE, _D.NOT_DELIVERED),
    _Failure.TOOL_HIDDEN: (ErrorKind.TOOL_UNAVAILABLE, _D.NOT_DELIVERED),
    _Failure.BAD_TIMEOUT: (ErrorKind.INVALID_ARGUMENTS, _D.NOT_DELIVERED),
    _Failure.NOT_SENT: (None, _D.NOT_DELIVERED),  # the kind is its cause's
    _Failure.UNKNOWN_TOOL: (ErrorKind.TOOL_UNAVAILABLE, _D.NOT_DELIVERED),
    _Failure.QUEUED_TOO_LONG: (ErrorKind.TIMEOUT, _D.NOT_DELIVERED),
    # Refused on the way in (HTTP): the request was not run.
    _Failure.SESSION_FORGOTTEN: (ErrorKind.NETWORK, _D.NOT_DELIVERED),
    _Failure.UNAUTHENTICATED: (ErrorKind.AUTHENTICATION, _D.NOT_DELIVERED),
    _Failure.FORBIDDEN: (ErrorKind.AUTHORIZATION, _D.NOT_DELIVERED),
    _Failure.UNREACHABLE: (ErrorKind.NETWORK, _D.NOT_DELIVERED),
    # Sent, and then no answer: it may have run.
    _Failure.NO_ANSWER: (ErrorKind.TIMEOUT, _D.AMBIGUOUS),
    _Failure.CONNECTION_BROKE: (ErrorKind.NETWORK, _D.AMBIGUOUS),
    _Failure.GATEWAY_ERROR: (ErrorKind.NETWORK, _D.AMBIGUOUS),
    _Failure.SERVER_ERROR: (ErrorKind.TOOL_ERROR, _D.AMBIGUOUS),
    _Failure.POOL_CLOSED: (ErrorKind.TOOL_UNAVAILABLE, _D.AMBIGUOUS),
    _Failure.SERVER_EXITED: (ErrorKind.TOOL_UNAVAILABLE, _D.AMBIGUOUS),
    _Failure.CONNECTION_LOST: (ErrorKind.NETWORK, _D.AMBIGUOUS),
    _Failure.SERVER_TIMEOUT: (ErrorKind.TIMEOUT, _D.AMBIGUOUS),
    # The server answered no.
    _Failure.HTTP_REFUSED: (ErrorKind.TOOL_ERROR, _D.ANSWERED),
    _Failure.INVALID_ANSWER: (ErrorKind.TOOL_ERROR, _D.ANSWERED),
    _Failure.INVALID_REQUEST: (ErrorKind.INVALID_ARGUMENTS, _D.ANSWERED),
    _Failure.METHOD_NOT_FOUND: (ErrorKind.TOOL_UNAVAILABLE, _D.ANSWERED),
    _Failure.INVALID_PARAMS: (ErrorKind.INVALID_ARGUMENTS, _D.ANSWERED),
    _Failure.TOOL_FAILED: (ErrorKind.TOOL_ERROR, _D.ANSWERED),
}
"""What each call failure means: its kind, and whether the request may have reached the tool."""

_CODE_FAILURES: dict[int, _Failure] = {
    mcp_types.INVALID_REQUEST: _Failure.INVALID_REQUEST,
    mcp_types.METHOD_NOT_FOUND: _Failure.METHOD_NOT_FOUND,
    mcp_types.INVALID_PARAMS: _Failure.INVALID_PARAMS,
    mcp_types.REQUEST_TIMEOUT: _Failure.SERVER_TIMEOUT,
    mcp_types.CONNECTION_CLOSED: _Failure.CONNECTION_LOST,
}
"""JSON-RPC error codes a server answers with; any other is `TOOL_FAILED`."""

# The TypeScript SDK answers a protocol error from a tool call as an `isError`
# result with this text (its McpError's message) instead of a JSON-RPC error.
_DISGUISED_PROTOCOL_ERROR = re.compile(r"MCP error (-3260[012]): ")


def _failure_error(
    failure: _Failure, message: str, *, server: str, tool: str = "", cause: ErrorKind | None = None
) -> ToolCallError:
    """The error for a call's failure, classified by `_FAILURES`."""
    kind, delivery = _FAILURES[failure]
    kind = kind or cause or ErrorKind.TOOL_UNAVAILABLE
    return ToolCallError(kind, message, server=server, tool=tool, delivery=delivery)


def _http_failure(note: HttpNote) -> _Failure | None:
    """What the HTTP layer's note says about a failed request, when it could tell."""
    if note.kind is ErrorKind.AUTHENTICATION:
        return _Failure.UNAUTHENTICATED
    if note.kind is ErrorKind.AUTHORIZATION:
        return _Failure.FORBIDDEN
    if note.kind is ErrorKind.NETWORK:
        return _Failure.CONNECTION_BROKE if note.delivered else _Failure.UNREACHABLE
    return None


def _disguised_protocol_error(raw: mcp_types.CallToolResult) -> tuple[_Failure, str] | None:
    """The protocol error an `isError` result stands for, with its words, when it is one."""
    if not raw.is_error or len(raw.content) != 1:
        return None
    block = raw.content[0]
    if not isinstance(block, mcp_types.TextContent):
        return None
    match = _DISGUISED_PROTOCOL_ERROR.match(block.text)
    return None if match is None else (_CODE_FAILURES[int(match.group(1))], block.text)


@dataclass(slots=True)
class _Sending:
    """Whether a call's request has gone out: a timeout after that may have let it run."""

    sent: bool = False


def _annotations(raw: mcp_types.ToolAnnotations | None) -> ToolAnnotations:
    if raw is None:
        return ToolAnnotations()
    read_only = bool(raw.read_only_hint)
    destructive = raw.destructive_hint if raw.destructive_hint is not None else True
    return ToolAnnotations(
        read_only=read_only,
        # MCP: destructive and idempotent only mean something for a tool that writes.
        destructive=False if read_only else destructive,
        idempotent=bool(raw.idempotent_hint),
        open_world=raw.open_world_hint if raw.open_world_hint is not None else True,
    )


def _tool_info(server: str, tool: mcp_types.Tool) -> ToolInfo:
    title = tool.title or (tool.annotations.title if tool.annotations else None)
    return ToolInfo(
        server=server,
        name=tool.name,
        title=title,
        description=tool.description or "",
        input_schema=tool.input_schema,
        output_schema=tool.output_schema,
        annotations=_annotations(tool.annotations),
    )


def _to_result(raw: mcp_types.CallToolResult, scrub: Scrubber) -> ToolResult:
    # Built by us from an already validated result: skip revalidation on the hot path.
    content = scrub.json(
        [block.model_dump(mode="json", by_alias=True, exclude_none=True) for block in raw.content]
    )
    return ToolResult.model_construct(
        content=content,
        structured_content=share_long_strings(content, scrub.json(raw.structured_content)),
        is_error=bool(raw.is_error),
    )


def _scrubbed_tool(tool: mcp_types.Tool, scrub: Scrubber) -> mcp_types.Tool:
    """The tool with secrets scrubbed from what a planner or host will read of it."""
    if not scrub:
        return tool
    return tool.model_copy(
        update={
            "title": scrub.json(tool.title),
            "description": scrub.json(tool.description),
            "input_schema": scrub.json(tool.input_schema),
            "output_schema": scrub.json(tool.output_schema),
        }
    )


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "server"


def _with_stderr(message: str, tail: Sequence[str]) -> str:
    if not tail:
        return message
    lines = "\n".join(f"  {line}" for line in tail[-_STDERR_IN_MESSAGES:])
    return f"{message}{_STDERR_HEADER}{lines}"


# --------------------------------------------------------------------------- connection


class _Connection:
    """One open session to a server, served by one task in the pool's task group."""

    def __init__(self, server: _Server) -> None:
        self.server = server
        self.client: Client | None = None
        self.process: StdioProcess | None = None
        self.protocol_version: str | None = None
        self.ended = anyio.Event()
        """Set when the serving task should wind down: closed by us, or dead."""
        self.dead = False
        self.closing = False
        self.reason: str | None = None
        self.tools_stale = anyio.Event()

    def mark_dead(self, reason: str) -> None:
        """The session can no longer be used; say why (once)."""
        if self.dead:
            return
        self.dead = True
        self.reason = reason
        self.ended.set()
        if not self.closing:
            self.server.connection_died(self)

    def close(self) -> None:
        """Ask the serving task to end the session gracefully."""
        self.closing = True
        self.mark_dead("the pool closed the connection")

    def death(self) -> str:
        """Why the session ended, as a clause ("the server process exited with code 3")."""
        if self.process is not None and self.process.returncode is not None:
            return f"the server process {describe_exit(self.process.returncode)}"
        return self.reason or "the connection closed"

    async def settle(self) -> None:
        """Wait briefly for a dead stdio child's exit code and last stderr lines."""
        if self.process is not None:
            with anyio.move_on_after(_EXIT_DETAILS_WAIT_S):
                await self.process.exited.wait()

    async def on_message(self, message: IncomingMessage) -> None:
        """Notice a 2025-era `notifications/tools/list_changed`."""
        if isinstance(message, mcp_types.ToolListChangedNotification):
            self.tools_stale.set()

    def on_process_exit(self, returncode: int) -> None:
        self.mark_dead(f"the server process {describe_exit(returncode)}")


class _Opening:
    """A connection attempt that concurrent callers wait on together."""

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.conn: _Connection | None = None
        self.error: ToolCallError | None = None
        self.scope = anyio.CancelScope()
        """Bounds the attempt (`connect_timeout_s`); the pool cancels it when closing."""


# --------------------------------------------------------------------------- server


class _Server:
    """Everything the pool knows about one configured server."""

    def __init__(self, pool: Pool, name: str, spec: ServerSpec, stderr: StderrLog | None) -> None:
        self.pool = pool
        self.name = name
        self.spec = spec
        self.stderr = stderr
        self.tool_filter = spec.tool_filter
        self.limiter = anyio.CapacityLimiter(spec.max_concurrency or DEFAULT_MAX_CONCURRENCY)
        self.conn: _Connection | None = None
        self.opening: _Opening | None = None
        self.tools: dict[str, ToolInfo] = {}
        self.tools_version = 0
        self.failures = 0
        self.retry_at = 0.0
        self.last_error: ToolCallError | None = None
        self.attempts = 0
        self.starts = 0
        self.latency_ms: float | None = None
        self.down = False
        """Reported down (a `ServerEvent`) and not up since."""
        self.is_http = isinstance(spec, HttpServerSpec | SseServerSpec)
        """HTTP failures are noted per call (`HttpNote`); fixed with the spec."""

    @property
    def up(self) -> bool:
        return self.conn is not None and not self.conn.dead

    @property
    def status(self) -> ServerStatus:
        if self.up:
            return "up"
        if self.opening is not None:
            return "starting"
        return "not_started" if self.attempts == 0 else "down"

    def stderr_tail(self) -> tuple[str, ...]:
        return self.stderr.tail() if self.stderr is not None else ()

    def error(self, kind: ErrorKind, message: str, tool: str = "") -> ToolCallError:
        # Every failure the pool reports is built here: the one place to scrub its words.
        return ToolCallError(kind, self.pool.scrub.text(message), server=self.name, tool=tool)

    def failure(
        self, failure: _Failure, message: str, tool: str, cause: ErrorKind | None = None
    ) -> ToolCallError:
        message = self.pool.scrub.text(message)  # scrubbed here, as in `error`
        return _failure_error(failure, message, server=self.name, tool=tool, cause=cause)

    # ----------------------------------------------------------------- filters

    def unknown_tool(self, tool: str) -> str:
        """Say that `tool` is not on this server, naming the tools that are."""
        names = sorted(self.tools)
        listed = ", ".join(names[:_TOOL_NAMES_IN_MESSAGES]) or "no tools"
        if len(names) > _TOOL_NAMES_IN_MESSAGES:
            listed += f" and {len(names) - _TOOL_NAMES_IN_MESSAGES} more"
        return f"the server has no tool named {tool!r} (it has {listed})"

    def filter_reason(self, tool: str) -> str | None:
        """Why `tool` is hidden by the server's config, or `None` when it is allowed."""
        return self.tool_filter.refusal(tool)

    def set_tools(self, tools: Sequence[mcp_types.Tool]) -> None:
        self.tools = {
            tool.name: _tool_info(self.name, _scrubbed_tool(tool, self.pool.scrub))
            for tool in tools
            if self.filter_reason(tool.name) is None
        }
        self.tools_version += 1

    async def refresh_tools(self, conn: _Connection) -> None:
        """List the server's tools again (every page)."""
        assert conn.client is not None
        token = HTTP_NOTE.set(HttpNote())
        try:
            listed: list[mcp_types.Tool] = []
            cursor: str | None = None
            for _ in range(_LISTING_PAGES_MAX):
                page = await conn.client.list_tools(cursor=cursor)
                listed.extend(page.tools)
                cursor = page.next_cursor
                if cursor is None:
                    break
        except MCPError as exc:
            if exc.error.code != mcp_types.METHOD_NOT_FOUND:
                message = f"listing the tools failed: {exc.error.message}"
                raise self.error(ErrorKind.TOOL_UNAVAILABLE, message) from exc
            listed = []  # a server without the tools capability: nothing to call
        finally:
            HTTP_NOTE.reset(token)
        self.set_tools(listed)

    # ----------------------------------------------------------------- supervision

    def backoff(self) -> float:
        """Seconds to wait before the next restart, after `failures` failures in a row."""
        if self.failures <= 1:
            return 0.0
        delay = self.pool.restart_backoff_s * 2 ** (self.failures - 2)
        return float(min(delay, self.pool.restart_backoff_max_s))

    def failed(self, err: ToolCallError) -> ToolCallError:
        """Count a failed start or a crash; returns the error as reported from now on."""
        self.failures += 1
        self.retry_at = anyio.current_time() + self.backoff()
        self.last_error = err
        return err

    def succeeded(self) -> None:
        self.failures = 0
        self.retry_at = 0.0

    def connection_died(self, conn: _Connection) -> None:
        if conn is not self.conn:
            return
        self.failed(self.error(self.death_kind(conn), conn.death()))
        self.pool.report(self, ServerEventKind.DOWN, reason=conn.death())

    def death_kind(self, conn: _Connection) -> ErrorKind:
        """A dead child is an unavailable tool; a dropped connection is the network."""
        return ErrorKind.TOOL_UNAVAILABLE if conn.process is not None else ErrorKind.NETWORK

    def died(self, conn: _Connection) -> None:
        """Report a session that ended under us, once its exit details are known."""
        error = self.error(self.death_kind(conn), _with_stderr(conn.death(), self.stderr_tail()))
        logger.warning("downstream server %r: %s", self.name, error.message)
        if conn is self.conn and self.last_error is not None:
            self.last_error = error

    def down_error(self, wait: float) -> ToolCallError:
        last = self.last_error
        cause = last.message.split(_STDERR_HEADER, 1)[0] if last is not None else "it failed"
        times = "time" if self.failures == 1 else "times in a row"
        message = (
            f"the server is down: {cause} (failed {self.failures} {times}; "
            f"next restart attempt in {wait:.1f} s)"
        )
        kind = last.kind if last is not None else ErrorKind.TOOL_UNAVAILABLE
        return self.error(kind, _with_stderr(message, self.stderr_tail()))

    async def connection(self, *, force: bool = False) -> _Connection:
        """The open session, opening (or restarting) it when needed.

        Args:
            force: Try now even inside the restart backoff window (a health check).

        Raises:
            ToolCallError: The server cannot be reached, or is down and inside its
                backoff window.
        """
        conn = self.conn
        if conn is not None and not conn.dead:
            return conn
        opening = self.opening
        if opening is None:
            wait = self.retry_at - anyio.current_time()
            if not force and wait > 0 and self.last_error is not None:
                raise self.down_error(wait)
            opening = self.opening = _Opening()
            self.attempts += 1
            self.pool.spawn_connection(self, opening)
        await opening.done.wait()
        if opening.error is not None:
            raise opening.error
        assert opening.conn is not None
        return opening.conn

    def health(self) -> ServerHealth:
        conn = self.conn if self.up else None
        error = None
        if not self.up and self.last_error is not None:
            # The tail is reported on its own; keep the error to the reason.
            error = self.last_error.message.split(_STDERR_HEADER, 1)[0]
        pid = conn.process.pid if conn is not None and conn.process is not None else None
        return ServerHealth(
            name=self.name,
            transport=self.spec.type,
            status=self.status,
            tool_count=len(self.tools) if conn is not None else None,
            protocol_version=conn.protocol_version if conn is not None else None,
            latency_ms=self.latency_ms if conn is not None else None,
            error=error,
            stderr_tail=self.stderr_tail() if error is not None else (),
            restarts=max(self.starts - 1, 0),
            pid=pid,
        )


# --------------------------------------------------------------------------- transports


@asynccontextmanager
async def _http_transport(spec: HttpServerSpec) -> AsyncIterator[TransportStreams]:
    headers = {key: value.get_secret_value() for key, value in spec.headers.items()}
    async with (
        make_http_client(headers) as http,
        streamable_http_client(spec.url, http_client=http) as streams,
    ):
        yield streams


def _transport(
    pool: Pool, srv: _Server, conn: _Connection
) -> AbstractAsyncContextManager[TransportStreams]:
    spec = srv.spec
    if isinstance(spec, StdioServerSpec):
        assert srv.stderr is not None
        conn.process = StdioProcess(
            spec,
            srv.stderr,
            on_exit=conn.on_process_exit,
            grace_s=pool.shutdown_grace_s,
            kill_grace_s=pool.kill_grace_s,
        )
        return conn.process
    if isinstance(spec, HttpServerSpec):
        return _http_transport(spec)
    if isinstance(spec, SseServerSpec):
        return sse_transport(spec)
    if isinstance(spec, WebSocketServerSpec):
        headers = {key: value.get_secret_value() for key, value in spec.headers.items()}
        return websocket_client(spec.url, headers)
    raise InternalError(f"no transport for server spec {type(spec).__name__}")


# --------------------------------------------------------------------------- pool


class Pool:
    """Supervised sessions to every downstream server; a `ToolCaller`.

    Use it as an async context manager: leaving it closes every session and ends
    every stdio child's process group.

    Example:
        ```python
        async with Pool(servers, log_dir=state_dir / "logs") as pool:
            catalog = await pool.catalog()
            result = await pool.call("time", "get_current_time", {"timezone": "UTC"})
        ```
    """

    def __init__(
        self,
        servers: Mapping[str, ServerSpec],
        *,
        log_dir: Path | None = None,
        default_timeout_s: float = DEFAULT_TIMEOUT_S,
        max_timeout_s: float = DEFAULT_MAX_TIMEOUT_S,
        connect_timeout_s: float = 30.0,
        restart_backoff_s: float = 0.5,
        restart_backoff_max_s: float = 30.0,
        shutdown_grace_s: float = 2.0,
        kill_grace_s: float = 2.0,
        stderr_lines: int = 40,
        log_max_bytes: int = DEFAULT_LOG_MAX_BYTES,
        log_lines_per_s: float = DEFAULT_LOG_LINES_PER_S,
        secrets: Iterable[str] = (),
        on_server_event: ServerEventFn | None = None,
    ) -> None:
        """Configure the pool; nothing is started until first use.

        Args:
            servers: Server specs by configured name.
            log_dir: Where each stdio server's stderr is appended, as `<name>.log`;
                `None` keeps only the last `stderr_lines` lines in memory.
            default_timeout_s: Per-call timeout when neither the call nor the
                server sets one.
            max_timeout_s: Hard cap on one call, however much progress it reports.
            connect_timeout_s: Time allowed to start a server and finish the handshake.
            restart_backoff_s: Wait before the second restart in a row (doubling after).
            restart_backoff_max_s: Longest wait between restarts.
            shutdown_grace_s: Time a stdio server gets to exit once its stdin closes.
            kill_grace_s: Time its process group gets between SIGTERM and SIGKILL.
            stderr_lines: Lines of each stdio server's stderr kept in memory.
            log_max_bytes: Size at which a server's log file is rotated (one
                previous file is kept, so its logs take at most twice this).
            log_lines_per_s: Lines a second a server's log file takes once a
                burst is spent; lines beyond are dropped and counted.
            secrets: Values to scrub from everything servers send, besides the
                servers' own `env` and `headers` values (such as the HTTP token).
            on_server_event: Receives, in order, every session opened (`up`), lost
                or never opened (`down`, once until it is up again) and every server
                still down when the pool closes (`closed`). One task of the pool
                hands them over, each bounded in time; the pool waits for the last
                ones when it closes.

        Raises:
            ValueError: A timeout or limit is not positive.
        """
        for label, value in (
            ("default_timeout_s", default_timeout_s),
            ("max_timeout_s", max_timeout_s),
            ("connect_timeout_s", connect_timeout_s),
        ):
            if not value > 0:
                raise ValueError(f"{label} must be positive, got {value!r}")
        if max_timeout_s < default_timeout_s:
            raise ValueError(
                f"max_timeout_s ({max_timeout_s}) must be at least "
                f"default_timeout_s ({default_timeout_s})"
            )
        self.default_timeout_s = default_timeout_s
        self.max_timeout_s = max_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.restart_backoff_s = restart_backoff_s
        self.restart_backoff_max_s = restart_backoff_max_s
        self.shutdown_grace_s = shutdown_grace_s
        self.kill_grace_s = kill_grace_s
        self.scrub = Scrubber.for_servers(servers.values(), extra=secrets)
        """Replaces configured secrets in everything the servers send."""
        self._servers: dict[str, _Server] = {}
        for name, spec in servers.items():
            stderr = None
            if isinstance(spec, StdioServerSpec):
                path = log_dir / f"{_safe_name(name)}.log" if log_dir is not None else None
                stderr = StderrLog(
                    path,
                    max_lines=stderr_lines,
                    max_bytes=log_max_bytes,
                    lines_per_s=log_lines_per_s,
                    scrubber=self.scrub,
                )
            self._servers[name] = _Server(self, name, spec, stderr)
        self._tg: anyio.abc.TaskGroup | None = None
        self._on_server_event = on_server_event
        self._events: MemoryObjectSendStream[ServerEvent] | None = None
        self._closing = False
        self.owner = uuid.uuid4().hex[:16]
        """This pool's id in the `ServerEvent`s it reports."""
        self._catalog: Catalog | None = None
        self._catalog_key: tuple[tuple[str, int], ...] = ()

    # ----------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Pool:
        if self._tg is not None:
            raise InternalError("the pool is already open")
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        if self._on_server_event is not None:
            send, receive = anyio.create_memory_object_stream[ServerEvent](math.inf)
            self._events = send
            tg.start_soon(self._hand_over_events, receive, self._on_server_event)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        tg = self._tg
        assert tg is not None, "__aexit__ without __aenter__"
        self._closing = True
        for srv in self._servers.values():
            if srv.down:
                self.report(srv, ServerEventKind.CLOSED)
        if self._events is not None:
            self._events.close()  # the hand-over task ends once it has sent the rest
        for srv in self._servers.values():
            if srv.conn is not None:
                srv.conn.close()  # ends gracefully: the transport ends the process group
            if srv.opening is not None:
                srv.opening.error = srv.error(ErrorKind.TOOL_UNAVAILABLE, "the pool is closing")
                srv.opening.scope.cancel()
        try:
            if isinstance(exc, anyio.get_cancelled_exc_class()):
                return await tg.__aexit__(exc_type, exc, tb)
            # Our tasks never fail; let the body's own exception propagate unwrapped
            # instead of inside an exception group.
            await tg.__aexit__(None, None, None)
            return None
        finally:
            self._tg = None
            for srv in self._servers.values():
                if srv.stderr is not None:
                    srv.stderr.close()

    def spawn_connection(self, srv: _Server, opening: _Opening) -> None:
        """Start the task that opens and then serves one session of `srv`."""
        if self._tg is None:
            opening.error = srv.error(
                ErrorKind.TOOL_UNAVAILABLE, "the pool is not open (use `async with Pool(...)`)"
            )
            srv.opening = None
            opening.done.set()
            return
        self._tg.start_soon(self._serve, srv, opening, name=f"mcp session {srv.name}")

    async def _serve(self, srv: _Server, opening: _Opening) -> None:
        """Open a session, publish it, keep it until it ends, then clean up."""
        conn = _Connection(srv)
        note = HttpNote()
        HTTP_NOTE.set(note)  # this task's own requests: the handshake and listings
        transport = WatchedTransport(
            _transport(self, srv, conn), lambda: conn.mark_dead("the server closed the connection")
        )
        client = Client(
            transport,
            cache=None,
            client_info=mcp_types.Implementation(name="taskorch", version=_VERSION),
            message_handler=conn.on_message,
        )
        started = False
        try:
            with opening.scope as scope:
                scope.deadline = anyio.current_time() + self.connect_timeout_s
                async with client:
                    conn.client = client
                    conn.protocol_version = client.protocol_version
                    async with anyio.create_task_group() as tg:
                        # Subscribe to tool changes before listing the tools and
                        # publishing the session: a change made in between (by a
                        # first call, say) would otherwise never be heard of.
                        await tg.start(self._watch_tools, srv, conn)
                        await srv.refresh_tools(conn)
                        scope.deadline = math.inf
                        started = True
                        srv.conn = conn
                        srv.starts += 1
                        self.report(srv, ServerEventKind.UP, restart=srv.starts > 1)
                        opening.conn = conn
                        srv.opening = None
                        opening.done.set()
                        if srv.starts > 1:
                            logger.info("downstream server %r restarted", srv.name)
                        await conn.ended.wait()
                        tg.cancel_scope.cancel()
            if not started and opening.error is None:
                opening.error = srv.error(
                    ErrorKind.TIMEOUT,
                    _with_stderr(
                        "the server did not finish the MCP handshake "
                        f"within {self.connect_timeout_s:g} s",
                        srv.stderr_tail(),
                    ),
                )
        except Exception as exc:
            if started:
                logger.warning(
                    "session to %r ended with an error: %s", srv.name, self.scrub.text(repr(exc))
                )
            elif opening.error is None:
                await conn.settle()
                opening.error = self._connect_error(srv, conn, exc, note)
        finally:
            conn.closing = conn.closing or not started
            conn.mark_dead(conn.reason or "the session ended")
            if started and not conn.closing:
                srv.died(conn)
            if not started:
                if opening.error is None:
                    opening.error = srv.error(
                        ErrorKind.TOOL_UNAVAILABLE, "the connection attempt was cancelled"
                    )
                srv.failed(opening.error)
                srv.opening = None
                opening.done.set()
                self.report(srv, ServerEventKind.DOWN, reason=opening.error.message)
        # reached after a cancellation too: anyio re-raises it at the next checkpoint

    def report(
        self,
        srv: _Server,
        kind: ServerEventKind,
        *,
        restart: bool = False,
        reason: str | None = None,
    ) -> None:
        """Queue a change in `srv`'s availability for `on_server_event`, at once, in order.

        A server already down is not reported down again (failed restarts in a row
        are one stretch of down time), and nothing is reported down while the pool
        closes (that is not the server's doing).
        """
        if kind is ServerEventKind.DOWN:
            if srv.down or self._closing:
                return
            srv.down = True
        else:
            srv.down = False
        events = self._events
        if events is None:
            return
        if reason is not None:
            # The reason only, never the server's stderr; one line, bounded, scrubbed.
            flat = " ".join(self.scrub.text(reason).split(_STDERR_HEADER, 1)[0].split())
            reason = flat[:_EVENT_REASON_CHARS]
        event = ServerEvent(
            owner=self.owner, server=srv.name, kind=kind, restart=restart, reason=reason
        )
        try:
            events.send_nowait(event)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            logger.debug("server event after the pool closed: %s %s", srv.name, kind.value)

    async def _hand_over_events(
        self, receive: MemoryObjectReceiveStream[ServerEvent], sink: ServerEventFn
    ) -> None:
        """Hand queued events to `sink` in order until the pool closes, then the rest."""
        # Shielded: the pool's own closing ends this task (it closes the stream), so
        # that what it saw last (a server down, `closed`) is still handed over.
        with anyio.CancelScope(shield=True), receive:
            async for event in receive:
                with anyio.move_on_after(_EVENT_WRITE_S) as scope:
                    try:
                        await sink(event)
                    except Exception as exc:
                        logger.warning(
                            "could not record that downstream server %r is %s: %s",
                            event.server,
                            event.kind.value,
                            exc,
                        )
                if scope.cancelled_caught:
                    logger.warning(
                        "recording that downstream server %r is %s took over %g s; gave up",
                        event.server,
                        event.kind.value,
                        _EVENT_WRITE_S,
                    )

    def _connect_error(
        self, srv: _Server, conn: _Connection, exc: BaseException, note: HttpNote
    ) -> ToolCallError:
        leaves = leaf_exceptions(exc)
        tail = srv.stderr_tail()
        for leaf in leaves:
            if isinstance(leaf, ToolCallError):
                return srv.error(leaf.kind, _with_stderr(leaf.message, tail))
        if note.message is not None:
            return srv.error(note.kind or ErrorKind.NETWORK, note.message)
        for leaf in leaves:
            if isinstance(leaf, MCPError):
                if leaf.error.code == mcp_types.CONNECTION_CLOSED:
                    if conn.process is not None:
                        message = f"{conn.death()} during startup"
                        return srv.error(ErrorKind.TOOL_UNAVAILABLE, _with_stderr(message, tail))
                    message = "the server closed the connection during the handshake"
                    return srv.error(ErrorKind.NETWORK, message)
                kind = _kind_for_code(leaf.error.code)
                return srv.error(
                    kind, f"the server refused the MCP handshake: {leaf.error.message}"
                )
        first = leaves[0] if leaves else exc
        if isinstance(first, OSError) and conn.process is None:
            return srv.error(ErrorKind.NETWORK, f"cannot connect: {first}")
        return srv.error(
            ErrorKind.TOOL_UNAVAILABLE,
            _with_stderr(f"cannot open a session: {type(first).__name__}: {first}", tail),
        )

    async def _watch_tools(
        self,
        srv: _Server,
        conn: _Connection,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Refresh the server's tools whenever it says they changed.

        Reports started once changes will be heard of (a 2026-07-28 subscription
        acknowledged, or refused; older servers notify without one).
        """
        client = conn.client
        assert client is not None
        async with anyio.create_task_group() as tg:
            tools_cap = client.server_capabilities.tools
            modern = client.protocol_version in MODERN_PROTOCOL_VERSIONS
            if modern and tools_cap is not None and tools_cap.list_changed:
                await tg.start(self._listen_for_tools, srv, conn)
            task_status.started()
            while True:
                await conn.tools_stale.wait()
                conn.tools_stale = anyio.Event()
                try:
                    await srv.refresh_tools(conn)
                except (ToolCallError, RuntimeError, ValidationError) as exc:
                    words = self.scrub.text(str(exc))
                    logger.warning("refreshing the tools of %r failed: %s", srv.name, words)
                else:
                    logger.info("tools of %r changed (%d now)", srv.name, len(srv.tools))

    async def _listen_for_tools(
        self,
        srv: _Server,
        conn: _Connection,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        client = conn.client
        assert client is not None
        acknowledged = False
        try:
            async with client.listen(tools_list_changed=True) as subscription:
                acknowledged = True
                task_status.started()
                async for _event in subscription:
                    conn.tools_stale.set()
        except (MCPError, ToolCallError, RuntimeError, TimeoutError, ValidationError) as exc:
            # Without the subscription the catalog only refreshes on reconnects.
            logger.debug("no tools/list_changed subscription on %r: %s", srv.name, exc)
            if not acknowledged:
                task_status.started()

    # ----------------------------------------------------------------- ToolCaller

    def _lookup(self, server: str) -> _Server:
        srv = self._servers.get(server)
        if srv is None:
            known = ", ".join(sorted(self._servers)) or "none"
            raise _failure_error(
                _Failure.NO_SERVER,
                f"no downstream server named {server!r} is configured (configured: {known})",
                server=server,
            )
        return srv

    async def call(
        self,
        server: str,
        tool: str,
        arguments: dict[str, Any],
        *,
        timeout_s: float | None = None,
        on_progress: ProgressFn | None = None,
    ) -> ToolResult:
        """Call one tool and return its full result.

        Args:
            server: The server's configured name.
            tool: The tool's name on that server.
            arguments: The tool's arguments.
            timeout_s: Idle timeout for this call; else the server's, else the default.
            on_progress: Receives the server's progress reports.

        Returns:
            The result; an `isError` result is returned with `is_error=True`.

        Raises:
            ToolCallError: The call failed; `kind` says why.
        """
        srv = self._lookup(server)
        hidden = srv.filter_reason(tool)
        if hidden is not None:
            raise srv.failure(_Failure.TOOL_HIDDEN, f"the tool is not available: {hidden}", tool)
        idle = (
            timeout_s if timeout_s is not None else (srv.spec.timeout_s or self.default_timeout_s)
        )
        if not idle > 0:
            message = f"timeout_s must be positive, got {idle!r}"
            raise srv.failure(_Failure.BAD_TIMEOUT, message, tool)
        start = anyio.current_time()
        hard = start + self.max_timeout_s
        limiter = srv.limiter
        sending = _Sending()
        try:
            # A free slot and nobody queued: take it without the two scheduling
            # points of `await limiter.acquire()` (the request's own send is a
            # checkpoint). Fairness is kept: `acquire_nowait` refuses while others wait.
            limiter.acquire_nowait()
            held = True
        except anyio.WouldBlock:
            held = False
        try:
            conn = srv.conn
            # With a slot, a live session and a known tool the request goes out at
            # once: arm the idle deadline now rather than rescheduling the timer.
            # Otherwise, until the request goes out (a free slot, an open session),
            # only the hard cap applies: starting a server has its own `connect_timeout_s`.
            armed = held and conn is not None and not conn.dead and tool in srv.tools
            with anyio.CancelScope(deadline=min(start + idle, hard) if armed else hard) as scope:
                if not held:
                    await limiter.acquire()
                    held = True
                return await self._call(
                    srv, tool, arguments, scope, idle, hard, on_progress, sending, armed=armed
                )
        finally:
            if held:
                limiter.release()
        elapsed = anyio.current_time() - start
        if elapsed >= self.max_timeout_s:
            why = f"the call ran for the maximum of {self.max_timeout_s:g} s"
        else:
            why = f"no answer or progress for {idle:g} s"
        if not sending.sent:
            raise srv.failure(
                _Failure.QUEUED_TOO_LONG,
                f"timed out before the request could be sent: {why}",
                tool,
            )
        raise srv.failure(
            _Failure.NO_ANSWER,
            f"timed out: {why}; the server was asked to cancel it "
            "(raise `timeout_s` on the step or the server if it needs longer)",
            tool,
        )

    async def _call(
        self,
        srv: _Server,
        tool: str,
        arguments: dict[str, Any],
        scope: anyio.CancelScope,
        idle: float,
        hard: float,
        on_progress: ProgressFn | None,
        sending: _Sending,
        *,
        armed: bool,
    ) -> ToolResult:
        async def report(progress: float, total: float | None, message: str | None) -> None:
            # Progress is a sign of life: the idle deadline starts again.
            scope.deadline = min(anyio.current_time() + idle, hard)
            if on_progress is not None:
                await on_progress(progress, total, message and self.scrub.text(message))

        for attempt in (1, 2):
            # A resend follows a refusal, not a crash: no backoff for it.
            conn = await self._session_for(srv, tool, force=attempt > 1)
            client = conn.client
            assert client is not None
            if attempt > 1 or not armed:
                scope.deadline = min(anyio.current_time() + idle, hard)
            note = HttpNote() if srv.is_http else None
            token = HTTP_NOTE.set(note) if note is not None else None
            try:
                sending.sent = True
                raw = await client.call_tool(tool, arguments, progress_callback=report)
            except MCPError as exc:
                err, resend = await self._failure(srv, conn, tool, exc, note)
                if resend and attempt == 1:
                    sending.sent = False  # refused before it ran: sent again below
                    continue
                raise err from None
            except ToolCallError as exc:  # raised by our own transports (an SSE POST failed)
                if exc.kind is ErrorKind.NETWORK:
                    conn.mark_dead(exc.message)
                failure = (_http_failure(note) if note is not None else None) or (
                    _Failure.CONNECTION_BROKE
                )
                raise srv.failure(failure, exc.message, tool) from None
            except (RuntimeError, ValidationError) as exc:
                message = f"the server's answer is not valid: {exc}"
                raise srv.failure(_Failure.INVALID_ANSWER, message, tool) from None
            finally:
                if token is not None:
                    HTTP_NOTE.reset(token)
            srv.succeeded()
            disguised = _disguised_protocol_error(raw)
            if disguised is not None:
                raise srv.failure(*disguised, tool)
            return _to_result(raw, self.scrub)
        raise InternalError("unreachable: the call loop ends by returning or raising")

    async def _session_for(self, srv: _Server, tool: str, *, force: bool) -> _Connection:
        """The session to send a call of `tool` on; when this fails, nothing was sent."""
        try:
            conn = await srv.connection(force=force)
            if tool not in srv.tools:
                await srv.refresh_tools(conn)  # it may have appeared since the last listing
        except ToolCallError as exc:
            raise srv.failure(_Failure.NOT_SENT, exc.message, tool, exc.kind) from None
        if tool not in srv.tools:
            raise srv.failure(_Failure.UNKNOWN_TOOL, srv.unknown_tool(tool), tool)
        return conn

    async def _failure(
        self, srv: _Server, conn: _Connection, tool: str, exc: MCPError, note: HttpNote | None
    ) -> tuple[ToolCallError, bool]:
        """Classify a failed call; the flag says the request can safely be sent again."""
        code, words = exc.error.code, exc.error.message
        if note is not None and note.message is not None:
            # MCP before 2026-07-28: a 404 for a request carrying our session id
            # means the server forgot the session (it restarted, or expired it).
            legacy = conn.protocol_version not in MODERN_PROTOCOL_VERSIONS
            if words == _SESSION_GONE or (legacy and note.status == 404):
                # Reconnect, and resend: the request was refused, not run.
                conn.mark_dead(note.message)
                gone = _Failure.CONNECTION_BROKE if note.delivered else _Failure.SESSION_FORGOTTEN
                return srv.failure(gone, note.message, tool), not note.delivered
            failure = _http_failure(note)
            if failure is not None:
                if note.kind is ErrorKind.NETWORK:
                    conn.mark_dead(note.message)  # the next use reconnects
                return srv.failure(failure, note.message, tool), failure is _Failure.UNREACHABLE
            if words == _SDK_HTTP_FALLBACK:
                # An error status without a JSON-RPC body: a gateway in trouble, or the server.
                status = note.status or 0
                if status in (502, 503, 504):
                    failure = _Failure.GATEWAY_ERROR
                elif status >= 500:
                    failure = _Failure.SERVER_ERROR
                else:
                    failure = _Failure.HTTP_REFUSED
                return srv.failure(failure, note.message, tool), False
            # Otherwise the body was a JSON-RPC error: classify it like any other.
        if code == mcp_types.CONNECTION_CLOSED:
            if conn.closing:
                message = "the pool was closed while the call was in flight"
                return srv.failure(_Failure.POOL_CLOSED, message, tool), False
            await conn.settle()
            conn.mark_dead(words)
            if conn.process is not None:
                message = f"{conn.death()} while the call was in flight"
                message = _with_stderr(message, srv.stderr_tail())
                return srv.failure(_Failure.SERVER_EXITED, message, tool), False
            message = f"the connection was lost: {conn.death()}"
            return srv.failure(_Failure.CONNECTION_LOST, message, tool), False
        return srv.failure(_CODE_FAILURES.get(code, _Failure.TOOL_FAILED), words, tool), False

    async def catalog(self) -> Catalog:
        """The tools of every reachable server; opens servers as needed, concurrently.

        A server that cannot be reached is left out (see `health()` for why).
        """
        async with anyio.create_task_group() as tg:
            for srv in self._servers.values():
                if not srv.up:
                    tg.start_soon(self._try_open, srv)
        return self._current_catalog()

    async def _try_open(self, srv: _Server) -> None:
        try:
            await srv.connection()
        except ToolCallError as exc:
            logger.info("left out of the catalog: %s", exc)

    def _current_catalog(self) -> Catalog:
        key = tuple((srv.name, srv.tools_version) for srv in self._servers.values() if srv.up)
        if self._catalog is None or key != self._catalog_key:
            tools = [
                info for srv in self._servers.values() if srv.up for info in srv.tools.values()
            ]
            self._catalog = Catalog(tools)
            self._catalog_key = key
        return self._catalog

    # ----------------------------------------------------------------- health

    async def check(self) -> list[ServerHealth]:
        """Connect to every server now (ignoring restart backoff) and report each.

        The latency is the round trip of a `tools/list`, which also refreshes the catalog.
        """
        async with anyio.create_task_group() as tg:
            for srv in self._servers.values():
                tg.start_soon(self._check_one, srv)
        return self.health()

    async def _check_one(self, srv: _Server) -> None:
        try:
            conn = await srv.connection(force=True)
            started = anyio.current_time()
            with anyio.fail_after(self.connect_timeout_s):
                await srv.refresh_tools(conn)
            srv.latency_ms = (anyio.current_time() - started) * 1000
        except ToolCallError as exc:
            logger.info("check: %s", exc)
        except TimeoutError:
            message = f"tools/list got no answer within {self.connect_timeout_s:g} s"
            srv.failed(srv.error(ErrorKind.TIMEOUT, message))

    def health(self) -> list[ServerHealth]:
        """Every server's current state, in configuration order; no I/O."""
        return [srv.health() for srv in self._servers.values()]

    @property
    def servers(self) -> list[str]:
        """The configured server names, in configuration order."""
        return list(self._servers)


def _kind_for_code(code: int) -> ErrorKind:
    """The kind of a JSON-RPC error a server answered a request with."""
    kind, _ = _FAILURES[_CODE_FAILURES.get(code, _Failure.TOOL_FAILED)]
    assert kind is not None
    return kind


_STATUS_STYLE = {"up": "green", "down": "bold red", "starting": "yellow", "not_started": "dim"}


def render_health_table(rows: Sequence[ServerHealth]) -> Table:
    """A table for `taskorch config check`: one row per server, and why a server is down."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title="Downstream servers", show_lines=False)
    table.add_column("server", style="bold")
    table.add_column("transport")
    table.add_column("status")
    table.add_column("tools", justify="right")
    table.add_column("protocol")
    table.add_column("latency", justify="right")
    table.add_column("details", overflow="fold")
    for row in rows:
        details = Text()
        if row.error:
            details.append(row.error, style="red")
        for line in row.stderr_tail[-_STDERR_IN_MESSAGES:]:
            if line in (row.error or ""):
                continue  # already quoted in the error
            details.append(("\n" if details else "") + f"stderr: {line}", style="dim")
        table.add_row(
            row.name,
            row.transport,
            Text(row.status.replace("_", " "), style=_STATUS_STYLE.get(row.status, "")),
            "-" if row.tool_count is None else str(row.tool_count),
            row.protocol_version or "-",
            "-" if row.latency_ms is None else f"{row.latency_ms:.0f} ms",
            details,
        )
    return table
