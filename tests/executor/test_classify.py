"""Every row of the one failure table, produced by real servers: the kind and delivery seen.

Each test drives a `Pool` against real servers (stdio children, the SDK fixture
over HTTP, SSE and WebSocket, and a few bare sockets on 127.0.0.1 for what no
well-behaved server does) and checks, for each `Failure` it provokes, the kind
and delivery written out here against the table's row and the error's words.
"""

from __future__ import annotations

import ast
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.abc
import pytest
from websockets.asyncio.server import ServerConnection, serve

from executor.downstream import Pool
from executor.downstream.classify import FAILURES, Failure
from executor.downstream.specs import (
    HttpServerSpec,
    ServerSpec,
    SseServerSpec,
    StdioServerSpec,
    WebSocketServerSpec,
)
from executor.errors import Delivery, ErrorKind, ToolCallError
from tests.fixtures.helpers import wait_for_marker
from tests.fixtures.launch import NetworkKind, network_server, tiny_spec

pytestmark = pytest.mark.anyio

DOWNSTREAM = Path(__file__).resolve().parents[2] / "executor" / "downstream"
K, D = ErrorKind, Delivery
MUTE = StdioServerSpec(command=sys.executable, args=("-c", "import time; time.sleep(60)"))
"""A "server" that never answers its handshake."""

COVERED: set[Failure] = set()
_T = TypeVar("_T", bound=Callable[..., Awaitable[None]])


def covers(*failures: Failure) -> Callable[[_T], _T]:
    """Mark a test as producing these rows (`test_every_row_is_produced_by_a_test` adds up)."""
    COVERED.update(failures)
    return lambda test: test


def expect(
    error: ToolCallError, failure: Failure, kind: ErrorKind, delivery: Delivery, words: str
) -> None:
    """`error` is what `failure` means, `kind` and `delivery`, and says `words`."""
    row_kind, row_delivery = FAILURES[failure]
    # A row without a kind takes its cause's: any kind is the row's then.
    assert (row_kind or kind, row_delivery) == (kind, delivery), f"the row of {failure}"
    assert (error.kind, error.delivery) == (kind, delivery), error
    assert words in error.message, error


async def failure(pool: Pool, server: str, tool: str = "echo", **arguments: Any) -> ToolCallError:
    with pytest.raises(ToolCallError) as caught:
        await pool.call(server, tool, dict(arguments))
    return caught.value


def test_every_row_is_produced_by_a_test() -> None:
    assert set(FAILURES) == set(Failure)
    assert set(Failure) - COVERED == set()


def test_no_other_module_chooses_a_kind_or_passes_facts_on_the_side() -> None:
    offenders: list[str] = []
    for path in sorted(DOWNSTREAM.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        where = path.relative_to(DOWNSTREAM)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "ToolCallError":
                # classify builds every error; a supervisor only re-attributes a built one.
                if str(where) not in ("classify.py", "supervisor.py"):
                    offenders.append(f"{where}: builds a ToolCallError")
            if isinstance(node, ast.Import | ast.ImportFrom):
                modules = [a.name for a in node.names] + [getattr(node, "module", "") or ""]
                if "contextvars" in modules:
                    offenders.append(f"{where}: imports contextvars")
    assert offenders == []


# ----------------------------------------------------------------- opening a session


@covers(
    Failure.CANNOT_START,
    Failure.EXITED_AT_START,
    Failure.CANNOT_OPEN,
    Failure.LISTING_FAILED,
    Failure.NOT_SENT,
)
async def test_a_stdio_server_that_cannot_be_opened() -> None:
    servers = {
        "missing": StdioServerSpec(command="/nonexistent/taskorch-test-server"),
        "crashing": tiny_spec("crashing", "--crash-at-start"),
        "ancient": tiny_spec("ancient", "--protocol", "1999-01-01"),
        "unlisted": tiny_spec("unlisted", "--list-error"),
    }
    async with Pool(servers) as pool:
        # A call finds the session cannot open: nothing was sent (NOT_SENT), its
        # kind is the opening's.
        expect(
            await failure(pool, "missing"),
            Failure.CANNOT_START,
            K.TOOL_UNAVAILABLE,
            D.NOT_DELIVERED,
            "cannot start '/nonexistent/taskorch-test-server'",
        )
        expect(
            await failure(pool, "crashing"),
            Failure.EXITED_AT_START,
            K.TOOL_UNAVAILABLE,
            D.NOT_DELIVERED,
            "exited with code 2 during startup",
        )
        expect(
            await failure(pool, "ancient"),
            Failure.CANNOT_OPEN,
            K.TOOL_UNAVAILABLE,
            D.NOT_DELIVERED,
            "Unsupported protocol version from the server: 1999-01-01",
        )
        expect(
            await failure(pool, "unlisted"),
            Failure.LISTING_FAILED,
            K.TOOL_UNAVAILABLE,
            D.NOT_DELIVERED,
            "listing the tools failed: tiny: the tool registry is unavailable",
        )


@covers(Failure.HANDSHAKE_TIMEOUT)
async def test_a_server_that_never_finishes_the_handshake() -> None:
    async with Pool({"mute": MUTE}, connect_timeout_s=0.5) as pool:
        expect(
            await failure(pool, "mute"),
            Failure.HANDSHAKE_TIMEOUT,
            K.TIMEOUT,
            D.NOT_DELIVERED,
            "did not finish the MCP handshake within 0.5 s",
        )


@contextmanager
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections (bound, never listening)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@asynccontextmanager
async def bare_http(response: bytes) -> AsyncIterator[int]:
    """A server on 127.0.0.1 that answers every request with `response` and hangs up."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)

    async def answer(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            request = b""
            while b"\r\n\r\n" not in request:
                request += await stream.receive()
            await stream.send(response)

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, answer)
        yield listener.extra(anyio.abc.SocketAttribute.local_port)
        tg.cancel_scope.cancel()


@asynccontextmanager
async def hanging_up_websocket() -> AsyncIterator[int]:
    """A WebSocket server on 127.0.0.1 that accepts the upgrade, then closes at once."""

    async def close(ws: ServerConnection) -> None:
        await ws.close()

    async with serve(close, "127.0.0.1", 0) as server:
        yield next(iter(server.sockets)).getsockname()[1]


@covers(
    Failure.REFUSED_AT_CONNECT,
    Failure.NO_ENDPOINT,
    Failure.CLOSED_AT_HANDSHAKE,
    Failure.UNREACHABLE,
    Failure.BAD_URL,
)
async def test_a_remote_server_that_cannot_be_opened() -> None:
    empty_events = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: 0\r\n\r\n"
    )
    refusal = b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\n\r\noops"
    with closed_port() as nothing:
        async with (
            bare_http(refusal) as refusing,
            bare_http(empty_events) as silent,
            hanging_up_websocket() as hanging_up,
        ):
            servers: dict[str, ServerSpec] = {
                "refusing": HttpServerSpec(url=f"http://127.0.0.1:{refusing}/mcp"),
                "silent": SseServerSpec(url=f"http://127.0.0.1:{silent}/sse"),
                "hanging_up": WebSocketServerSpec(url=f"ws://127.0.0.1:{hanging_up}/"),
                "http_nothing": HttpServerSpec(url=f"http://127.0.0.1:{nothing}/mcp"),
                "sse_nothing": SseServerSpec(url=f"http://127.0.0.1:{nothing}/sse"),
                "ws_nothing": WebSocketServerSpec(url=f"ws://127.0.0.1:{nothing}/"),
                # websockets refuses a user name without a password.
                "ws_user": WebSocketServerSpec(url=f"ws://someone@127.0.0.1:{nothing}/"),
            }
            async with Pool(servers) as pool:
                expect(
                    await failure(pool, "refusing"),
                    Failure.REFUSED_AT_CONNECT,
                    K.NETWORK,
                    D.NOT_DELIVERED,
                    f"HTTP 500 from http://127.0.0.1:{refusing}/mcp: oops",
                )
                expect(
                    await failure(pool, "silent"),
                    Failure.NO_ENDPOINT,
                    K.NETWORK,
                    D.NOT_DELIVERED,
                    "ended before naming its endpoint",
                )
                expect(
                    await failure(pool, "hanging_up"),
                    Failure.CLOSED_AT_HANDSHAKE,
                    K.NETWORK,
                    D.NOT_DELIVERED,
                    "the server closed the connection during the handshake",
                )
                for server, words in [
                    ("http_nothing", "cannot connect to"),
                    ("sse_nothing", "cannot connect to"),
                    ("ws_nothing", "cannot open a WebSocket to"),
                ]:
                    error = await failure(pool, server)
                    expect(error, Failure.UNREACHABLE, K.NETWORK, D.NOT_DELIVERED, words)
                expect(
                    await failure(pool, "ws_user"),
                    Failure.BAD_URL,
                    K.NETWORK,
                    D.NOT_DELIVERED,
                    "is not a WebSocket URL",
                )


@covers(Failure.SERVER_DOWN)
async def test_a_server_inside_its_restart_backoff_is_down_for_its_last_failures_reason() -> None:
    with closed_port() as nothing:
        spec = HttpServerSpec(url=f"http://127.0.0.1:{nothing}/mcp")
        async with Pool({"gone": spec}, restart_backoff_s=60) as pool:
            for _ in range(2):  # the first restart is at once; the second backs off
                await failure(pool, "gone")
            # The kind is the last failure's (the network here), not one of its own.
            expect(
                await failure(pool, "gone"),
                Failure.SERVER_DOWN,
                K.NETWORK,
                D.NOT_DELIVERED,
                "the server is down: cannot connect to",
            )


@covers(Failure.LISTING_TIMEOUT)
async def test_a_server_whose_tool_listing_hangs_in_a_check_is_down() -> None:
    # The server answers the listing of its opening, and no other: a check's hangs.
    spec = tiny_spec("t", "--list-once")
    async with Pool({"t": spec}, connect_timeout_s=2.0, restart_backoff_s=60) as pool:
        for _ in range(2):  # the second check in a row backs off
            [health] = await pool.check()
            assert health.status == "down"
            assert health.error == "tools/list got no answer within 2 s"
        expect(
            await failure(pool, "t"),
            Failure.SERVER_DOWN,
            K.TIMEOUT,
            D.NOT_DELIVERED,
            "tools/list got no answer within 2 s",
        )


# ----------------------------------------------------------------- before the request goes out


@covers(
    Failure.NO_SERVER,
    Failure.TOOL_HIDDEN,
    Failure.BAD_TIMEOUT,
    Failure.UNKNOWN_TOOL,
    Failure.QUEUED_TOO_LONG,
    Failure.POOL_NOT_OPEN,
)
async def test_failures_before_the_request_goes_out_are_not_delivered() -> None:
    servers = {"tiny": tiny_spec(denied_tools=("environ",)), "mute": MUTE}
    async with Pool(servers, default_timeout_s=0.5, max_timeout_s=0.5) as pool:
        expect(
            await failure(pool, "ghost"),
            Failure.NO_SERVER,
            K.TOOL_UNAVAILABLE,
            D.NOT_DELIVERED,
            "no downstream server named 'ghost' is configured (configured: mute, tiny)",
        )
        expect(
            await failure(pool, "tiny", "environ"),
            Failure.TOOL_HIDDEN,
            K.TOOL_UNAVAILABLE,
            D.NOT_DELIVERED,
            "denied_tools",
        )
        with pytest.raises(ToolCallError) as bad_timeout:
            await pool.call("tiny", "echo", {}, timeout_s=0)
        expect(
            bad_timeout.value,
            Failure.BAD_TIMEOUT,
            K.INVALID_ARGUMENTS,
            D.NOT_DELIVERED,
            "timeout_s must be positive, got 0",
        )
        expect(
            await failure(pool, "tiny", "no_such_tool"),
            Failure.UNKNOWN_TOOL,
            K.TOOL_UNAVAILABLE,
            D.NOT_DELIVERED,
            "the server has no tool named 'no_such_tool' (it has answer, crash,",
        )
        # The call's deadline passes while it waits for the session.
        expect(
            await failure(pool, "mute", "anything"),
            Failure.QUEUED_TOO_LONG,
            K.TIMEOUT,
            D.NOT_DELIVERED,
            "timed out before the request could be sent",
        )
    expect(
        await failure(Pool({"tiny": tiny_spec()}), "tiny"),
        Failure.POOL_NOT_OPEN,
        K.TOOL_UNAVAILABLE,
        D.NOT_DELIVERED,
        "the pool is not open",
    )


# ----------------------------------------------------------------- the server's answers


@covers(
    Failure.INVALID_REQUEST,
    Failure.METHOD_NOT_FOUND,
    Failure.INVALID_PARAMS,
    Failure.SERVER_TIMEOUT,
    Failure.TOOL_FAILED,
    Failure.INVALID_ANSWER,
)
async def test_a_servers_answers_are_classified_by_their_code() -> None:
    def rpc_error(code: int, message: str) -> dict[str, Any]:
        return {"error": {"code": code, "message": message}}

    async with Pool({"tiny": tiny_spec()}) as pool:
        await pool.call("tiny", "echo", {"text": "up"})
        pid = pool.health()[0].pid
        assert pid is not None
        for code, row, kind, delivery in [
            (-32600, Failure.INVALID_REQUEST, K.INVALID_ARGUMENTS, D.ANSWERED),
            (-32601, Failure.METHOD_NOT_FOUND, K.TOOL_UNAVAILABLE, D.ANSWERED),
            (-32602, Failure.INVALID_PARAMS, K.INVALID_ARGUMENTS, D.ANSWERED),
            (-32603, Failure.TOOL_FAILED, K.TOOL_ERROR, D.ANSWERED),
            # -32000 is the SDK's "connection closed", and many servers' "server
            # error": a live server that answers it has answered.
            (-32000, Failure.TOOL_FAILED, K.TOOL_ERROR, D.ANSWERED),
            (-32001, Failure.SERVER_TIMEOUT, K.TIMEOUT, D.AMBIGUOUS),
        ]:
            words = f"tiny says {code}"
            error = await failure(pool, "tiny", "answer", **rpc_error(code, words))
            expect(error, row, kind, delivery, words)

        # The TypeScript SDK answers a protocol error as an `isError` text.
        disguised = {"content": [{"type": "text", "text": "MCP error -32602: x is bad"}]}
        error = await failure(pool, "tiny", "answer", result={**disguised, "isError": True})
        expect(error, Failure.INVALID_PARAMS, K.INVALID_ARGUMENTS, D.ANSWERED, "x is bad")

        error = await failure(pool, "tiny", "answer", result={"content": "not a list"})
        expect(
            error,
            Failure.INVALID_ANSWER,
            K.TOOL_ERROR,
            D.ANSWERED,
            "the server's answer is not valid",
        )
        assert pool.health()[0].pid == pid  # one session lived through every answer


@covers(Failure.NO_ANSWER, Failure.SERVER_EXITED)
async def test_a_call_cut_off_after_its_request_went_out_is_ambiguous(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    async with Pool({"tiny": tiny_spec()}) as pool:
        with pytest.raises(ToolCallError) as timeout:
            await pool.call("tiny", "sleep", {"seconds": 30, "marker": str(marker)}, timeout_s=0.3)
        expect(
            timeout.value,
            Failure.NO_ANSWER,
            K.TIMEOUT,
            D.AMBIGUOUS,
            "timed out: no answer or progress for 0.3 s; the server was asked to cancel it",
        )
        await wait_for_marker(marker, "cancelled")

        expect(
            await failure(pool, "tiny", "crash", code=3),
            Failure.SERVER_EXITED,
            K.TOOL_UNAVAILABLE,
            D.AMBIGUOUS,
            "the server process exited with code 3 while the call was in flight",
        )


async def cut_off(pool: Pool, server: str, marker: Path, cut: Callable[[], Awaitable[None]]) -> Any:
    """The error of a `hang` call to `server` once `cut()` ends it from outside."""
    errors: list[ToolCallError] = []

    async def hang() -> None:
        try:
            await pool.call(server, "hang", {"marker": str(marker)})
        except ToolCallError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(hang)
        await wait_for_marker(marker, "started")
        await cut()
    [error] = errors
    return error


@covers(Failure.CONNECTION_LOST)
async def test_a_dropped_websocket_loses_the_call_in_flight(tmp_path: Path) -> None:
    async with network_server("ws") as server, Pool({"r": server.spec()}) as pool:
        expect(
            await cut_off(pool, "r", tmp_path / "marker", server.kill),
            Failure.CONNECTION_LOST,
            K.NETWORK,
            D.AMBIGUOUS,
            "the connection was lost: the server closed the connection",
        )


@covers(Failure.POOL_CLOSING, Failure.POOL_CLOSED)
async def test_closing_the_pool_fails_what_waits_on_it(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    errors: dict[str, ToolCallError] = {}

    async def call(pool: Pool, server: str, tool: str, arguments: dict[str, Any]) -> None:
        errors[server] = await failure(pool, server, tool, **arguments)

    async with anyio.create_task_group() as tg:
        async with Pool({"mute": MUTE, "tiny": tiny_spec()}) as pool:
            tg.start_soon(call, pool, "mute", "anything", {})
            tg.start_soon(call, pool, "tiny", "sleep", {"seconds": 60, "marker": str(marker)})
            await wait_for_marker(marker, "started")
    expect(
        errors["mute"], Failure.POOL_CLOSING, K.TOOL_UNAVAILABLE, D.NOT_DELIVERED, "pool is closing"
    )
    expect(
        errors["tiny"],
        Failure.POOL_CLOSED,
        K.TOOL_UNAVAILABLE,
        D.AMBIGUOUS,
        "the pool was closed while the call was in flight",
    )


# ----------------------------------------------------------------- HTTP


@covers(
    Failure.HTTP_REFUSED,
    Failure.GATEWAY_ERROR,
    Failure.SERVER_ERROR,
    Failure.UNAUTHENTICATED,
    Failure.FORBIDDEN,
    Failure.SESSION_FORGOTTEN,
    Failure.CONNECTION_BROKE,
)
@pytest.mark.parametrize(("kind", "legacy"), [("http", False), ("http", True), ("sse", False)])
async def test_the_same_http_status_means_the_same_on_every_http_transport(
    kind: NetworkKind, legacy: bool, tmp_path: Path
) -> None:
    # Restarts at once: a forgotten session fails its restarts on purpose here.
    async with (
        network_server(kind, legacy=legacy) as server,
        Pool({"r": server.spec()}, restart_backoff_s=0) as pool,
    ):
        url = f"http://127.0.0.1:{server.port}/"

        async def status(code: int) -> ToolCallError:
            return await failure(pool, "r", "http_status", status=code, body=f"status {code}")

        for code, row, error_kind, delivery in [
            (409, Failure.HTTP_REFUSED, K.TOOL_ERROR, D.ANSWERED),
            (502, Failure.GATEWAY_ERROR, K.NETWORK, D.AMBIGUOUS),
            (503, Failure.GATEWAY_ERROR, K.NETWORK, D.AMBIGUOUS),
            (500, Failure.SERVER_ERROR, K.TOOL_ERROR, D.AMBIGUOUS),
            # Refused on the way in: the request did not run.
            (401, Failure.UNAUTHENTICATED, K.AUTHENTICATION, D.NOT_DELIVERED),
            (403, Failure.FORBIDDEN, K.AUTHORIZATION, D.NOT_DELIVERED),
        ]:
            expect(await status(code), row, error_kind, delivery, f"HTTP {code} from {url}")

        if kind == "http" and not legacy:
            # Without a session, the SDK reads a 404 as "no such method".
            error = await status(404)
            expect(error, Failure.METHOD_NOT_FOUND, K.TOOL_UNAVAILABLE, D.ANSWERED, "Not Found")
        else:
            # The server forgot the session: the pool opens a new one and sends the
            # request again (refused again here).
            error = await status(404)
            expect(error, Failure.SESSION_FORGOTTEN, K.NETWORK, D.NOT_DELIVERED, "HTTP 404 from")
        # The server dies mid-call: the call may have run. Over SSE its answer
        # would have come on the event stream, which ends.
        lost = await cut_off(pool, "r", tmp_path / "marker", server.kill)
        if kind == "sse":
            words = "the connection was lost: the server closed the connection"
            expect(lost, Failure.CONNECTION_LOST, K.NETWORK, D.AMBIGUOUS, words)
        else:
            words = f"connection to {url}mcp failed: RemoteProtocolError"
            expect(lost, Failure.CONNECTION_BROKE, K.NETWORK, D.AMBIGUOUS, words)
