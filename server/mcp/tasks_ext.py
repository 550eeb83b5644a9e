"""The MCP Tasks extension on the server side, on the SDK's public extension hooks.

`TasksExtension` adds `tasks/get`, `tasks/update` and `tasks/cancel` and wraps
`tools/call`. A call may become a task only when the request declares the
extension (in its capabilities, or per request in `_meta`), on a 2026-07-28
wire. The extension never decides *how* work runs: the tool body does, through
the `TaskOffer` it finds with `task_offer()`. A body that accepts the offer
has created a task (durably, before it accepts) and returns; the extension
answers the call with that task's handle instead of the body's result.
Everything else about a task (its state, its answers, its cancellation) comes
from a `TaskBackend`.

Rules kept here, once, for every backend:
- a tool whose support is `required` refuses a client without the extension
  (-32021, naming the capability it needs); `tasks/*` from such a client too;
- `tasks/*` over HTTP must carry `Mcp-Name: <taskId>` (-32020 otherwise);
- a task belongs to its caller (`caller_of`): another caller's id reads as
  unknown (-32602), exactly like an id that never existed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from datetime import datetime
from typing import Any, Protocol

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.extension import Extension, MethodBinding
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import MCP_NAME_HEADER, decode_header_value
from mcp_types import CallToolRequestParams, CallToolResult
from mcp_types.jsonrpc import HEADER_MISMATCH, INVALID_PARAMS, MISSING_REQUIRED_CLIENT_CAPABILITY
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, ConfigDict
from starlette.requests import Request

from executor.tasks_wire import (
    TASKS_EXTENSION,
    CreateTaskResult,
    DetailedTask,
    TaskAck,
    TaskIdParams,
    TaskStatus,
    TaskSupport,
    UpdateTaskParams,
    wire_time,
)

__all__ = [
    "TaskBackend",
    "TaskOffer",
    "TaskState",
    "TasksExtension",
    "caller_of",
    "declares_tasks",
    "missing_capability",
    "task_offer",
]

_CLIENT_CAPABILITIES_KEY = "io.modelcontextprotocol/clientCapabilities"


class TaskState(BaseModel):
    """One task as its backend knows it; the extension turns it into wire shapes."""

    model_config = ConfigDict(frozen=True)

    task_id: str
    """The task's id (unguessable: it is the only thing a caller needs to read it)."""
    status: TaskStatus
    """Where the task stands."""
    created_at: datetime
    """When it was created."""
    updated_at: datetime
    """When its status last changed."""
    ttl_ms: int
    """How long after creation it stays readable."""
    poll_interval_ms: int
    """How often to poll it."""
    status_message: str | None = None
    """A sentence on where it stands."""
    result: dict[str, Any] | None = None
    """The `CallToolResult` (wire JSON) once completed."""
    error: dict[str, Any] | None = None
    """The JSON-RPC error object once failed."""
    input_requests: dict[str, Any] | None = None
    """Pending input requests, by key, while input is required."""

    def created(self) -> CreateTaskResult:
        """The handle a `tools/call` answers with."""
        return CreateTaskResult(
            task_id=self.task_id,
            status=self.status,
            created_at=wire_time(self.created_at),
            last_updated_at=wire_time(self.updated_at),
            ttl_ms=self.ttl_ms,
            poll_interval_ms=self.poll_interval_ms,
            status_message=self.status_message,
        )

    def detailed(self) -> DetailedTask:
        """What `tasks/get` answers: only the payload its status allows."""
        status = self.status
        return DetailedTask(
            task_id=self.task_id,
            status=status,
            created_at=wire_time(self.created_at),
            last_updated_at=wire_time(self.updated_at),
            ttl_ms=self.ttl_ms,
            poll_interval_ms=self.poll_interval_ms,
            status_message=self.status_message,
            result=self.result if status is TaskStatus.COMPLETED else None,
            error=self.error if status is TaskStatus.FAILED else None,
            input_requests=self.input_requests if status is TaskStatus.INPUT_REQUIRED else None,
        )


class TaskBackend(Protocol):
    """Where tasks live: answers the `tasks/*` methods for the tasks it created."""

    async def get(self, task_id: str, owner: str) -> TaskState | None:
        """The task, or `None` when `owner` has no task by that id."""

    async def cancel(self, task_id: str, owner: str) -> TaskState | None:
        """Cancel the task (a finished one stays as it is); `None` when unknown."""

    async def update(
        self, task_id: str, owner: str, responses: Mapping[str, Any]
    ) -> TaskState | None:
        """Deliver answers to input requests (unknown keys are ignored); `None` when unknown."""


class TaskOffer:
    """A `tools/call` that may be answered with a task: what the tool body sees."""

    def __init__(self, owner: str, params: CallToolRequestParams) -> None:
        """Offer a task for one call by `owner`."""
        self.owner = owner
        """Who the task would belong to (see `caller_of`)."""
        self.params = params
        """The call."""
        self.accepted: TaskState | None = None
        """The task the body created, once it accepted."""

    def accept(self, state: TaskState) -> CallToolResult:
        """Answer this call with `state`'s handle; the task must already be readable.

        Returns:
            What the tool body returns. The extension answers with the handle
            instead; it is marked an error so that no output schema is checked
            against it on the way.
        """
        self.accepted = state
        return CallToolResult(content=[], is_error=True)


_OFFER: ContextVar[TaskOffer | None] = ContextVar("taskorch_task_offer", default=None)


def task_offer() -> TaskOffer | None:
    """The offer for the `tools/call` being handled, or `None` when it must answer inline."""
    return _OFFER.get()


def declares_tasks(ctx: ServerRequestContext[Any, Any]) -> bool:
    """Whether this request's client declared the extension, on a wire that has it."""
    if ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
        return False
    capabilities = ctx.session.client_capabilities
    declared = capabilities.extensions if capabilities is not None else None
    if declared and TASKS_EXTENSION in declared:
        return True
    # A per-request declaration, when the envelope and the session disagree.
    meta: Mapping[str, Any] = ctx.meta or {}
    per_request = meta.get(_CLIENT_CAPABILITIES_KEY)
    if isinstance(per_request, Mapping):
        extensions = per_request.get("extensions")
        return isinstance(extensions, Mapping) and TASKS_EXTENSION in extensions
    return False


def _headers(ctx: ServerRequestContext[Any, Any]) -> Mapping[str, str] | None:
    """The HTTP request's headers; `None` off HTTP (stdio has no routing headers)."""
    request = ctx.request
    return request.headers if isinstance(request, Request) else None


def caller_of(ctx: ServerRequestContext[Any, Any]) -> str:
    """Who is calling, as far as tasks are concerned.

    The credential the request carried (its `Authorization` header, hashed: the
    secret itself is never kept), else the empty string: the one local user of
    a stdio server or of an HTTP server without a token.
    """
    headers = _headers(ctx)
    credential = headers.get("authorization") if headers is not None else None
    if not credential:
        return ""
    return hashlib.sha256(credential.encode()).hexdigest()


def missing_capability(what: str) -> MCPError:
    """The error for a client that needs the tasks extension for `what` and did not declare it."""
    return MCPError(
        code=MISSING_REQUIRED_CLIENT_CAPABILITY,
        message=f"{what} needs the tasks extension: declare {TASKS_EXTENSION!r} "
        "under capabilities.extensions (or in the request's _meta clientCapabilities)",
        data={"requiredCapabilities": {"extensions": {TASKS_EXTENSION: {}}}},
    )


class TasksExtension(Extension):
    """`io.modelcontextprotocol/tasks` for an `MCPServer`.

    Args:
        backend: Answers `tasks/*` for the tasks the tool bodies create.
        support: Each tool's task support by name (a mapping, or a function);
            a tool it does not name is `forbidden`.
    """

    identifier = TASKS_EXTENSION

    def __init__(
        self,
        backend: TaskBackend,
        support: Mapping[str, TaskSupport] | Callable[[str], TaskSupport],
    ) -> None:
        """Serve `backend`'s tasks; `support` says which tools may run as tasks."""
        self.backend = backend
        self._support = support

    def support(self, tool: str) -> TaskSupport:
        """Whether `tool` may, must or must not run as a task."""
        if callable(self._support):
            return self._support(tool)
        return self._support.get(tool, TaskSupport.FORBIDDEN)

    def methods(self) -> Sequence[MethodBinding]:
        """`tasks/get`, `tasks/update` and `tasks/cancel`, on 2026-07-28 wires."""
        versions = frozenset(MODERN_PROTOCOL_VERSIONS)
        return [
            MethodBinding("tasks/get", TaskIdParams, self._get, versions),
            MethodBinding("tasks/update", UpdateTaskParams, self._update, versions),
            MethodBinding("tasks/cancel", TaskIdParams, self._cancel, versions),
        ]

    async def intercept_tool_call(
        self,
        params: CallToolRequestParams,
        ctx: ServerRequestContext[Any, Any],
        call_next: CallNext,
    ) -> HandlerResult:
        """Offer a task to the tool body when the tool and the client allow one."""
        support = self.support(params.name)
        if support is TaskSupport.FORBIDDEN:
            return await call_next(ctx)
        if not declares_tasks(ctx):
            if support is TaskSupport.REQUIRED:
                raise missing_capability(f"tool {params.name!r} runs only as a task: it")
            return await call_next(ctx)
        offer = TaskOffer(caller_of(ctx), params)
        token = _OFFER.set(offer)
        try:
            result = await call_next(ctx)
        finally:
            _OFFER.reset(token)
        # A body that did not accept answered inline (a refusal, a question): that stands.
        return offer.accepted.created() if offer.accepted is not None else result

    def _check(self, ctx: ServerRequestContext[Any, Any], task_id: str) -> str:
        """Refuse a `tasks/*` request the client may not send; return its owner."""
        if not declares_tasks(ctx):
            raise missing_capability(f"{ctx.method}")
        headers = _headers(ctx)
        if headers is not None and decode_header_value(headers.get(MCP_NAME_HEADER)) != task_id:
            raise MCPError(
                code=HEADER_MISMATCH,
                message=f"the {MCP_NAME_HEADER} header must be the taskId of the request "
                f"({task_id!r}); send it as the header and in params",
            )
        return caller_of(ctx)

    @staticmethod
    def _unknown(task_id: str) -> MCPError:
        return MCPError(
            code=INVALID_PARAMS,
            message=f"no task {task_id!r}: it never existed, expired, or belongs to another "
            "caller; use the taskId the tools/call answer gave",
        )

    async def _get(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> DetailedTask:
        owner = self._check(ctx, params.task_id)
        state = await self.backend.get(params.task_id, owner)
        if state is None:
            raise self._unknown(params.task_id)
        return state.detailed()

    async def _update(
        self, ctx: ServerRequestContext[Any, Any], params: UpdateTaskParams
    ) -> TaskAck:
        owner = self._check(ctx, params.task_id)
        if await self.backend.update(params.task_id, owner, params.input_responses) is None:
            raise self._unknown(params.task_id)
        return TaskAck()

    async def _cancel(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> TaskAck:
        owner = self._check(ctx, params.task_id)
        if await self.backend.cancel(params.task_id, owner) is None:
            raise self._unknown(params.task_id)
        return TaskAck()
