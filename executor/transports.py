"""Client transports to downstream servers: stdio, streamable HTTP and SSE.

Every transport here is an async context manager yielding the SDK's stream pair
(`mcp.client.Transport`), so `mcp.Client` drives the protocol on top of it. They
exist, rather than the SDK's own, for what a supervisor needs:

- `StdioProcess` runs the server in its own process group (a new session), so
  closing it ends the whole group — SIGTERM, then SIGKILL after a grace period —
  leaving no orphan and no zombie. Its stderr goes to a `StderrLog` (a ring of
  recent lines, and a per-server log file; both scrubbed of secrets, both
  bounded however much the server writes), never to our stdout. It notices the
  process's death at once, so calls in flight fail instead of waiting for a
  timeout.
- HTTP failures keep their meaning. The SDK turns a refused connection or a 401
  into a bare "Server returned an error response"; `GuardedHttpTransport` notes
  what really happened (status, the server's own words, whether the request
  reached the server) in the `HttpNote` of the calling task's context, which the
  pool reads to classify the failure.
- `sse_transport` posts each message from the sending task, so a POST that fails
  fails that one request at once, instead of silently stalling the connection.
- `WatchedTransport` wraps any transport and reports when its read side ends
  (the server closed the connection or died).
"""

from __future__ import annotations

import codecs
import contextlib
import logging
import math
import os
import re
import signal
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urljoin, urlsplit

import anyio
import anyio.abc
import httpx2
import mcp_types
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.client._transport import TransportStreams
from mcp.client.stdio import get_default_environment
from mcp.shared._stream_protocols import ReadStream
from mcp.shared.message import SessionMessage
from pydantic import ValidationError

from executor.errors import ErrorKind, ToolCallError
from executor.logguard import LineBudget
from executor.procs import end_process_tree, live_group_members, open_process_tree
from executor.redact import Scrubber
from executor.specs import SseServerSpec, StdioServerSpec

__all__ = [
    "DEFAULT_LOG_BURST",
    "DEFAULT_LOG_LINES_PER_S",
    "DEFAULT_LOG_MAX_BYTES",
    "HTTP_NOTE",
    "MAX_MESSAGE_BYTES",
    "GuardedHttpTransport",
    "HttpNote",
    "StderrLog",
    "StdioProcess",
    "WatchedTransport",
    "describe_exit",
    "live_group_members",
    "make_http_client",
    "redact_url",
    "sse_transport",
]

logger = logging.getLogger(__name__)

_READ_CHUNK = 65536
_BIG_LINE = 1024 * 1024
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
"""Largest JSON-RPC message accepted from a server: tool results carry files, often twice
(as text and as structured content), and results are stored, not answered whole."""
_ERROR_BODY_LIMIT = 16384
_EXIT_SETTLE_S = 0.05
"""How long to let stdout and stderr drain once the process is gone, so the last
response and the last stderr lines are not lost; short, as calls wait on it."""
_REAP_TIMEOUT_S = 5.0
DEFAULT_LOG_MAX_BYTES = 5 * 1024 * 1024
"""Size at which a server's log file is rotated (it keeps one previous file)."""
DEFAULT_LOG_LINES_PER_S = 200.0
"""Lines a second a server's log file takes once its burst is spent."""
DEFAULT_LOG_BURST = 2000
"""Lines a server's log file takes at once."""
_LOG_MIN_BYTES = 64 * 1024
_LOG_LINE_CHARS = 4096
_TAIL_LINE_CHARS = 1000
_FLOOD_WARNING_EVERY_S = 60.0
_DROP_REPORT_EVERY_S = 1.0
_HTTP_CONNECT_TIMEOUT_S = 10.0
_STREAM_ENDED = (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError)


def _parse_message(data: str | bytes) -> mcp_types.JSONRPCMessage:
    """Parse one JSON-RPC message (raises `ValueError` or `ValidationError`)."""
    return mcp_types.jsonrpc_message_adapter.validate_json(data, by_name=False)


# --------------------------------------------------------------------------- stderr


class StderrLog:
    """Where a stdio server's stderr goes: a ring of its last lines and a log file.

    The ring outlives restarts, so a server that keeps failing can be reported
    with its last words. Both hold text only after the `scrubber` has replaced
    the configured secrets in it, and both are bounded whatever the server
    writes:

    - lines are cut (at 4096 characters in the file, 1000 in the ring);
    - the file takes at most `burst` lines at once, then `lines_per_s` a second;
      lines beyond are dropped and counted, and the file says how many were
      (a `--- taskorch: dropped N lines ... ---` line) when it takes lines again
      (once a second at most), when the server exits, and when the log is
      closed; taskorch's own log warns once a minute at most while a server floods;
    - the file is rotated while it is written: past `max_bytes` it becomes
      `<name>.log.1` (replacing the previous one) and a new file starts, so a
      server's logs never take more than twice `max_bytes`.

    Writes are synchronous: a local append is cheaper than a thread hop, and the
    budget keeps them few.
    """

    def __init__(
        self,
        path: Path | None,
        *,
        max_lines: int = 40,
        max_bytes: int = DEFAULT_LOG_MAX_BYTES,
        lines_per_s: float = DEFAULT_LOG_LINES_PER_S,
        burst: int = DEFAULT_LOG_BURST,
        scrubber: Scrubber | None = None,
    ) -> None:
        """Create the log.

        Args:
            path: The log file (appended to; created with mode 0600), or `None`.
            max_lines: How many recent lines the ring keeps.
            max_bytes: Size at which the file is rotated (at least 64 KiB).
            lines_per_s: Lines a second the file takes once `burst` is spent.
            burst: Lines the file takes at once.
            scrubber: Replaces secrets in every line before it is kept.

        Raises:
            ValueError: A limit is out of range.
        """
        if max_bytes < _LOG_MIN_BYTES:
            raise ValueError(f"max_bytes must be at least {_LOG_MIN_BYTES}, got {max_bytes}")
        self.path = path
        self.dropped_lines = 0
        """Lines not written to the file because the server wrote too fast, in all."""
        self._lines: deque[str] = deque(maxlen=max_lines)
        self._max_bytes = max_bytes
        self._budget = LineBudget(burst, lines_per_s)
        self._scrub = scrubber or Scrubber()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial = ""
        self._cutting = False
        """Inside an overlong line that was cut: skip up to its end."""
        self._dropped = {"stderr": 0, "stray stdout": 0}
        """Lines dropped since the file last said so, by source."""
        self._warned_at = -math.inf
        self._reported_at = -math.inf
        self._fd: int | None = None

    # ----------------------------------------------------------------- input

    def note(self, text: str) -> None:
        """Write one line of our own (a start or exit marker) to the file only."""
        self._write([*self._drop_report(force=True), f"--- taskorch: {text} ---"])

    def feed(self, data: bytes) -> None:
        """Take a chunk of the server's stderr."""
        text = self._decoder.decode(data)
        if self._cutting:
            end = text.find("\n")
            if end < 0:
                return
            text = text[end + 1 :]
            self._cutting = False
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        # Past this length no secret can straddle the cut: scrub it, then cut it.
        if len(self._partial) > _LOG_LINE_CHARS + self._scrub.longest:
            lines.append(self._partial)
            self._partial = ""
            self._cutting = True
        if lines:
            self._take(lines, "stderr")

    def add_line(self, line: str) -> None:
        """Add a line that did not come from stderr (stray stdout output) to both sinks."""
        self._take([line], "stray stdout")

    def flush(self) -> None:
        """Keep an unterminated last line (the stream ended without a newline)."""
        last = self._partial + self._decoder.decode(b"", final=True)
        self._partial = ""
        self._cutting = False
        if last:
            self._take([last], "stderr")

    def tail(self, lines: int | None = None) -> tuple[str, ...]:
        """The last lines, oldest first."""
        kept = tuple(self._lines)
        return kept if lines is None else kept[-lines:]

    def close(self) -> None:
        """Close the file, saying first how many lines were dropped; the ring stays readable."""
        self.flush()
        self._write(self._drop_report(force=True))
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def _take(self, lines: list[str], source: str) -> None:
        ring = self._lines.maxlen or 0
        for line in lines[-ring:] if ring else ():
            line = line.rstrip("\r")
            if line.strip():
                self._lines.append(self._scrub.text(line)[:_TAIL_LINE_CHARS])
        if self.path is None:
            return
        allowed = self._budget.take(len(lines))
        if allowed:
            # The count of lines dropped before these, then these.
            kept = [_cut(self._scrub.text(line.rstrip("\r"))) for line in lines[:allowed]]
            self._write([*self._drop_report(), *kept])
        if allowed < len(lines):
            self._dropped[source] += len(lines) - allowed
            self.dropped_lines += len(lines) - allowed
            self._warn_flood()

    def _drop_report(self, *, force: bool = False) -> list[str]:
        """The line saying how many lines were dropped since the last one (once a second)."""
        total = sum(self._dropped.values())
        now = time.monotonic()
        if not total or (not force and now - self._reported_at < _DROP_REPORT_EVERY_S):
            return []
        self._reported_at = now
        counts = ", ".join(f"{source} {n}" for source, n in self._dropped.items())
        self._dropped = dict.fromkeys(self._dropped, 0)
        return [
            f"--- taskorch: dropped {total} line{'' if total == 1 else 's'} over the limit of "
            f"{self._budget.per_s:g} lines/s ({counts}) ---"
        ]

    def _warn_flood(self) -> None:
        now = time.monotonic()
        if now - self._warned_at >= _FLOOD_WARNING_EVERY_S:
            self._warned_at = now
            logger.warning(
                "server log %s: the server writes more than %g lines/s; dropping lines "
                "(%d so far; the log says how many)",
                self.path,
                self._budget.per_s,
                self.dropped_lines,
            )

    # ----------------------------------------------------------------- file

    def _file(self) -> int | None:
        if self.path is None:
            return None
        if self._fd is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            except OSError as exc:
                logger.warning(
                    "cannot open the server log %s (%s); stderr goes to memory only", self.path, exc
                )
                self.path = None
                return None
        return self._fd

    def _write(self, lines: list[str]) -> None:
        """Append `lines`, in pieces small beside the cap, rotating when one would pass it."""
        piece = bytearray()
        for line in lines:
            data = (line + "\n").encode("utf-8", errors="replace")
            if piece and len(piece) + len(data) > self._max_bytes // 4:
                self._append(bytes(piece))
                piece.clear()
            piece += data
        if piece:
            self._append(bytes(piece))

    def _append(self, data: bytes) -> None:
        try:
            fd = self._file()
            if fd is None:
                return
            size = self._size(fd)
            if size and size + len(data) > self._max_bytes:
                assert self.path is not None
                os.close(fd)
                self._fd = None
                self.path.replace(self.path.with_name(self.path.name + ".1"))
            fd = self._file()
            if fd is not None:
                os.write(fd, data)
        except OSError as exc:
            logger.debug("cannot write the server log %s: %s", self.path, exc)

    def _size(self, fd: int) -> int:
        """The size of the file at `path`, following it if another process rotated it."""
        assert self.path is not None
        ours = os.fstat(fd)
        try:
            named = os.stat(self.path)
        except FileNotFoundError:
            named = None
        if named is None or (named.st_ino, named.st_dev) != (ours.st_ino, ours.st_dev):
            # Another taskorch sharing the log directory rotated it (or it was removed).
            os.close(fd)
            self._fd = None
            fd_again = self._file()
            return os.fstat(fd_again).st_size if fd_again is not None else 0
        return ours.st_size


def _cut(line: str) -> str:
    if len(line) <= _LOG_LINE_CHARS:
        return line
    return f"{line[:_LOG_LINE_CHARS]} [... line cut at {_LOG_LINE_CHARS} characters]"


# --------------------------------------------------------------------------- processes


def describe_exit(returncode: int | None) -> str:
    """Say how a process ended, as a phrase: `exited with code 3`, `was killed by SIGKILL`."""
    if returncode is None:
        return "closed its connection"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with code {returncode}"


class StdioProcess:
    """A stdio server process as an MCP transport, in its own process group.

    Enter it to start the process; the streams it yields carry newline-delimited
    JSON-RPC over the child's stdin and stdout. Exiting ends the whole process
    group: stdin is closed first (the polite MCP shutdown), then SIGTERM goes to
    the group after `grace_s`, then SIGKILL after `kill_grace_s`; the child is
    reaped. The exit is shielded from cancellation and every wait in it is bounded.
    """

    def __init__(
        self,
        spec: StdioServerSpec,
        stderr_log: StderrLog,
        *,
        on_exit: Callable[[int], None] | None = None,
        grace_s: float = 2.0,
        kill_grace_s: float = 2.0,
    ) -> None:
        """Prepare (not start) the process.

        Args:
            spec: Command, arguments, environment and working directory.
            stderr_log: Receives the child's stderr.
            on_exit: Called with the return code as soon as the child is gone.
            grace_s: How long the child may take to exit after its stdin closes.
            kill_grace_s: How long the group may take to exit after SIGTERM.
        """
        self._spec = spec
        self._log = stderr_log
        self._on_exit = on_exit
        self._grace_s = grace_s
        self._kill_grace_s = kill_grace_s
        self.pid: int | None = None
        """The child's pid, which is also its process group id, once started."""
        self.returncode: int | None = None
        """The child's return code once it has exited (negative: killed by that signal)."""
        self.exited = anyio.Event()
        """Set when the child is gone and its output has drained."""
        self._stdout_done = anyio.Event()
        self._stderr_done = anyio.Event()
        self._cm: AbstractAsyncContextManager[TransportStreams] | None = None

    async def __aenter__(self) -> TransportStreams:
        if self._cm is not None:
            raise RuntimeError("a StdioProcess runs once; make a new one to restart the server")
        self._cm = self._run()
        return await self._cm.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._cm is not None
        return await self._cm.__aexit__(exc_type, exc, tb)

    def _environment(self) -> dict[str, str]:
        # Like Claude Desktop: a small safe base, then the configured values.
        env = get_default_environment()
        env.update({key: value.get_secret_value() for key, value in self._spec.env.items()})
        return env

    @contextlib.asynccontextmanager
    async def _run(self) -> AsyncIterator[TransportStreams]:
        spec = self._spec
        try:
            process = await open_process_tree(
                [spec.command, *spec.args], env=self._environment(), cwd=spec.cwd
            )
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise ToolCallError(
                ErrorKind.TOOL_UNAVAILABLE,
                f"cannot start {spec.command!r}: {reason}; "
                "check `command`, `args` and `cwd` in the config",
            ) from exc
        self.pid = process.pid
        self._log.note(f"started pid {process.pid}: {spec.command}")
        read_send, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
        write_stream, write_receive = anyio.create_memory_object_stream[SessionMessage](0)
        reader_scope = anyio.CancelScope()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._pump_stdout, process, read_send, reader_scope)
                tg.start_soon(self._pump_stdin, process, write_receive, reader_scope)
                tg.start_soon(self._pump_stderr, process)
                tg.start_soon(self._watch, process, reader_scope)
                try:
                    yield read_stream, write_stream
                finally:
                    with anyio.CancelScope(shield=True):
                        read_stream.close()
                        write_stream.close()
                        await self._stop(process)
                    tg.cancel_scope.cancel()
        finally:
            for stream in (read_send, read_stream, write_stream, write_receive):
                stream.close()

    async def _pump_stdout(
        self,
        process: anyio.abc.Process,
        send: MemoryObjectSendStream[SessionMessage | Exception],
        scope: anyio.CancelScope,
    ) -> None:
        assert process.stdout is not None
        buffer = bytearray()
        delivering = True
        try:
            with scope, send:
                while True:
                    try:
                        chunk = await process.stdout.receive(_READ_CHUNK)
                    except (
                        anyio.EndOfStream,
                        anyio.ClosedResourceError,
                        anyio.BrokenResourceError,
                    ):
                        break
                    start = len(buffer)
                    buffer += chunk
                    end = buffer.find(b"\n", start)
                    while end >= 0:
                        # One copy of the line (a slice would make a second one).
                        line = bytes(memoryview(buffer)[:end]).strip()
                        if end > _BIG_LINE:
                            # A fresh buffer: `del` would keep a large one's capacity.
                            buffer = bytearray(memoryview(buffer)[end + 1 :])
                        else:
                            del buffer[: end + 1]
                        if line and delivering:
                            delivering = await self._deliver(line, send)
                        del line
                        end = buffer.find(b"\n")
                    if len(buffer) > MAX_MESSAGE_BYTES:
                        # Not a message any client could take: treat it as a broken server.
                        self._log.add_line(
                            f"[taskorch] a stdout line exceeded {MAX_MESSAGE_BYTES} bytes; "
                            "closing the connection"
                        )
                        break
        finally:
            self._stdout_done.set()

    async def _deliver(
        self, line: bytes, send: MemoryObjectSendStream[SessionMessage | Exception]
    ) -> bool:
        try:
            if not line.startswith(b"{"):
                raise ValueError("not a JSON object")  # junk: spare the parser a flood of it
            message = _parse_message(line)
        except (ValidationError, ValueError):
            # A server that prints to stdout corrupts the protocol; keep the line
            # where a person debugging it will look (the log bounds how many).
            self._log.add_line("[stdout, not JSON-RPC] " + line[:500].decode("utf-8", "replace"))
            return True
        try:
            await send.send(SessionMessage(message))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            return False  # the session is gone: keep draining so the child never blocks
        return True

    async def _pump_stdin(
        self,
        process: anyio.abc.Process,
        receive: MemoryObjectReceiveStream[SessionMessage],
        reader_scope: anyio.CancelScope,
    ) -> None:
        assert process.stdin is not None
        try:
            async with receive:
                async for item in receive:
                    data = item.message.model_dump_json(by_alias=True, exclude_unset=True) + "\n"
                    await process.stdin.send(data.encode())
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
            # The child stopped reading: end the read side too, so the session
            # sees the connection close rather than a request that never returns.
            reader_scope.cancel()

    async def _pump_stderr(self, process: anyio.abc.Process) -> None:
        assert process.stderr is not None
        try:
            while True:
                self._log.feed(await process.stderr.receive(_READ_CHUNK))
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass
        finally:
            self._log.flush()
            self._stderr_done.set()

    async def _watch(self, process: anyio.abc.Process, reader_scope: anyio.CancelScope) -> None:
        returncode = await process.wait()
        self.returncode = returncode
        # A grandchild that inherited stdout would keep the pipe open forever:
        # give the output a moment to drain, then close the read side regardless.
        with anyio.move_on_after(_EXIT_SETTLE_S):
            await self._stdout_done.wait()
            await self._stderr_done.wait()
        reader_scope.cancel()
        self._log.note(f"pid {process.pid} {describe_exit(returncode)}")
        self.exited.set()
        if self._on_exit is not None:
            self._on_exit(returncode)

    async def _stop(self, process: anyio.abc.Process) -> None:
        """End the child and its whole group; bounded at every step."""
        pgid = process.pid
        if process.stdin is not None:
            with contextlib.suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
                await process.stdin.aclose()
        if process.returncode is None:
            with anyio.move_on_after(self._grace_s):
                await process.wait()
        # The leader may be gone while children it started live on in its group.
        await end_process_tree(pgid, grace_s=self._kill_grace_s)
        with anyio.move_on_after(_REAP_TIMEOUT_S) as scope:
            self.returncode = await process.wait()
            self.exited.set()  # the watcher may have been cancelled with the pool
        if scope.cancelled_caught:
            logger.warning("server pid %d is still alive after the kill; abandoning it", pgid)
        with anyio.move_on_after(_REAP_TIMEOUT_S):
            await process.aclose()


# --------------------------------------------------------------------------- watched


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


# --------------------------------------------------------------------------- HTTP


@dataclass(slots=True)
class HttpNote:
    """What the HTTP layer saw go wrong while serving one call (or one connect)."""

    kind: ErrorKind | None = None
    """The classified failure, when the layer could tell."""
    message: str | None = None
    """What went wrong, with the server's own words when it gave some."""
    status: int | None = None
    """The HTTP status, when there was a response."""
    delivered: bool = True
    """False when the request certainly never reached the server (safe to resend)."""

    def record(
        self, kind: ErrorKind | None, message: str, *, status: int | None, delivered: bool
    ) -> None:
        """Keep the first failure: later ones are usually its consequences."""
        if self.message is None:
            self.kind, self.message, self.status, self.delivered = kind, message, status, delivered


HTTP_NOTE: ContextVar[HttpNote | None] = ContextVar("taskorch_http_note", default=None)
"""The note of the call the current task is making; HTTP requests inherit it."""


def redact_url(url: str | httpx2.URL) -> str:
    """The URL without credentials or query string, safe for messages and logs."""
    parts = urlsplit(str(url))
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


def _server_words(body: bytes, content_type: str) -> str:
    """The human part of an error body, on one line and bounded.

    That is an OAuth `error_description`, a JSON-RPC `error.message`, or the text.
    """
    text = body.decode("utf-8", errors="replace").strip()
    if "json" in content_type:
        try:
            import json

            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            error = data.get("error")
            if isinstance(error, dict) and isinstance(error.get("message"), str):
                return str(error["message"])[:500]
            parts = [
                str(data[k])
                for k in ("error", "error_description", "detail", "message")
                if k in data
            ]
            if parts:
                return ": ".join(parts)[:500]
    return re.sub(r"\s+", " ", text)[:500]


def _describe_transport_error(exc: httpx2.TransportError, url: httpx2.URL) -> str:
    cause = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, httpx2.ConnectError):
        return f"cannot connect to {redact_url(url)}: {cause}"
    if isinstance(exc, httpx2.TimeoutException):
        return f"timed out talking to {redact_url(url)}: {cause}"
    return f"connection to {redact_url(url)} failed: {cause}"


class _StreamBroken(httpx2.StreamError):
    """A response body broke off mid-way (the SDK handles `StreamError` gracefully)."""


class _GuardedStream(httpx2.AsyncByteStream):
    def __init__(
        self, inner: httpx2.AsyncByteStream, url: httpx2.URL, note: HttpNote | None
    ) -> None:
        self._inner = inner
        self._url = url
        self._note = note

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                yield chunk
        except httpx2.TransportError as exc:
            message = _describe_transport_error(exc, self._url)
            if self._note is not None:
                self._note.record(ErrorKind.NETWORK, message, status=None, delivered=True)
            raise _StreamBroken(message) from exc

    async def aclose(self) -> None:
        await self._inner.aclose()


class GuardedHttpTransport(httpx2.AsyncBaseTransport):
    """An httpx transport that records failures in the caller's `HttpNote`.

    A connection failure becomes a synthetic 503 response (so the SDK fails just
    that request instead of tearing the connection down); an error status keeps
    its body, whose words are noted; a body that breaks off raises a
    `StreamError`, which the SDK turns into a failed request.
    """

    def __init__(self, inner: httpx2.AsyncBaseTransport | None = None) -> None:
        """Wrap `inner` (by default a plain `httpx2.AsyncHTTPTransport`)."""
        self._inner = inner or httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send the request, noting what went wrong."""
        note = HTTP_NOTE.get()
        try:
            response = await self._inner.handle_async_request(request)
        except httpx2.TransportError as exc:
            message = _describe_transport_error(exc, request.url)
            refused = isinstance(exc, httpx2.ConnectError | httpx2.ConnectTimeout)
            if note is not None:
                note.record(ErrorKind.NETWORK, message, status=None, delivered=not refused)
            return httpx2.Response(
                503,
                headers={"content-type": "text/plain"},
                content=message.encode(),
                request=request,
            )
        stream = response.stream
        assert isinstance(stream, httpx2.AsyncByteStream)
        if response.status_code < 400:
            response.stream = _GuardedStream(stream, request.url, note)
            return response
        body = b""
        try:
            async for chunk in stream:
                body += chunk
                if len(body) > _ERROR_BODY_LIMIT * 4:
                    break
        except httpx2.TransportError:
            pass
        finally:
            await stream.aclose()
        content_type = response.headers.get("content-type", "")
        status = response.status_code
        words = _server_words(body, content_type)
        kind = {401: ErrorKind.AUTHENTICATION, 403: ErrorKind.AUTHORIZATION}.get(status)
        if note is not None:
            reason = f"HTTP {status} from {redact_url(request.url)}" + (
                f": {words}" if words else ""
            )
            # 401/403 and an unknown session (404) are refusals: the request did not run.
            note.record(kind, reason, status=status, delivered=status not in (401, 403, 404))
        headers = [
            (k, v)
            for k, v in response.headers.multi_items()
            if k.lower() not in ("content-length", "content-encoding", "transfer-encoding")
        ]
        return httpx2.Response(status, headers=headers, content=body, request=request)

    async def aclose(self) -> None:
        """Close the wrapped transport."""
        await self._inner.aclose()


def make_http_client(headers: Mapping[str, str] | None = None) -> httpx2.AsyncClient:
    """An HTTP client for MCP traffic, with failure notes and no read timeout.

    Reads are unbounded because a tool call may legitimately stream for a long
    time; the pool's per-call deadline bounds it instead.
    """
    return httpx2.AsyncClient(
        headers=dict(headers or {}),
        timeout=httpx2.Timeout(_HTTP_CONNECT_TIMEOUT_S, read=None),
        transport=GuardedHttpTransport(),
    )


# --------------------------------------------------------------------------- SSE


class _SseWriteStream(anyio.abc.AsyncResource):
    """The write side of the SSE transport: each message is POSTed by its sender.

    Posting in the sending task means a failed POST fails that very request (the
    exception reaches the caller), and the POST carries the caller's `HttpNote`.
    """

    def __init__(self, client: httpx2.AsyncClient, endpoint: str) -> None:
        self._client = client
        self._endpoint = endpoint
        self._closed = False

    async def send(self, item: SessionMessage, /) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        message = item.message
        body = message.model_dump(by_alias=True, mode="json", exclude_unset=True)
        response = await self._client.post(self._endpoint, json=body)
        if response.status_code < 300:
            return
        if not isinstance(message, mcp_types.JSONRPCRequest):
            # A lost notification or response is not worth failing anything over.
            logger.debug(
                "SSE POST of a %s got HTTP %d", type(message).__name__, response.status_code
            )
            return
        note = HTTP_NOTE.get()
        if note is not None and note.message is not None:
            raise ToolCallError(note.kind or ErrorKind.NETWORK, note.message)
        words = _server_words(response.content, response.headers.get("content-type", ""))
        raise ToolCallError(
            ErrorKind.NETWORK, f"HTTP {response.status_code} from the server: {words}"
        )

    async def aclose(self) -> None:
        self._closed = True


@contextlib.asynccontextmanager
async def sse_transport(spec: SseServerSpec) -> AsyncIterator[TransportStreams]:
    """Connect to a server over the HTTP+SSE transport (protocol 2024-11-05 and later).

    Raises:
        ToolCallError: The event stream could not be opened.
    """
    headers = {key: value.get_secret_value() for key, value in spec.headers.items()}
    async with make_http_client(headers) as client, client.sse(spec.url) as events:
        status = events.response.status_code
        if status >= 300:
            note = HTTP_NOTE.get()
            if note is not None and note.message is not None:
                raise ToolCallError(note.kind or ErrorKind.NETWORK, note.message)
            raise ToolCallError(ErrorKind.NETWORK, f"HTTP {status} from {redact_url(spec.url)}")
        read_send, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
        endpoints: list[str] = []
        got_endpoint = anyio.Event()

        async def pump_events() -> None:
            async with read_send:
                try:
                    async for event in events:
                        if event.event == "endpoint":
                            endpoint = urljoin(spec.url, event.data.strip())
                            if urlsplit(endpoint)[:2] != urlsplit(spec.url)[:2]:
                                logger.warning(
                                    "SSE endpoint %s is on another origin; refusing it",
                                    redact_url(endpoint),
                                )
                                return
                            endpoints.append(endpoint)
                            got_endpoint.set()
                        elif event.event == "message" and event.data:
                            try:
                                message = _parse_message(event.data)
                            except (ValidationError, ValueError) as exc:
                                logger.warning(
                                    "unparsable SSE message from %s: %s", redact_url(spec.url), exc
                                )
                                continue
                            await read_send.send(SessionMessage(message))
                except (
                    httpx2.HTTPError,
                    httpx2.StreamError,
                    anyio.BrokenResourceError,
                    anyio.ClosedResourceError,
                ) as exc:
                    logger.debug("SSE stream from %s ended: %s", redact_url(spec.url), exc)
                finally:
                    got_endpoint.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(pump_events)
            await got_endpoint.wait()
            if not endpoints:
                raise ToolCallError(
                    ErrorKind.NETWORK,
                    f"the SSE stream at {redact_url(spec.url)} ended before naming its endpoint",
                )
            write_stream = _SseWriteStream(client, endpoints[0])
            try:
                yield read_stream, write_stream
            finally:
                read_stream.close()
                await write_stream.aclose()
                tg.cancel_scope.cancel()
