"""The streamable HTTP transport, and the HTTP client every HTTP-based transport uses.

HTTP failures keep their meaning. The SDK turns a refused connection or a 401
into a bare "Server returned an error response"; `GuardedHttpTransport` notes
what really happened to each request (the status, the server's own words,
whether the request reached the server) in the connection's `HttpNotes`, and
the streamable transport hands each note to the supervisor as the `data` of
the error the SDK makes of that very request (`classify.http_call_failure`
reads it). The fact travels with the error it explains, from the request it
belongs to.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc
import httpx2
from mcp.client._transport import TransportStreams
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._stream_protocols import ReadStream
from mcp.shared.message import SessionMessage
from mcp_types import JSONRPCError, JSONRPCResponse

from executor.downstream.transports.base import redact_url

__all__ = [
    "GuardedHttpTransport",
    "HttpNote",
    "HttpNotes",
    "make_http_client",
    "server_words",
    "streamable_http_transport",
]

_ERROR_BODY_LIMIT = 16384
_HTTP_CONNECT_TIMEOUT_S = 10.0
_NOTES_KEPT = 256
"""Notes kept per connection for requests whose answer has not come back yet."""

RequestId = int | str


@dataclass(frozen=True, slots=True)
class HttpNote:
    """What the HTTP layer saw go wrong with one request."""

    message: str
    """What went wrong, with the server's own words when it gave some."""
    status: int | None
    """The HTTP status, or `None` when there was no response (the connection failed or broke)."""
    delivered: bool
    """False when the request certainly never reached the server (safe to resend)."""


class HttpNotes:
    """One connection's notes, by the JSON-RPC id of the request each is about.

    A request without an id (a notification, the SSE stream's GET) is noted
    under `None`; the first note of a request is kept, later ones being
    usually its consequences.
    """

    __slots__ = ("_by_id",)

    def __init__(self) -> None:
        self._by_id: dict[RequestId | None, HttpNote] = {}

    def record(self, request: httpx2.Request, note: HttpNote) -> None:
        """Note what went wrong with `request`."""
        key = _request_id(request)
        if key in self._by_id:
            return
        if len(self._by_id) >= _NOTES_KEPT:
            # Answers that never came back (cancelled requests): forget the oldest.
            del self._by_id[next(iter(self._by_id))]
        self._by_id[key] = note

    def pop(self, request_id: RequestId | None) -> HttpNote | None:
        """Take the note of the request with this id, if any."""
        return self._by_id.pop(request_id, None) if self._by_id else None

    def attach(self, item: SessionMessage | Exception) -> SessionMessage | Exception:
        """`item`, with the request's note as the `data` of an error answering it."""
        if not self._by_id or not isinstance(item, SessionMessage):
            return item
        message = item.message
        if isinstance(message, JSONRPCResponse):
            self._by_id.pop(message.id, None)
        elif isinstance(message, JSONRPCError) and message.id is not None:
            note = self._by_id.pop(message.id, None)
            if note is not None:
                error = message.error.model_copy(update={"data": note})
                noted = message.model_copy(update={"error": error})
                return SessionMessage(noted, metadata=item.metadata)
        return item


def _request_id(request: httpx2.Request) -> RequestId | None:
    """The JSON-RPC id of the request a POST carries, or `None` for anything else."""
    if request.method != "POST":
        return None
    try:
        body = json.loads(request.content)
    except (httpx2.RequestNotRead, ValueError):
        return None
    if isinstance(body, dict) and "method" in body:
        request_id = body.get("id")
        if isinstance(request_id, int | str) and not isinstance(request_id, bool):
            return request_id
    return None


def server_words(body: bytes, content_type: str) -> str:
    """The human part of an error body, on one line and bounded.

    That is an OAuth `error_description`, a JSON-RPC `error.message`, or the text.
    """
    text = body.decode("utf-8", errors="replace").strip()
    if "json" in content_type:
        try:
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
        self, inner: httpx2.AsyncByteStream, request: httpx2.Request, notes: HttpNotes
    ) -> None:
        self._inner = inner
        self._request = request
        self._notes = notes

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                yield chunk
        except httpx2.TransportError as exc:
            message = _describe_transport_error(exc, self._request.url)
            self._notes.record(self._request, HttpNote(message, status=None, delivered=True))
            raise _StreamBroken(message) from exc

    async def aclose(self) -> None:
        await self._inner.aclose()


class GuardedHttpTransport(httpx2.AsyncBaseTransport):
    """An httpx transport that notes each request's failure in its connection's `HttpNotes`.

    A connection failure becomes a synthetic 503 response (so the SDK fails just
    that request instead of tearing the connection down); an error status keeps
    its body, whose words are noted; a body that breaks off raises a
    `StreamError`, which the SDK turns into a failed request.
    """

    def __init__(self, notes: HttpNotes, inner: httpx2.AsyncBaseTransport | None = None) -> None:
        """Note into `notes`, wrapping `inner` (by default a plain `httpx2.AsyncHTTPTransport`)."""
        self._notes = notes
        self._inner = inner or httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send the request, noting what went wrong."""
        try:
            response = await self._inner.handle_async_request(request)
        except httpx2.TransportError as exc:
            message = _describe_transport_error(exc, request.url)
            refused = isinstance(exc, httpx2.ConnectError | httpx2.ConnectTimeout)
            self._notes.record(request, HttpNote(message, status=None, delivered=not refused))
            return httpx2.Response(
                503,
                headers={"content-type": "text/plain"},
                content=message.encode(),
                request=request,
            )
        stream = response.stream
        assert isinstance(stream, httpx2.AsyncByteStream)
        if response.status_code < 400:
            response.stream = _GuardedStream(stream, request, self._notes)
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
        status = response.status_code
        words = server_words(body, response.headers.get("content-type", ""))
        reason = f"HTTP {status} from {redact_url(request.url)}" + (f": {words}" if words else "")
        # 401/403 and an unknown session (404) are refusals: the request did not run.
        delivered = status not in (401, 403, 404)
        self._notes.record(request, HttpNote(reason, status=status, delivered=delivered))
        headers = [
            (k, v)
            for k, v in response.headers.multi_items()
            if k.lower() not in ("content-length", "content-encoding", "transfer-encoding")
        ]
        return httpx2.Response(status, headers=headers, content=body, request=request)

    async def aclose(self) -> None:
        """Close the wrapped transport."""
        await self._inner.aclose()


def make_http_client(
    headers: Mapping[str, str],
    notes: HttpNotes,
    inner: httpx2.AsyncBaseTransport | None = None,
) -> httpx2.AsyncClient:
    """An HTTP client for MCP traffic, noting failures into `notes`, with no read timeout.

    Reads are unbounded because a tool call may legitimately stream for a long
    time; the pool's per-call deadline bounds it instead. `inner` is the
    transport under the notes (OAuth's, say); a plain one by default.
    """
    return httpx2.AsyncClient(
        headers=dict(headers),
        timeout=httpx2.Timeout(_HTTP_CONNECT_TIMEOUT_S, read=None),
        transport=GuardedHttpTransport(notes, inner),
    )


class _NotedReadStream(anyio.abc.AsyncResource):
    """The read side of a streamable HTTP session, each request's note on its error."""

    __slots__ = ("_inner", "_notes")

    def __init__(self, inner: ReadStream[SessionMessage | Exception], notes: HttpNotes) -> None:
        self._inner = inner
        self._notes = notes

    @property
    def last_context(self) -> Any:
        # The dispatcher reads this (by getattr) to run handlers in the sender's context.
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> SessionMessage | Exception:
        return self._notes.attach(await self._inner.receive())

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __aiter__(self) -> _NotedReadStream:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return self._notes.attach(await self._inner.receive())
        except anyio.EndOfStream:
            raise StopAsyncIteration from None


@contextlib.asynccontextmanager
async def streamable_http_transport(
    url: str, headers: Mapping[str, str], inner: httpx2.AsyncBaseTransport | None = None
) -> AsyncIterator[TransportStreams]:
    """Connect to a server over streamable HTTP (MCP 2025-03-26 and later).

    `inner` is the HTTP transport under taskorch's notes (OAuth's, say).
    """
    notes = HttpNotes()
    async with (
        make_http_client(headers, notes, inner) as http,
        streamable_http_client(url, http_client=http) as (read_stream, write_stream),
    ):
        yield _NotedReadStream(read_stream, notes), write_stream
