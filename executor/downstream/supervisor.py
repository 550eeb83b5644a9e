"""Supervision of one downstream server: its session, its tool listing, its restarts.

A `Supervisor` opens the server's session on first use (concurrent first
callers share one opening), notices at once when it dies, and restarts it on
the next use, backing off while it keeps failing; it refreshes the tool
listing whenever the server says it changed.
"""

from __future__ import annotations

import importlib.metadata
import logging
import math
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import mcp_types
from mcp import Client
from mcp.client.session import ClientRequestContext, IncomingMessage
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, ValidationError

from executor._utils import leaf_exceptions
from executor.catalog import ToolInfo
from executor.downstream.classify import Failure, code_failure, failure_error, http_failure
from executor.downstream.convert import tool_info
from executor.downstream.events import ServerEvents
from executor.downstream.health import ServerHealth, ServerStatus
from executor.downstream.redact import Scrubber
from executor.downstream.specs import DEFAULT_MAX_CONCURRENCY, ServerSpec
from executor.downstream.transports.base import WatchedTransport, Wiring
from executor.downstream.transports.http import HttpNote
from executor.downstream.transports.stderr import StderrLog
from executor.downstream.transports.stdio import StdioProcess, describe_exit
from executor.errors import CannotAsk, ErrorKind, ToolCallError
from executor.records import ServerEventKind
from executor.task_client import TaskFollow, TasksClient, current_follow

__all__ = ["Connection", "Supervision", "Supervisor", "with_stderr", "without_stderr"]

logger = logging.getLogger(__name__)

STDERR_IN_MESSAGES = 5
"""Lines of a server's stderr quoted in an error message."""
_LISTING_PAGES_MAX = 100
_TOOL_NAMES_IN_MESSAGES = 20
_EXIT_DETAILS_WAIT_S = 0.1
_STDERR_HEADER = "\nlast stderr lines:\n"

try:
    _VERSION = importlib.metadata.version("taskorch")
except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a checkout
    _VERSION = "0"

Spawn = Callable[[Callable[[], Coroutine[Any, Any, None]], str], bool]
"""Start a named task in the pool's task group; `False` when the pool is not open."""


def _refusal(server: str, message: str, why: str) -> mcp_types.ErrorData:
    text = f"server {server!r} asked for {message!r}, which was not forwarded: {why}"
    return mcp_types.ErrorData(code=mcp_types.INVALID_REQUEST, message=text)


def with_stderr(message: str, tail: Sequence[str]) -> str:
    """`message`, followed by the server's last stderr lines when there are any."""
    if not tail:
        return message
    lines = "\n".join(f"  {line}" for line in tail[-STDERR_IN_MESSAGES:])
    return f"{message}{_STDERR_HEADER}{lines}"


def without_stderr(message: str) -> str:
    """`message` without the stderr lines `with_stderr` added."""
    return message.split(_STDERR_HEADER, 1)[0]


@dataclass(frozen=True, slots=True)
class Supervision:
    """How every server of a pool is supervised."""

    connect_timeout_s: float
    """Time allowed to start a server and finish the handshake."""
    restart_backoff_s: float
    """Wait before the second restart in a row (doubling after)."""
    restart_backoff_max_s: float
    """Longest wait between restarts."""
    shutdown_grace_s: float
    """Time a stdio server gets to exit once its stdin closes."""
    kill_grace_s: float
    """Time its process group gets between SIGTERM and SIGKILL."""
    scrub: Scrubber
    """Replaces configured secrets in everything the servers send."""
    events: ServerEvents
    """Where each session opened, lost or never opened is reported."""
    oauth_dir: Path | None = None
    """Where the OAuth tokens of servers with `auth` are (`None`: the default place)."""
    allow_sampling: bool = False
    """Declare sampling to the servers and pass their requests on (`executor.asking`)."""


class Connection:
    """One open session to a server, served by one task in the pool's task group."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self.client: Client | None = None
        self.process: StdioProcess | None = None
        """The server's process, for a server run as a child."""
        self.protocol_version: str | None = None
        self.ended = anyio.Event()
        """Set when the serving task should wind down: closed by us, or dead."""
        self.dead = False
        self.closing = False
        self.reason: str | None = None
        self.failure: Failure | None = None
        """Why we gave the session up, when it did not simply end."""
        self.tools_stale = anyio.Event()
        self.follows: set[TaskFollow] = set()
        """The calls in flight on this session (a 2025-era question names none)."""

    async def _forward(self, method: str, params: BaseModel) -> dict[str, Any] | str:
        """Pass a downstream request on to whoever runs the step: its answer, or why not."""
        # An input-required round (2026-07-28) asks inside the call; a 2025-era
        # mid-call request does not say which call asks: only a lone call can be meant.
        follow = current_follow() or (next(iter(self.follows)) if len(self.follows) == 1 else None)
        if follow is None or follow.hooks is None or follow.tool is None:
            return "taskorch cannot tell which of its calls asks, so nobody can answer it"
        request = {
            "method": method,
            "params": params.model_dump(by_alias=True, mode="json", exclude_none=True),
        }
        follow.pause()  # a person answers: no idle timeout meanwhile
        try:
            return await follow.hooks.ask(self.supervisor.name, follow.tool, request)
        except CannotAsk as exc:
            return str(exc)
        finally:
            follow.alive()

    async def forward_question(
        self, context: ClientRequestContext, params: mcp_types.ElicitRequestParams
    ) -> mcp_types.ElicitResult | mcp_types.ErrorData:
        """Pass a downstream tool's question (elicitation) on, or refuse it saying why."""
        name = self.supervisor.name
        if not isinstance(params, mcp_types.ElicitRequestFormParams):
            return _refusal(name, params.message, "taskorch forwards form questions only")
        answer = await self._forward("elicitation/create", params)
        if isinstance(answer, str):
            return _refusal(name, params.message, answer)
        try:
            return mcp_types.ElicitResult.model_validate(answer)
        except ValidationError:
            return _refusal(name, params.message, "the host's answer is not valid")

    async def forward_sampling(
        self, context: ClientRequestContext, params: mcp_types.CreateMessageRequestParams
    ) -> mcp_types.CreateMessageResult | mcp_types.ErrorData:
        """Pass a downstream tool's sampling request on (allowed by the config), or refuse it."""
        name, what = self.supervisor.name, "a model completion (sampling)"
        answer = await self._forward("sampling/createMessage", params)
        if isinstance(answer, str):
            return _refusal(name, what, answer)
        try:
            return mcp_types.CreateMessageResult.model_validate(answer)
        except ValidationError:
            return _refusal(name, what, "the host's answer is not valid")

    def mark_dead(self, reason: str, failure: Failure | None = None) -> None:
        """The session can no longer be used; say why (once), and what failed if we gave it up."""
        if self.dead:
            return
        self.dead = True
        self.reason = reason
        self.failure = failure
        self.ended.set()
        if not self.closing:
            self.supervisor.connection_died(self)

    def close(self) -> None:
        """Ask the serving task to end the session gracefully."""
        self.closing = True
        self.mark_dead("the pool closed the connection")

    def death(self) -> str:
        """Why the session ended, as a clause ("the server process exited with code 3")."""
        if self.process is not None and self.process.returncode is not None:
            return f"the server process {describe_exit(self.process.returncode)}"
        return self.reason or "the connection closed"

    def death_failure(self) -> Failure:
        """What the session's end means, unless we gave it up for a failure of our own.

        A dead child is an unavailable tool; a dropped connection is the network.
        """
        if self.failure is not None:
            return self.failure
        return Failure.SERVER_EXITED if self.process is not None else Failure.CONNECTION_LOST

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
        """The server's process is gone."""
        self.mark_dead(f"the server process {describe_exit(returncode)}")


class _Opening:
    """A connection attempt that concurrent callers wait on together."""

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.conn: Connection | None = None
        self.error: ToolCallError | None = None
        self.scope = anyio.CancelScope()
        """Bounds the attempt (`connect_timeout_s`); the pool cancels it when closing."""


class Supervisor:
    """Everything the pool knows about one configured server, and its session's life."""

    def __init__(
        self,
        name: str,
        spec: ServerSpec,
        stderr: StderrLog,
        supervision: Supervision,
        spawn: Spawn,
    ) -> None:
        """Supervise the server `name`; nothing starts until first use.

        Args:
            name: The server's configured name.
            spec: How to reach it.
            stderr: Where its stderr goes (a stdio server's).
            supervision: Timeouts, backoff and the scrubber.
            spawn: Starts the task that serves a session.
        """
        self.name = name
        self.spec = spec
        self.stderr = stderr
        self.supervision = supervision
        self._spawn = spawn
        self.tool_filter = spec.tool_filter
        self.limiter = anyio.CapacityLimiter(spec.max_concurrency or DEFAULT_MAX_CONCURRENCY)
        self.conn: Connection | None = None
        self.opening: _Opening | None = None
        self.tools: dict[str, ToolInfo] = {}
        self.tools_version = 0
        self.failures = 0
        self.retry_at = 0.0
        self.last_error: ToolCallError | None = None
        self.attempts = 0
        self.starts = 0
        self.latency_ms: float | None = None

    @property
    def up(self) -> bool:
        """Whether the session is open."""
        return self.conn is not None and not self.conn.dead

    @property
    def status(self) -> ServerStatus:
        """The server's state, for health reports."""
        if self.up:
            return "up"
        if self.opening is not None:
            return "starting"
        return "not_started" if self.attempts == 0 else "down"

    def stderr_tail(self) -> tuple[str, ...]:
        """The server's last stderr lines."""
        return self.stderr.tail()

    def failure(
        self, failure: Failure, message: str, tool: str = "", cause: ErrorKind | None = None
    ) -> ToolCallError:
        """The error for `failure` of this server (see `classify.FAILURES`), its words scrubbed."""
        # Every failure the pool reports is built here: the one place to scrub its words.
        message = self.supervision.scrub.text(message)
        return failure_error(failure, message, server=self.name, tool=tool, cause=cause)

    def attribute(
        self, exc: ToolCallError, tool: str = "", message: str | None = None
    ) -> ToolCallError:
        """A transport's error (classified where it was raised), as this server's."""
        words = self.supervision.scrub.text(exc.message if message is None else message)
        return ToolCallError(exc.kind, words, server=self.name, tool=tool, delivery=exc.delivery)

    # ----------------------------------------------------------------- tools

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
        """Take a new listing, keeping the tools the config allows."""
        scrub = self.supervision.scrub
        self.tools = {
            tool.name: tool_info(self.name, tool, scrub)
            for tool in tools
            if self.filter_reason(tool.name) is None
        }
        self.tools_version += 1

    async def refresh_tools(self, conn: Connection) -> None:
        """List the server's tools again (every page)."""
        assert conn.client is not None
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
                raise self.failure(Failure.LISTING_FAILED, message) from exc
            listed = []  # a server without the tools capability: nothing to call
        self.set_tools(listed)

    # ----------------------------------------------------------------- supervision

    def backoff(self) -> float:
        """Seconds to wait before the next restart, after `failures` failures in a row."""
        if self.failures <= 1:
            return 0.0
        delay = self.supervision.restart_backoff_s * 2 ** (self.failures - 2)
        return float(min(delay, self.supervision.restart_backoff_max_s))

    def failed(self, err: ToolCallError) -> ToolCallError:
        """Count a failed start or a crash; returns the error as reported from now on."""
        self.failures += 1
        self.retry_at = anyio.current_time() + self.backoff()
        self.last_error = err
        return err

    def succeeded(self) -> None:
        """A call went through: the next failure restarts at once."""
        self.failures = 0
        self.retry_at = 0.0

    def connection_died(self, conn: Connection) -> None:
        """Count the death of the published session."""
        if conn is not self.conn:
            return
        self.failed(self.failure(conn.death_failure(), conn.death()))
        self.supervision.events.report(self.name, ServerEventKind.DOWN, reason=conn.death())

    def _died(self, conn: Connection) -> None:
        """Report a session that ended under us, once its exit details are known."""
        message = with_stderr(conn.death(), self.stderr_tail())
        error = self.failure(conn.death_failure(), message)
        logger.warning("downstream server %r: %s", self.name, error.message)
        if conn is self.conn and self.last_error is not None:
            self.last_error = error

    def _down_error(self, wait: float) -> ToolCallError:
        last = self.last_error
        cause = without_stderr(last.message) if last is not None else "it failed"
        times = "time" if self.failures == 1 else "times in a row"
        message = (
            f"the server is down: {cause} (failed {self.failures} {times}; "
            f"next restart attempt in {wait:.1f} s)"
        )
        kind = last.kind if last is not None else None
        return self.failure(Failure.SERVER_DOWN, with_stderr(message, self.stderr_tail()), "", kind)

    async def connection(self, *, force: bool = False) -> Connection:
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
                raise self._down_error(wait)
            opening = self.opening = _Opening()
            self.attempts += 1
            started = self._spawn(lambda: self._serve(opening), f"mcp session {self.name}")
            if not started:
                message = "the pool is not open (use `async with Pool(...)`)"
                opening.error = self.failure(Failure.POOL_NOT_OPEN, message)
                self.opening = None
                opening.done.set()
        await opening.done.wait()
        if opening.error is not None:
            raise opening.error
        assert opening.conn is not None
        return opening.conn

    def close(self) -> None:
        """End the session and any opening (the pool is closing)."""
        if self.conn is not None:
            self.conn.close()  # ends gracefully: the transport ends the process group
        if self.opening is not None:
            self.opening.error = self.failure(Failure.POOL_CLOSING, "the pool is closing")
            self.opening.scope.cancel()

    def health(self) -> ServerHealth:
        """The server's current state; no I/O."""
        conn = self.conn if self.up else None
        error = None
        if not self.up and self.last_error is not None:
            # The tail is reported on its own; keep the error to the reason.
            error = without_stderr(self.last_error.message)
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

    # ----------------------------------------------------------------- the session

    async def _serve(self, opening: _Opening) -> None:
        """Open a session, publish it, keep it until it ends, then clean up."""
        conn = Connection(self)
        settings = self.supervision
        wiring = Wiring(
            stderr=self.stderr,
            on_exit=conn.on_process_exit,
            grace_s=settings.shutdown_grace_s,
            kill_grace_s=settings.kill_grace_s,
            server=self.name,
            oauth_dir=settings.oauth_dir,
        )
        inner = self.spec.transport(wiring)
        if isinstance(inner, StdioProcess):
            conn.process = inner
        transport = WatchedTransport(
            inner, lambda: conn.mark_dead("the server closed the connection")
        )
        client = Client(
            transport,
            cache=None,
            client_info=mcp_types.Implementation(name="taskorch", version=_VERSION),
            message_handler=conn.on_message,
            extensions=[TasksClient()],
            elicitation_callback=conn.forward_question,
            # Not declared unless allowed: a server that asks anyway is refused.
            sampling_callback=conn.forward_sampling if settings.allow_sampling else None,
        )
        started = False
        try:
            with opening.scope as scope:
                scope.deadline = anyio.current_time() + settings.connect_timeout_s
                async with client:
                    conn.client = client
                    conn.protocol_version = client.protocol_version
                    async with anyio.create_task_group() as tg:
                        # Subscribe to tool changes before listing the tools and
                        # publishing the session: a change made in between (by a
                        # first call, say) would otherwise never be heard of.
                        await tg.start(self._watch_tools, conn)
                        await self.refresh_tools(conn)
                        scope.deadline = math.inf
                        started = True
                        self.conn = conn
                        self.starts += 1
                        settings.events.report(
                            self.name, ServerEventKind.UP, restart=self.starts > 1
                        )
                        opening.conn = conn
                        self.opening = None
                        opening.done.set()
                        if self.starts > 1:
                            logger.info("downstream server %r restarted", self.name)
                        await conn.ended.wait()
                        tg.cancel_scope.cancel()
            if not started and opening.error is None:
                message = (
                    "the server did not finish the MCP handshake "
                    f"within {settings.connect_timeout_s:g} s"
                )
                opening.error = self.failure(
                    Failure.HANDSHAKE_TIMEOUT, with_stderr(message, self.stderr_tail())
                )
        except Exception as exc:
            if started:
                logger.warning(
                    "session to %r ended with an error: %s",
                    self.name,
                    settings.scrub.text(repr(exc)),
                )
            elif opening.error is None:
                await conn.settle()
                opening.error = self._connect_error(conn, exc)
        finally:
            conn.closing = conn.closing or not started
            conn.mark_dead(conn.reason or "the session ended")
            if started and not conn.closing:
                self._died(conn)
            if not started:
                if opening.error is None:  # cancelled: only the pool's closing cancels us
                    opening.error = self.failure(Failure.POOL_CLOSING, "the pool is closing")
                self.failed(opening.error)
                self.opening = None
                opening.done.set()
                reason = without_stderr(opening.error.message)
                settings.events.report(self.name, ServerEventKind.DOWN, reason=reason)
        # reached after a cancellation too: anyio re-raises it at the next checkpoint

    def _connect_error(self, conn: Connection, exc: BaseException) -> ToolCallError:
        """What made opening the session fail, classified."""
        leaves = leaf_exceptions(exc)
        tail = self.stderr_tail()
        for leaf in leaves:
            if isinstance(leaf, ToolCallError):  # from our own transports, classified
                return self.attribute(leaf, message=with_stderr(leaf.message, tail))
        for leaf in leaves:
            if isinstance(leaf, MCPError):
                note = leaf.error.data
                if isinstance(note, HttpNote):
                    failure = http_failure(note) or Failure.REFUSED_AT_CONNECT
                    return self.failure(failure, note.message)
        for leaf in leaves:
            if isinstance(leaf, MCPError):
                if leaf.error.code == mcp_types.CONNECTION_CLOSED:
                    if conn.process is not None:
                        message = with_stderr(f"{conn.death()} during startup", tail)
                        return self.failure(Failure.EXITED_AT_START, message)
                    message = "the server closed the connection during the handshake"
                    return self.failure(Failure.CLOSED_AT_HANDSHAKE, message)
                message = f"the server refused the MCP handshake: {leaf.error.message}"
                return self.failure(code_failure(leaf.error.code), message)
        first = leaves[0] if leaves else exc
        message = f"cannot open a session: {type(first).__name__}: {first}"
        return self.failure(Failure.CANNOT_OPEN, with_stderr(message, tail))

    async def _watch_tools(
        self,
        conn: Connection,
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
                await tg.start(self._listen_for_tools, conn)
            task_status.started()
            while True:
                await conn.tools_stale.wait()
                conn.tools_stale = anyio.Event()
                try:
                    await self.refresh_tools(conn)
                except (ToolCallError, RuntimeError, ValidationError) as exc:
                    words = self.supervision.scrub.text(str(exc))
                    logger.warning("refreshing the tools of %r failed: %s", self.name, words)
                else:
                    logger.info("tools of %r changed (%d now)", self.name, len(self.tools))

    async def _listen_for_tools(
        self,
        conn: Connection,
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
            logger.debug("no tools/list_changed subscription on %r: %s", self.name, exc)
            if not acknowledged:
                task_status.started()
