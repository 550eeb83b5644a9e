"""The WebSocket transport (the v2 SDK has none): one JSON-RPC message per text frame.

Subprotocol `mcp`. Built on the `websockets` library's asyncio client:
taskorch runs anyio on asyncio only.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Mapping

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.client._transport import TransportStreams
from mcp.shared.message import SessionMessage
from pydantic import ValidationError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI, WebSocketException
from websockets.typing import Subprotocol

from executor.downstream.classify import Failure, failure_error
from executor.downstream.transports.base import MAX_MESSAGE_BYTES, parse_message, redact_url
from executor.errors import ToolCallError

__all__ = ["SUBPROTOCOL", "websocket_client"]

logger = logging.getLogger(__name__)

SUBPROTOCOL = Subprotocol("mcp")
"""The WebSocket subprotocol MCP uses."""
_CLOSE_TIMEOUT_S = 2.0


def _handshake_error(exc: Exception, url: str) -> ToolCallError:
    where = redact_url(url)
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        words = (
            exc.response.body.decode("utf-8", "replace").strip()[:500] if exc.response.body else ""
        )
        failure = {401: Failure.UNAUTHENTICATED, 403: Failure.FORBIDDEN}.get(
            status, Failure.REFUSED_AT_CONNECT
        )
        detail = f": {words}" if words else ""
        return failure_error(
            failure, f"{where} refused the WebSocket upgrade with HTTP {status}{detail}"
        )
    if isinstance(exc, InvalidURI):
        return failure_error(Failure.BAD_URL, f"{where} is not a WebSocket URL: {exc}")
    if isinstance(exc, TimeoutError):
        return failure_error(Failure.UNREACHABLE, f"timed out opening a WebSocket to {where}")
    return failure_error(Failure.UNREACHABLE, f"cannot open a WebSocket to {where}: {exc}")


async def _pump_in(
    ws: ClientConnection, send: MemoryObjectSendStream[SessionMessage | Exception]
) -> None:
    async with send:
        try:
            async for frame in ws:
                try:
                    message = parse_message(frame)
                except (ValidationError, ValueError) as exc:
                    logger.warning("unparsable WebSocket message: %s", exc)
                    continue
                await send.send(SessionMessage(message))
        except ConnectionClosed as exc:
            logger.debug("WebSocket closed: %s", exc)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass


async def _pump_out(
    ws: ClientConnection, receive: MemoryObjectReceiveStream[SessionMessage]
) -> None:
    async with receive:
        try:
            async for item in receive:
                await ws.send(item.message.model_dump_json(by_alias=True, exclude_unset=True))
        except ConnectionClosed as exc:
            logger.debug("WebSocket closed while sending: %s", exc)


@contextlib.asynccontextmanager
async def websocket_client(
    url: str, headers: Mapping[str, str] | None = None, *, open_timeout: float = 10.0
) -> AsyncIterator[TransportStreams]:
    """Connect to an MCP server over WebSocket.

    Args:
        url: A `ws://` or `wss://` endpoint.
        headers: Extra handshake headers, such as `Authorization`.
        open_timeout: Seconds allowed for the TCP connect and the upgrade.

    Raises:
        ToolCallError: The connection or the upgrade failed; 401 and 403 are
            classified as authentication and authorization.
    """
    try:
        ws = await connect(
            url,
            subprotocols=[SUBPROTOCOL],
            additional_headers=dict(headers or {}),
            open_timeout=open_timeout,
            close_timeout=_CLOSE_TIMEOUT_S,
            max_size=MAX_MESSAGE_BYTES,
        )
    except (OSError, TimeoutError, WebSocketException) as exc:
        raise _handshake_error(exc, url) from exc
    if ws.subprotocol != SUBPROTOCOL:
        # Some servers do not echo the subprotocol; the messages tell whether it speaks MCP.
        logger.debug("%s did not confirm the `mcp` subprotocol", redact_url(url))
    read_send, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_stream, write_receive = anyio.create_memory_object_stream[SessionMessage](0)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_pump_in, ws, read_send)
            tg.start_soon(_pump_out, ws, write_receive)
            try:
                yield read_stream, write_stream
            finally:
                read_stream.close()
                write_stream.close()
                with anyio.CancelScope(shield=True), anyio.move_on_after(_CLOSE_TIMEOUT_S * 2):
                    await ws.close()
                tg.cancel_scope.cancel()
    finally:
        for stream in (read_send, read_stream, write_stream, write_receive):
            stream.close()
