"""`Pool`: supervised sessions to every downstream server, and the calls made on them.

`Pool` is the `ToolCaller` the scheduler calls tools through: each call holds
one of its server's slots, has an idle deadline that progress pushes out (up
to a hard cap), is cancelled downstream when it times out or is cancelled,
and fails with a `ToolCallError` classified by `executor.downstream.classify`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import anyio.abc
import mcp_types
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError

from executor.calls import ProgressFn, ToolResult
from executor.catalog import Catalog
from executor.downstream.classify import (
    Failure,
    code_failure,
    disguised_protocol_error,
    failure_error,
    http_call_failure,
)
from executor.downstream.convert import to_result
from executor.downstream.events import ServerEventFn, ServerEvents
from executor.downstream.health import ServerHealth
from executor.downstream.redact import Scrubber
from executor.downstream.specs import DEFAULT_MAX_TIMEOUT_S, DEFAULT_TIMEOUT_S, ServerSpec
from executor.downstream.supervisor import (
    Connection,
    Spawn,
    Supervision,
    Supervisor,
    with_stderr,
)
from executor.downstream.transports.http import HttpNote
from executor.downstream.transports.stderr import (
    DEFAULT_LOG_LINES_PER_S,
    DEFAULT_LOG_MAX_BYTES,
    StderrLog,
)
from executor.errors import Delivery, ErrorKind, InternalError, ToolCallError
from executor.task_client import (
    TaskFollow,
    TaskHooks,
    follow_task,
    following,
    reset_following,
)

__all__ = ["Pool"]

logger = logging.getLogger(__name__)

_SDK_CLOSED = "Connection closed"
"""The SDK's words for the -32000 it makes up when the connection ends under a request."""
_BREAKS_SESSION = frozenset(
    {Failure.SESSION_FORGOTTEN, Failure.CONNECTION_BROKE, Failure.UNREACHABLE}
)
"""HTTP failures after which the session must be opened again."""


@dataclass(slots=True)
class _Sending:
    """Whether a call's request has gone out: a timeout after that may have let it run."""

    sent: bool = False


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "server"


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
        oauth_dir: Path | None = None,
        allow_sampling: bool = False,
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
            oauth_dir: Where the OAuth tokens of servers with `auth` are; by default
                `executor.oauth.default_token_dir()`.
            allow_sampling: Declare sampling to the servers and pass their requests on
                to the host following the run (see `executor.asking`); refused otherwise.

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
        self.scrub = Scrubber.for_servers(servers.values(), extra=secrets)
        """Replaces configured secrets in everything the servers send."""
        self._events = ServerEvents(servers, on_server_event, self.scrub)
        supervision = Supervision(
            connect_timeout_s=connect_timeout_s,
            restart_backoff_s=restart_backoff_s,
            restart_backoff_max_s=restart_backoff_max_s,
            shutdown_grace_s=shutdown_grace_s,
            kill_grace_s=kill_grace_s,
            scrub=self.scrub,
            events=self._events,
            oauth_dir=oauth_dir,
            allow_sampling=allow_sampling,
        )
        spawn: Spawn = self._spawn
        self._servers: dict[str, Supervisor] = {}
        for name, spec in servers.items():
            # Only a server run as a child writes to it; the file is made on the first line.
            stderr = StderrLog(
                log_dir / f"{_safe_name(name)}.log" if log_dir is not None else None,
                max_lines=stderr_lines,
                max_bytes=log_max_bytes,
                lines_per_s=log_lines_per_s,
                scrubber=self.scrub,
            )
            self._servers[name] = Supervisor(name, spec, stderr, supervision, spawn)
        self._tg: anyio.abc.TaskGroup | None = None
        self._catalog: Catalog | None = None
        self._catalog_key: tuple[tuple[str, int], ...] = ()

    # ----------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Pool:
        if self._tg is not None:
            raise InternalError("the pool is already open")
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        self._events.start(tg)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        tg = self._tg
        assert tg is not None, "__aexit__ without __aenter__"
        self._events.close()
        for srv in self._servers.values():
            srv.close()
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
                srv.stderr.close()

    def _spawn(self, serve: Callable[[], Coroutine[Any, Any, None]], name: str) -> bool:
        if self._tg is None:
            return False
        self._tg.start_soon(serve, name=name)
        return True

    # ----------------------------------------------------------------- ToolCaller

    def _lookup(self, server: str) -> Supervisor:
        srv = self._servers.get(server)
        if srv is None:
            known = ", ".join(sorted(self._servers)) or "none"
            raise failure_error(
                Failure.NO_SERVER,
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
        task: TaskHooks | None = None,
    ) -> ToolResult:
        """Call one tool and return its full result.

        Args:
            server: The server's configured name.
            tool: The tool's name on that server.
            arguments: The tool's arguments.
            timeout_s: Idle timeout for this call; else the server's, else the default.
            on_progress: Receives the server's progress reports.
            task: Told when the call becomes a downstream task (see `executor.task_client`);
                when it names a task to resume, that task is followed instead of a new call.

        Returns:
            The result; an `isError` result is returned with `is_error=True`.

        Raises:
            ToolCallError: The call failed; `kind` says why.
        """
        srv = self._lookup(server)
        hidden = srv.filter_reason(tool)
        if hidden is not None:
            raise srv.failure(Failure.TOOL_HIDDEN, f"the tool is not available: {hidden}", tool)
        idle = (
            timeout_s if timeout_s is not None else (srv.spec.timeout_s or self.default_timeout_s)
        )
        if not idle > 0:
            message = f"timeout_s must be positive, got {idle!r}"
            raise srv.failure(Failure.BAD_TIMEOUT, message, tool)
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
                    srv, tool, arguments, scope, idle, hard, on_progress, sending, task, armed=armed
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
                Failure.QUEUED_TOO_LONG,
                f"timed out before the request could be sent: {why}",
                tool,
            )
        raise srv.failure(
            Failure.NO_ANSWER,
            f"timed out: {why}; the server was asked to cancel it "
            "(raise `timeout_s` on the step or the server if it needs longer)",
            tool,
        )

    async def _call(
        self,
        srv: Supervisor,
        tool: str,
        arguments: dict[str, Any],
        scope: anyio.CancelScope,
        idle: float,
        hard: float,
        on_progress: ProgressFn | None,
        sending: _Sending,
        task: TaskHooks | None,
        *,
        armed: bool,
    ) -> ToolResult:
        def alive() -> None:
            scope.deadline = min(anyio.current_time() + idle, hard)

        def pause() -> None:
            scope.deadline = hard

        async def report(progress: float, total: float | None, message: str | None) -> None:
            # Progress is a sign of life: the idle deadline starts again.
            alive()
            if on_progress is not None:
                await on_progress(progress, total, message and self.scrub.text(message))

        follow = TaskFollow(task, alive, report, lambda: scope.cancel_called, pause, tool, srv.name)
        resume = task.resuming() if task is not None else None

        for attempt in (1, 2):
            # A resend follows a refusal, not a crash: no backoff for it.
            conn = await self._session_for(srv, tool, force=attempt > 1)
            client = conn.client
            assert client is not None
            if attempt > 1 or not armed:
                scope.deadline = min(anyio.current_time() + idle, hard)
            following_token = following(follow)
            conn.follows.add(follow)
            try:
                sending.sent = True
                if resume is not None:
                    raw = await follow_task(client.session, resume, follow, 0.0)
                else:
                    raw = await client.call_tool(tool, arguments, progress_callback=report)
            except MCPError as exc:
                err, resend = await self._failure(srv, conn, tool, exc)
                if resend and attempt == 1:
                    sending.sent = False  # refused before it ran: sent again below
                    continue
                raise err from None
            except ToolCallError as exc:  # raised by our own transports (an SSE POST failed)
                if exc.kind is ErrorKind.NETWORK and exc.delivery is Delivery.NOT_DELIVERED:
                    # The session was forgotten or the server is gone: the next use reconnects.
                    conn.mark_dead(exc.message)
                raise srv.attribute(exc, tool) from None
            except (RuntimeError, ValidationError) as exc:
                message = f"the server's answer is not valid: {exc}"
                raise srv.failure(Failure.INVALID_ANSWER, message, tool) from None
            finally:
                conn.follows.discard(follow)
                reset_following(following_token)
            srv.succeeded()
            disguised = disguised_protocol_error(raw)
            if disguised is not None:
                raise srv.failure(*disguised, tool)
            return to_result(raw, self.scrub)
        raise InternalError("unreachable: the call loop ends by returning or raising")

    async def _session_for(self, srv: Supervisor, tool: str, *, force: bool) -> Connection:
        """The session to send a call of `tool` on; when this fails, nothing was sent."""
        try:
            conn = await srv.connection(force=force)
            if tool not in srv.tools:
                await srv.refresh_tools(conn)  # it may have appeared since the last listing
        except ToolCallError as exc:
            raise srv.failure(Failure.NOT_SENT, exc.message, tool, exc.kind) from None
        if tool not in srv.tools:
            raise srv.failure(Failure.UNKNOWN_TOOL, srv.unknown_tool(tool), tool)
        return conn

    async def _failure(
        self, srv: Supervisor, conn: Connection, tool: str, exc: MCPError
    ) -> tuple[ToolCallError, bool]:
        """Classify a failed call; the flag says the request can safely be sent again."""
        code, words = exc.error.code, exc.error.message
        note = exc.error.data
        if isinstance(note, HttpNote):  # what the HTTP layer saw of this very request
            legacy = conn.protocol_version not in MODERN_PROTOCOL_VERSIONS
            failure = http_call_failure(note, words, legacy=legacy)
            if failure is not None:
                if failure in _BREAKS_SESSION:
                    conn.mark_dead(note.message)  # the next use reconnects
                err = srv.failure(failure, note.message, tool)
                # Refused before it ran: reconnect and send it again.
                resend = failure in _BREAKS_SESSION and err.delivery is Delivery.NOT_DELIVERED
                return err, resend
        if code == mcp_types.CONNECTION_CLOSED:
            if conn.closing:
                message = "the pool was closed while the call was in flight"
                return srv.failure(Failure.POOL_CLOSED, message, tool), False
            await conn.settle()
            if conn.process is not None and not conn.dead and words != _SDK_CLOSED:
                # The child lives: it answered -32000 itself, as many servers say
                # "server error". (The SDK's own -32000 follows the end of the
                # stream, or a failed write, in its own words.)
                return srv.failure(Failure.TOOL_FAILED, words, tool), False
            conn.mark_dead(words)
            if conn.process is not None:
                message = with_stderr(
                    f"{conn.death()} while the call was in flight", srv.stderr_tail()
                )
                return srv.failure(Failure.SERVER_EXITED, message, tool), False
            message = f"the connection was lost: {conn.death()}"
            return srv.failure(Failure.CONNECTION_LOST, message, tool), False
        return srv.failure(code_failure(code), words, tool), False

    # ----------------------------------------------------------------- catalog

    async def catalog(self) -> Catalog:
        """The tools of every reachable server; opens servers as needed, concurrently.

        A server that cannot be reached is left out (see `health()` for why).
        """
        async with anyio.create_task_group() as tg:
            for srv in self._servers.values():
                if not srv.up:
                    tg.start_soon(self._try_open, srv)
        return self._current_catalog()

    async def _try_open(self, srv: Supervisor) -> None:
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

    async def _check_one(self, srv: Supervisor) -> None:
        try:
            conn = await srv.connection(force=True)
        except ToolCallError as exc:
            logger.info("check: %s", exc)
            return
        started = anyio.current_time()
        try:
            with anyio.fail_after(self.connect_timeout_s):
                await srv.refresh_tools(conn)
        except ToolCallError as exc:
            logger.info("check: %s", exc)
        except TimeoutError:
            # A session that cannot list its tools is of no use: the next call restarts it.
            message = f"tools/list got no answer within {self.connect_timeout_s:g} s"
            conn.mark_dead(message, Failure.LISTING_TIMEOUT)
        else:
            srv.latency_ms = (anyio.current_time() - started) * 1000

    def health(self) -> list[ServerHealth]:
        """Every server's current state, in configuration order; no I/O."""
        return [srv.health() for srv in self._servers.values()]

    @property
    def servers(self) -> list[str]:
        """The configured server names, in configuration order."""
        return list(self._servers)
