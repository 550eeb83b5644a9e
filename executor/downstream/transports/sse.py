"""The HTTP+SSE transport (MCP 2024-11-05 and later): events in on a GET, messages out by POST.

Each message is posted from the task that sends it, so a POST that fails fails
that one request at once (classified from what the HTTP layer noted of it),
instead of silently stalling the connection.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from urllib.parse import urljoin, urlsplit

import anyio
import anyio.abc
import httpx2
import mcp_types
from mcp.client._transport import TransportStreams
from mcp.shared.message import SessionMessage
from pydantic import ValidationError

from executor.downstream.classify import (
    Failure,
    failure_error,
    http_failure,
    sse_post_failure,
)
from executor.downstream.transports.base import parse_message, redact_url
from executor.downstream.transports.http import (
    HttpNote,
    HttpNotes,
    make_http_client,
    server_words,
)

__all__ = ["sse_transport"]

logger = logging.getLogger(__name__)


class _SseWriteStream(anyio.abc.AsyncResource):
    """The write side of the SSE transport: each message is POSTed by its sender."""

    def __init__(self, client: httpx2.AsyncClient, endpoint: str, notes: HttpNotes) -> None:
        self._client = client
        self._endpoint = endpoint
        self._notes = notes
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
        note = self._notes.pop(message.id)
        if note is None:  # a status under 400 (a redirect): the HTTP layer noted nothing
            words = server_words(response.content, response.headers.get("content-type", ""))
            reason = f"HTTP {response.status_code} from {redact_url(self._endpoint)}: {words}"
            note = HttpNote(reason, status=response.status_code, delivered=False)
        raise failure_error(sse_post_failure(note), note.message)

    async def aclose(self) -> None:
        self._closed = True


@contextlib.asynccontextmanager
async def sse_transport(url: str, headers: Mapping[str, str]) -> AsyncIterator[TransportStreams]:
    """Connect to a server over the HTTP+SSE transport.

    Raises:
        ToolCallError: The event stream could not be opened.
    """
    notes = HttpNotes()
    async with make_http_client(headers, notes) as client, client.sse(url) as events:
        status = events.response.status_code
        if status >= 300:
            note = notes.pop(None)
            if note is not None:
                raise failure_error(http_failure(note) or Failure.REFUSED_AT_CONNECT, note.message)
            raise failure_error(Failure.REFUSED_AT_CONNECT, f"HTTP {status} from {redact_url(url)}")
        read_send, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
        endpoints: list[str] = []
        got_endpoint = anyio.Event()

        async def pump_events() -> None:
            async with read_send:
                try:
                    async for event in events:
                        if event.event == "endpoint":
                            endpoint = urljoin(url, event.data.strip())
                            if urlsplit(endpoint)[:2] != urlsplit(url)[:2]:
                                logger.warning(
                                    "SSE endpoint %s is on another origin; refusing it",
                                    redact_url(endpoint),
                                )
                                return
                            endpoints.append(endpoint)
                            got_endpoint.set()
                        elif event.event == "message" and event.data:
                            try:
                                message = parse_message(event.data)
                            except (ValidationError, ValueError) as exc:
                                logger.warning(
                                    "unparsable SSE message from %s: %s", redact_url(url), exc
                                )
                                continue
                            await read_send.send(SessionMessage(message))
                except (
                    httpx2.HTTPError,
                    httpx2.StreamError,
                    anyio.BrokenResourceError,
                    anyio.ClosedResourceError,
                ) as exc:
                    logger.debug("SSE stream from %s ended: %s", redact_url(url), exc)
                finally:
                    got_endpoint.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(pump_events)
            try:
                await got_endpoint.wait()
                if not endpoints:
                    raise failure_error(
                        Failure.NO_ENDPOINT,
                        f"the SSE stream at {redact_url(url)} ended before naming its endpoint",
                    )
                write_stream = _SseWriteStream(client, endpoints[0], notes)
                try:
                    yield read_stream, write_stream
                finally:
                    await write_stream.aclose()
            finally:
                read_stream.close()
                tg.cancel_scope.cancel()
