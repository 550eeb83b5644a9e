"""What each downstream failure means: one table from failure to `ErrorKind` and `Delivery`.

Every `ToolCallError` the downstream package raises is built by
`failure_error` from a row of `FAILURES`, whether the pool, a supervisor or a
transport saw it fail: a kind is never chosen anywhere else. The `Delivery`
says whether the request may have reached the tool, which decides whether a
retry may repeat a side effect (`executor.retry`).
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import TYPE_CHECKING

import mcp_types

from executor.errors import Delivery, ErrorKind, ToolCallError

if TYPE_CHECKING:
    from executor.downstream.transports.http import HttpNote

__all__ = [
    "FAILURES",
    "Failure",
    "code_failure",
    "disguised_protocol_error",
    "failure_error",
    "http_call_failure",
    "http_error_failure",
    "http_failure",
    "sse_post_failure",
]


class Failure(StrEnum):
    """Every way the pool sees a session or a call fail; `FAILURES` says what each means."""

    # Opening a session (nothing of a call has been sent).
    CANNOT_START = "cannot_start"
    """The stdio server's command could not be run."""
    EXITED_AT_START = "exited_at_start"
    """The stdio server exited before the MCP handshake finished."""
    CLOSED_AT_HANDSHAKE = "closed_at_handshake"
    """A remote server closed the connection during the handshake."""
    HANDSHAKE_TIMEOUT = "handshake_timeout"
    REFUSED_AT_CONNECT = "refused_at_connect"
    """A remote server answered the connection with an HTTP error status."""
    BAD_URL = "bad_url"
    NO_ENDPOINT = "no_endpoint"
    """An SSE stream ended before naming the endpoint to post to."""
    CANNOT_OPEN = "cannot_open"
    """Opening the session failed some other way."""
    LISTING_FAILED = "listing_failed"
    LISTING_TIMEOUT = "listing_timeout"
    """A health check's `tools/list` got no answer: the session is given up."""
    POOL_CLOSING = "pool_closing"
    """The pool closed while the session was opening."""
    POOL_NOT_OPEN = "pool_not_open"
    SERVER_DOWN = "server_down"
    """The server failed and is inside its restart backoff."""
    # Before a call's request goes out.
    NO_SERVER = "no_server"
    TOOL_HIDDEN = "tool_hidden"
    BAD_TIMEOUT = "bad_timeout"
    NOT_SENT = "not_sent"
    """No session, or no tool listing, to send the request with (the cause says why)."""
    UNKNOWN_TOOL = "unknown_tool"
    QUEUED_TOO_LONG = "queued_too_long"
    """The deadline passed before the request went out."""
    # Refused on the way in (HTTP).
    SESSION_FORGOTTEN = "session_forgotten"
    """HTTP 404 for a request of a known session: the server restarted and forgot it."""
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    UNREACHABLE = "unreachable"
    # Sent, and then no answer.
    NO_ANSWER = "no_answer"
    """The deadline passed after the request went out."""
    CONNECTION_BROKE = "connection_broke"
    GATEWAY_ERROR = "gateway_error"
    SERVER_ERROR = "server_error"
    POOL_CLOSED = "pool_closed"
    SERVER_EXITED = "server_exited"
    CONNECTION_LOST = "connection_lost"
    SERVER_TIMEOUT = "server_timeout"
    # The server answered no.
    HTTP_REFUSED = "http_refused"
    INVALID_ANSWER = "invalid_answer"
    INVALID_REQUEST = "invalid_request"
    METHOD_NOT_FOUND = "method_not_found"
    """Also a tool that requires task augmentation (MCP 2025-11-25 tasks)."""
    INVALID_PARAMS = "invalid_params"
    TOOL_FAILED = "tool_failed"


_F = Failure
_K = ErrorKind
_D = Delivery
FAILURES: dict[Failure, tuple[ErrorKind | None, Delivery]] = {
    # Opening a session: no call's request can have gone out.
    _F.CANNOT_START: (_K.TOOL_UNAVAILABLE, _D.NOT_DELIVERED),
    _F.EXITED_AT_START: (_K.TOOL_UNAVAILABLE, _D.NOT_DELIVERED),
    _F.CLOSED_AT_HANDSHAKE: (_K.NETWORK, _D.NOT_DELIVERED),
    _F.HANDSHAKE_TIMEOUT: (_K.TIMEOUT, _D.NOT_DELIVERED),
    _F.REFUSED_AT_CONNECT: (_K.NETWORK, _D.NOT_DELIVERED),
    _F.BAD_URL: (_K.NETWORK, _D.NOT_DELIVERED),
    _F.NO_ENDPOINT: (_K.NETWORK, _D.NOT_DELIVERED),
    _F.CANNOT_OPEN: (_K.TOOL_UNAVAILABLE, _D.NOT_DELIVERED),
    _F.LISTING_FAILED: (_K.TOOL_UNAVAILABLE, _D.NOT_DELIVERED),
    _F.LISTING_TIMEOUT: (_K.TIMEOUT, _D.NOT_DELIVERED),
    _F.POOL_CLOSING: (_K.TOOL_UNAVAILABLE, _D.NOT_DELIVERED),
    _F.POOL_NOT_OPEN: (_K.TOOL_UNAVAILABLE, _D.NOT_DELIVERED),
    _F.SERVER_DOWN: (None, _D.NOT_DELIVERED),  # the kind is its last failure's
    # Before the request goes out: nothing can have run.
    _F.NO_SERVER: (_K.TOOL_UNAVAILABLE, _D.NOT_DELIVERED),
    _F.TOOL_HIDDEN: (_K.TOOL_UNAVAILABLE, _D.NOT_DELIVERED),
    _F.BAD_TIMEOUT: (_K.INVALID_ARGUMENTS, _D.NOT_DELIVERED),
    _F.NOT_SENT: (None, _D.NOT_DELIVERED),  # the kind is its cause's
    _F.UNKNOWN_TOOL: (_K.TOOL_UNAVAILABLE, _D.NOT_DELIVERED),
    _F.QUEUED_TOO_LONG: (_K.TIMEOUT, _D.NOT_DELIVERED),
    # Refused on the way in (HTTP): the request was not run.
    _F.SESSION_FORGOTTEN: (_K.NETWORK, _D.NOT_DELIVERED),
    _F.UNAUTHENTICATED: (_K.AUTHENTICATION, _D.NOT_DELIVERED),
    _F.FORBIDDEN: (_K.AUTHORIZATION, _D.NOT_DELIVERED),
    _F.UNREACHABLE: (_K.NETWORK, _D.NOT_DELIVERED),
    # Sent, and then no answer: it may have run.
    _F.NO_ANSWER: (_K.TIMEOUT, _D.AMBIGUOUS),
    _F.CONNECTION_BROKE: (_K.NETWORK, _D.AMBIGUOUS),
    _F.GATEWAY_ERROR: (_K.NETWORK, _D.AMBIGUOUS),
    _F.SERVER_ERROR: (_K.TOOL_ERROR, _D.AMBIGUOUS),
    _F.POOL_CLOSED: (_K.TOOL_UNAVAILABLE, _D.AMBIGUOUS),
    _F.SERVER_EXITED: (_K.TOOL_UNAVAILABLE, _D.AMBIGUOUS),
    _F.CONNECTION_LOST: (_K.NETWORK, _D.AMBIGUOUS),
    _F.SERVER_TIMEOUT: (_K.TIMEOUT, _D.AMBIGUOUS),
    # The server answered no.
    _F.HTTP_REFUSED: (_K.TOOL_ERROR, _D.ANSWERED),
    _F.INVALID_ANSWER: (_K.TOOL_ERROR, _D.ANSWERED),
    _F.INVALID_REQUEST: (_K.INVALID_ARGUMENTS, _D.ANSWERED),
    _F.METHOD_NOT_FOUND: (_K.TOOL_UNAVAILABLE, _D.ANSWERED),
    _F.INVALID_PARAMS: (_K.INVALID_ARGUMENTS, _D.ANSWERED),
    _F.TOOL_FAILED: (_K.TOOL_ERROR, _D.ANSWERED),
}
"""What each failure means: its kind, and whether the request may have reached the tool."""

_CODE_FAILURES: dict[int, Failure] = {
    mcp_types.INVALID_REQUEST: _F.INVALID_REQUEST,
    mcp_types.METHOD_NOT_FOUND: _F.METHOD_NOT_FOUND,
    mcp_types.INVALID_PARAMS: _F.INVALID_PARAMS,
    mcp_types.REQUEST_TIMEOUT: _F.SERVER_TIMEOUT,
    mcp_types.CONNECTION_CLOSED: _F.CONNECTION_LOST,
}

_SESSION_GONE = "Session terminated"  # the SDK's words for HTTP 404 on a known session
_SDK_HTTP_FALLBACK = "Server returned an error response"  # its words for an error status
# The TypeScript SDK answers a protocol error from a tool call as an `isError`
# result with this text (its McpError's message) instead of a JSON-RPC error.
_DISGUISED_PROTOCOL_ERROR = re.compile(r"MCP error (-3260[012]): ")


def failure_error(
    failure: Failure,
    message: str,
    *,
    server: str = "",
    tool: str = "",
    cause: ErrorKind | None = None,
) -> ToolCallError:
    """The error for a failure, classified by `FAILURES`.

    Args:
        failure: What happened.
        message: What went wrong, in the server's words where it gave some.
        server: The server's configured name (empty inside a transport).
        tool: The tool called, if any.
        cause: The kind of the failure behind this one, for the rows whose kind
            is their cause's (`NOT_SENT`, `SERVER_DOWN`).
    """
    kind, delivery = FAILURES[failure]
    kind = kind or cause or ErrorKind.TOOL_UNAVAILABLE
    return ToolCallError(kind, message, server=server, tool=tool, delivery=delivery)


def code_failure(code: int) -> Failure:
    """The failure a JSON-RPC error code a server answered with stands for."""
    return _CODE_FAILURES.get(code, _F.TOOL_FAILED)


def http_failure(note: HttpNote) -> Failure | None:
    """What an HTTP request's failure means, when its status or absence says."""
    if note.status is None:  # no response: the connection failed or broke off
        return _F.CONNECTION_BROKE if note.delivered else _F.UNREACHABLE
    if note.status == 401:
        return _F.UNAUTHENTICATED
    if note.status == 403:
        return _F.FORBIDDEN
    return None


def http_call_failure(note: HttpNote, words: str, *, legacy: bool) -> Failure | None:
    """What a call that failed over streamable HTTP means, or `None` to go by its JSON-RPC error.

    Args:
        note: What the HTTP layer saw of the call's request.
        words: The message of the JSON-RPC error the SDK raised.
        legacy: The session speaks MCP before 2026-07-28, where a 404 for a
            request carrying the session id means the server forgot the session.
    """
    if words == _SESSION_GONE or (legacy and note.status == 404):
        return _F.CONNECTION_BROKE if note.delivered else _F.SESSION_FORGOTTEN
    failure = http_failure(note)
    if failure is not None:
        return failure
    if words == _SDK_HTTP_FALLBACK and note.status is not None:
        return http_error_failure(note.status)  # an error status without a JSON-RPC body
    return None  # the body was a JSON-RPC error: classify it like any other


def http_error_failure(status: int) -> Failure:
    """What an HTTP error status means when no JSON-RPC answer came with it."""
    if status in (502, 503, 504):
        return _F.GATEWAY_ERROR  # a gateway in trouble: the server may have run it
    if status >= 500:
        return _F.SERVER_ERROR
    return _F.HTTP_REFUSED


def sse_post_failure(note: HttpNote) -> Failure:
    """What a request's failed POST over SSE means (its answer would have come on the stream)."""
    if note.status == 404:
        return _F.SESSION_FORGOTTEN  # the SDK's "could not find session"
    # Without a status `http_failure` always knows.
    return http_failure(note) or http_error_failure(note.status or 0)


def disguised_protocol_error(raw: mcp_types.CallToolResult) -> tuple[Failure, str] | None:
    """The protocol error an `isError` result stands for, with its words, when it is one."""
    if not raw.is_error or len(raw.content) != 1:
        return None
    block = raw.content[0]
    if not isinstance(block, mcp_types.TextContent):
        return None
    match = _DISGUISED_PROTOCOL_ERROR.match(block.text)
    return None if match is None else (code_failure(int(match.group(1))), block.text)
