"""The MCP Tasks extension's wire shapes (`io.modelcontextprotocol/tasks`, SEP-2663).

Both sides use them: the server face answers `tools/call` with a task handle
and serves `tasks/get|update|cancel`; the downstream pool, as a client, reads
task handles and polls them. The shapes are flat (a `CreateTaskResult` is a
`Result` and a `Task` in one object), durations are integer milliseconds
(`ttlMs`, `pollIntervalMs`), and the result of a finished task is inlined in
`tasks/get` (there is no `tasks/result` nor `tasks/list`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final, Literal

from mcp_types import RequestParams, Result
from mcp_types._types import Request
from pydantic import ConfigDict, Field

__all__ = [
    "TASKS_EXTENSION",
    "TERMINAL_TASK_STATUSES",
    "CancelTaskRequest",
    "CreateTaskResult",
    "DetailedTask",
    "GetTaskRequest",
    "TaskAck",
    "TaskIdParams",
    "TaskStatus",
    "TaskSupport",
    "UpdateTaskParams",
    "UpdateTaskRequest",
    "wire_time",
]

TASKS_EXTENSION: Final = "io.modelcontextprotocol/tasks"
"""The extension's identifier, declared under `capabilities.extensions`."""


class TaskStatus(StrEnum):
    """Where a task stands, as `tasks/get` reports it."""

    WORKING = "working"
    """Running."""
    INPUT_REQUIRED = "input_required"
    """Waiting for answers to its `inputRequests` (sent with `tasks/update`)."""
    COMPLETED = "completed"
    """Finished with a tool result (which may be a tool error, `isError`)."""
    FAILED = "failed"
    """Ended by a protocol-level error (the task's `error`)."""
    CANCELLED = "cancelled"
    """Cancelled (`tasks/cancel`)."""


TERMINAL_TASK_STATUSES: Final = frozenset(
    {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED}
)
"""Statuses a task never leaves."""


class TaskSupport(StrEnum):
    """Whether a tool runs as a task (the tool's `execution.taskSupport`)."""

    FORBIDDEN = "forbidden"
    """Never: the call answers inline."""
    OPTIONAL = "optional"
    """When the client declares the extension on the request."""
    REQUIRED = "required"
    """Only as a task: a client without the extension is refused (-32021)."""


def wire_time(moment: datetime) -> str:
    """An ISO-8601 UTC timestamp as the wire carries it (`2026-07-28T10:00:00.000Z`)."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _TaskFields(Result):
    """The fields every task shape carries, flat at the top level."""

    model_config = ConfigDict(extra="ignore")

    task_id: str
    """The task's id: opaque, and the `Mcp-Name` of every `tasks/*` request about it."""
    status: TaskStatus
    """Where the task stands."""
    created_at: str
    """When the task was created (ISO 8601)."""
    last_updated_at: str
    """When its status last changed (ISO 8601)."""
    ttl_ms: int | None = None
    """How long after creation the task stays readable; `None`: no limit."""
    poll_interval_ms: int | None = Field(default=None, gt=0)
    """How often the server suggests polling."""
    status_message: str | None = None
    """A sentence on where the task stands, for people."""


class CreateTaskResult(_TaskFields):
    """The answer to a `tools/call` that the server runs as a task."""

    result_type: Literal["task"] = "task"
    """The discriminator that tells this answer from a `CallToolResult`."""


class DetailedTask(_TaskFields):
    """The answer to `tasks/get`: the task, with its result, error or input requests."""

    result_type: Literal["complete"] = "complete"
    """`tasks/get` itself always completes, whatever the task's status."""
    result: dict[str, Any] | None = None
    """The tool's `CallToolResult` (wire JSON), once `completed`."""
    error: dict[str, Any] | None = None
    """A JSON-RPC error object (`code`, `message`, `data`), once `failed`."""
    input_requests: dict[str, Any] | None = None
    """What the task waits for, by key, while `input_required`."""


class TaskAck(Result):
    """The empty acknowledgement of `tasks/update` and `tasks/cancel`."""

    result_type: Literal["complete"] = "complete"
    """Always `complete`; the task's new state is read with `tasks/get`."""


class TaskIdParams(RequestParams):
    """The params of `tasks/get` and `tasks/cancel`."""

    task_id: str = Field(min_length=1, max_length=256)
    """The task's id."""


class UpdateTaskParams(TaskIdParams):
    """The params of `tasks/update`."""

    input_responses: dict[str, Any]
    """Answers to the task's `inputRequests`, by their keys."""


class GetTaskRequest(Request[TaskIdParams, Literal["tasks/get"]]):
    """`tasks/get`; its `taskId` travels as the `Mcp-Name` header too."""

    method: Literal["tasks/get"] = "tasks/get"
    params: TaskIdParams
    name_param = "taskId"


class UpdateTaskRequest(Request[UpdateTaskParams, Literal["tasks/update"]]):
    """`tasks/update`; its `taskId` travels as the `Mcp-Name` header too."""

    method: Literal["tasks/update"] = "tasks/update"
    params: UpdateTaskParams
    name_param = "taskId"


class CancelTaskRequest(Request[TaskIdParams, Literal["tasks/cancel"]]):
    """`tasks/cancel`; its `taskId` travels as the `Mcp-Name` header too."""

    method: Literal["tasks/cancel"] = "tasks/cancel"
    params: TaskIdParams
    name_param = "taskId"
