"""taskorch as a client of the MCP Tasks extension: downstream tasks, followed to the end.

`TasksClient` declares `io.modelcontextprotocol/tasks` to every downstream
server (on 2026-07-28 wires) and claims the `resultType: "task"` answer of
`tools/call`. A call that comes back as a task is followed here:

1. the task id is handed to `TaskHooks.started` before anything else happens
   (the scheduler commits it with the attempt: after a crash the step resumes
   by polling the same task, so a tool's effect happens once);
2. `tasks/get` is polled at the server's `pollIntervalMs` (clamped); every
   answer is a sign of life for the call's idle timeout, and a change of status
   is reported as progress;
3. a completed task answers with its inlined result; a failed one raises its
   JSON-RPC error; a task that waits for input has its requests put to the
   host (`TaskHooks.ask`) and answered with `tasks/update`; when nobody can
   answer, it is cancelled and the call fails saying so;
4. when the call is cancelled for a reason that must reach the server (the
   plan was cancelled, the call timed out), `tasks/cancel` is sent, shielded.
   A cancellation that is not the caller's wish (taskorch shutting down) leaves
   the task running, to be resumed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
from mcp.client.extension import ClaimContext, ClientExtension, ResultClaim
from mcp.client.session import ClientSession
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, ErrorData
from mcp_types.jsonrpc import INTERNAL_ERROR

from executor.errors import CannotAsk
from executor.tasks_wire import (
    TASKS_EXTENSION,
    CancelTaskRequest,
    CreateTaskResult,
    DetailedTask,
    GetTaskRequest,
    TaskAck,
    TaskIdParams,
    TaskStatus,
    UpdateTaskParams,
    UpdateTaskRequest,
)

__all__ = [
    "MAX_POLL_S",
    "MIN_POLL_S",
    "TaskFollow",
    "TaskHooks",
    "TasksClient",
    "current_follow",
    "follow_task",
    "following",
    "reset_following",
]

MIN_POLL_S = 0.05
"""Never poll faster than this, whatever the server suggests."""
MAX_POLL_S = 5.0
"""Never wait longer than this between polls (a sign of life for the idle timeout)."""
DEFAULT_POLL_S = 1.0
"""The interval when the server suggests none."""
CANCEL_WAIT_S = 5.0
"""How long a `tasks/cancel` may take before the call gives up on it."""


class TaskHooks(Protocol):
    """What the caller of a tool wants to hear about a downstream task."""

    async def started(self, task_id: str) -> None:
        """The call became task `task_id`; return once that is durable."""

    def cancel_downstream(self) -> bool:
        """Whether a cancellation of the call should cancel the task too."""

    def resuming(self) -> str | None:
        """A task to follow instead of calling the tool (recorded before a crash)."""

    async def ask(self, server: str, tool: str, request: dict[str, Any]) -> dict[str, Any]:
        """Put the tool's request (`method`, `params`) to the host; the answer as wire JSON.

        Raises:
            CannotAsk: Nobody can answer it (the message says why).
        """


@dataclass(eq=False)
class TaskFollow:
    """One call's connection to the poll loop (set by the pool around a call)."""

    hooks: TaskHooks | None
    """The scheduler's hooks; `None` for a caller that keeps no record."""
    alive: Callable[[], None]
    """Called on every answer from the server (pushes the idle deadline out)."""
    report: Callable[[float, float | None, str | None], Awaitable[None]]
    """Forwards a status change as progress."""
    timed_out: Callable[[], bool]
    """Whether the call's own deadline passed (then the task is cancelled too)."""
    pause: Callable[[], None] = lambda: None
    """Called while a person is asked something: no idle deadline meanwhile."""
    tool: str | None = None
    """The tool called."""
    server: str | None = None
    """The server called."""
    task_id: str | None = None
    """The downstream task, once there is one."""


_FOLLOW: ContextVar[TaskFollow | None] = ContextVar("taskorch_task_follow", default=None)


def following(follow: TaskFollow) -> Token[TaskFollow | None]:
    """Make `follow` the current call's; `reset_following` with the token undoes it."""
    return _FOLLOW.set(follow)


def reset_following(token: Token[TaskFollow | None]) -> None:
    """Undo `following`."""
    _FOLLOW.reset(token)


def current_follow() -> TaskFollow | None:
    """The call being made in this context, if the pool is making one."""
    return _FOLLOW.get()


def _poll_s(task: DetailedTask | CreateTaskResult) -> float:
    ms = task.poll_interval_ms
    return DEFAULT_POLL_S if ms is None else min(max(ms / 1000, MIN_POLL_S), MAX_POLL_S)


def _progress_message(task: DetailedTask) -> str:
    # The server's own sentence when it has one (it may be another taskorch's step news).
    return task.status_message or f"downstream task {task.status.value}"


async def _cancel(session: ClientSession, task_id: str) -> None:
    with anyio.CancelScope(shield=True), anyio.move_on_after(CANCEL_WAIT_S):
        try:
            request = CancelTaskRequest(params=TaskIdParams(task_id=task_id))
            await session.send_request(request, TaskAck)
        except MCPError:
            pass  # already gone: nothing left to cancel


async def follow_task(
    session: ClientSession, task_id: str, follow: TaskFollow, first_wait_s: float
) -> CallToolResult:
    """Poll task `task_id` to its end and return its result.

    Raises:
        MCPError: The task failed (its own error), was cancelled by the server,
            waits for input taskorch cannot give, or a poll failed.
    """
    follow.task_id = task_id
    wait = first_wait_s
    seen: tuple[TaskStatus, str | None] | None = None
    changes = 0
    answered: set[str] = set()  # input requests answered already (never asked twice)
    try:
        while True:
            await anyio.sleep(wait)
            request = GetTaskRequest(params=TaskIdParams(task_id=task_id))
            task = await session.send_request(request, DetailedTask)
            follow.alive()
            wait = _poll_s(task)
            if (task.status, task.status_message) != seen:
                seen = (task.status, task.status_message)
                changes += 1
                await follow.report(changes, None, _progress_message(task))
            if task.status is TaskStatus.COMPLETED:
                return CallToolResult.model_validate(task.result or {"content": []})
            if task.status is TaskStatus.FAILED:
                raise MCPError.from_error_data(_error_data(task.error))
            if task.status is TaskStatus.CANCELLED:
                raise MCPError(INTERNAL_ERROR, "the server cancelled the task")
            if task.status is TaskStatus.INPUT_REQUIRED:
                why = await _answer_inputs(session, task, follow, answered)
                if why is not None:
                    await _cancel(session, task_id)
                    raise MCPError(INTERNAL_ERROR, f"{why}; the task was cancelled")
                wait = min(wait, MIN_POLL_S)  # soon: the answers may have ended the wait
    except anyio.get_cancelled_exc_class():
        hooks = follow.hooks
        if follow.timed_out() or (hooks is not None and hooks.cancel_downstream()):
            await _cancel(session, task_id)
        raise


async def _answer_inputs(
    session: ClientSession, task: DetailedTask, follow: TaskFollow, answered: set[str]
) -> str | None:
    """Put the task's new input requests to the host and send the answers; else say why not."""
    requests = {k: r for k, r in (task.input_requests or {}).items() if k not in answered}
    if not requests:
        return None  # answered; the server has not caught up yet
    hooks = follow.hooks
    if hooks is None or follow.server is None or follow.tool is None:
        return f"the task asks for input ({', '.join(sorted(requests))}) and nobody can answer"
    answers: dict[str, Any] = {}
    follow.pause()  # a person answers: no idle timeout meanwhile
    try:
        for key, request in requests.items():
            if not isinstance(request, dict):
                return f"the task's input request {key!r} is not a request"
            try:
                answers[key] = await hooks.ask(follow.server, follow.tool, request)
            except CannotAsk as exc:
                return str(exc)
    finally:
        follow.alive()
    update = UpdateTaskRequest(
        params=UpdateTaskParams(task_id=task.task_id, input_responses=answers)
    )
    await session.send_request(update, TaskAck)
    answered.update(answers)
    return None


def _error_data(error: dict[str, Any] | None) -> ErrorData:
    raw = error or {}
    code = raw.get("code")
    message = raw.get("message")
    return ErrorData(
        code=code if isinstance(code, int) else INTERNAL_ERROR,
        message=message if isinstance(message, str) else "the task failed and said nothing",
        data=raw.get("data"),
    )


async def _resolve(created: CreateTaskResult, ctx: ClaimContext) -> CallToolResult:
    follow = _FOLLOW.get()
    if follow is None:
        # Not a call the pool made (nothing records it): follow it all the same.
        follow = TaskFollow(None, lambda: None, _no_report, lambda: False)
    follow.alive()
    if follow.hooks is not None:
        try:
            # Recorded before anything else: from now on a crash resumes, never repeats.
            with anyio.CancelScope(shield=True):
                await follow.hooks.started(created.task_id)
        except BaseException:
            await _cancel(ctx.session, created.task_id)
            raise
    return await follow_task(ctx.session, created.task_id, follow, _poll_s(created))


async def _no_report(progress: float, total: float | None, message: str | None) -> None:
    return None


class TasksClient(ClientExtension):
    """Declares the tasks extension and follows the tasks downstream servers answer with."""

    identifier = TASKS_EXTENSION

    def claims(self) -> Sequence[ResultClaim[Any]]:
        """The `resultType: "task"` answer of `tools/call`."""
        return [ResultClaim(result_type="task", model=CreateTaskResult, resolve=_resolve)]
