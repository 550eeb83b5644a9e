"""The stdio transport: a server run as a child process, in its own process group.

Closing it ends the whole group (SIGTERM, then SIGKILL after a grace period),
leaving no orphan and no zombie; its stderr goes to a `StderrLog`, never to our
stdout; its death is noticed at once, so calls in flight fail instead of
waiting for a timeout.
"""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import TYPE_CHECKING

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.client._transport import TransportStreams
from mcp.client.stdio import get_default_environment
from mcp.shared.message import SessionMessage
from pydantic import ValidationError

from executor.downstream.classify import Failure, failure_error
from executor.downstream.procs import end_process_tree, live_group_members, open_process_tree
from executor.downstream.transports.base import MAX_MESSAGE_BYTES, parse_message
from executor.downstream.transports.stderr import StderrLog

if TYPE_CHECKING:
    from executor.downstream.specs import StdioServerSpec

__all__ = ["StdioProcess", "describe_exit", "live_group_members"]

logger = logging.getLogger(__name__)

_READ_CHUNK = 65536
_BIG_LINE = 1024 * 1024
_EXIT_SETTLE_S = 0.05
"""How long to let stdout and stderr drain once the process is gone, so the last
response and the last stderr lines are not lost; short, as calls wait on it."""
_REAP_TIMEOUT_S = 5.0


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
            raise failure_error(
                Failure.CANNOT_START,
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
            message = parse_message(line)
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
