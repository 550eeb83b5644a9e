"""An in-process `TaskBackend`: a tool body's work runs as a task in this process.

For tools whose work is a coroutine and that need no durability (a fixture, a
small server). A tool body calls `MemoryTasks.run(work)`: with a task offered
(see `server.mcp.tasks_ext`), the work starts in the background and the call is
answered with its handle; without one, the work runs inline. The work gets a
`TaskControl` to ask its client questions (the task is then
`input_required` until `tasks/update` answers every pending one).
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Final

import anyio
import anyio.abc
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, TextContent
from mcp_types.jsonrpc import INTERNAL_ERROR

from executor.errors import UserError
from executor.tasks_wire import TERMINAL_TASK_STATUSES, TaskStatus
from server.mcp.tasks_ext import TaskState, task_offer

__all__ = ["MAX_WORKING_PER_CALLER", "MemoryTasks", "TaskControl", "TaskWork"]


@dataclass
class _Question:
    request: dict[str, Any]
    answered: anyio.Event = field(default_factory=anyio.Event)
    answer: Any = None


class TaskControl:
    """What a task's work may do besides returning: ask its client for input."""

    def __init__(self, task: _Task | None) -> None:
        self._task = task

    async def ask(self, request: dict[str, Any]) -> Any:
        """Ask the client (an `elicitation/create` request, say) and wait for its answer.

        Raises:
            ToolError: The call is not running as a task, so there is no one to ask.
        """
        task = self._task
        if task is None:
            raise ToolError("this tool asks for input, which it can only do when run as a task")
        key = secrets.token_hex(6)
        question = _Question(request)
        task.questions[key] = question
        task.touch(TaskStatus.INPUT_REQUIRED)
        try:
            await question.answered.wait()
        finally:
            task.questions.pop(key, None)
            if not task.questions and task.status is TaskStatus.INPUT_REQUIRED:
                task.touch(TaskStatus.WORKING)
        return question.answer


TaskWork = Callable[[TaskControl], Awaitable[CallToolResult | str]]
"""A task's work: returns the tool's result (a string becomes one text block)."""


@dataclass
class _Task:
    task_id: str
    owner: str
    created_at: datetime
    ttl_ms: int
    poll_interval_ms: int
    status: TaskStatus = TaskStatus.WORKING
    updated_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    questions: dict[str, _Question] = field(default_factory=dict)
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)

    def touch(self, status: TaskStatus) -> None:
        if self.status not in TERMINAL_TASK_STATUSES:
            self.status = status
            self.updated_at = datetime.now(UTC)

    def state(self) -> TaskState:
        pending = {key: q.request for key, q in self.questions.items()}
        return TaskState(
            task_id=self.task_id,
            status=self.status,
            created_at=self.created_at,
            updated_at=self.updated_at,
            ttl_ms=self.ttl_ms,
            poll_interval_ms=self.poll_interval_ms,
            result=self.result,
            error=self.error,
            input_requests=pending or None,
        )


def _as_result(value: CallToolResult | str) -> CallToolResult:
    if isinstance(value, CallToolResult):
        return value
    return CallToolResult(content=[TextContent(type="text", text=value)])


def _dump(result: CallToolResult) -> dict[str, Any]:
    return result.model_dump(by_alias=True, mode="json", exclude_none=True)


MAX_WORKING_PER_CALLER: Final = 8
"""The most tasks one caller may have working at once (each may be a model call)."""


class MemoryTasks:
    """Tasks held in memory, run on this object's task group (enter it first).

    Args:
        ttl_ms: How long a task stays readable after it was created.
        poll_interval_ms: The polling interval suggested to clients.
    """

    def __init__(self, *, ttl_ms: int = 3_600_000, poll_interval_ms: int = 200) -> None:
        """Hold no task yet."""
        self.ttl_ms = ttl_ms
        self.poll_interval_ms = poll_interval_ms
        self._tasks: dict[str, _Task] = {}
        self._group: anyio.abc.TaskGroup | None = None

    async def __aenter__(self) -> MemoryTasks:
        """Start the task group the work runs on."""
        self._group = anyio.create_task_group()
        await self._group.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        """Cancel the work still running."""
        group, self._group = self._group, None
        assert group is not None
        group.cancel_scope.cancel()
        return await group.__aexit__(exc_type, exc, tb)

    def _runner(self) -> anyio.abc.TaskGroup:
        """The task group the work runs on (a subclass may lend one it does not own)."""
        if self._group is None:
            raise UserError("MemoryTasks is not started: enter it (async with) in the lifespan")
        return self._group

    def _new_id(self, owner: str, created_at: datetime) -> str:
        """A new task's id: unguessable (a subclass may sign it, say)."""
        return secrets.token_urlsafe(18)

    async def run(self, work: TaskWork) -> CallToolResult:
        """Run `work` as a task when one is offered, else inline; the call's answer."""
        offer = task_offer()
        if offer is None:
            return _as_result(await work(TaskControl(None)))
        group = self._runner()
        self._expire()
        working = sum(
            1
            for t in self._tasks.values()
            if t.status not in TERMINAL_TASK_STATUSES
            and secrets.compare_digest(t.owner, offer.owner)
        )
        if working >= MAX_WORKING_PER_CALLER:
            raise ToolError(
                f"{working} tasks of yours are still working (at most {MAX_WORKING_PER_CALLER} "
                "at once): wait for one to finish or cancel one (tasks/cancel)"
            )
        now = datetime.now(UTC)
        task = _Task(
            task_id=self._new_id(offer.owner, now),
            owner=offer.owner,
            created_at=now,
            updated_at=now,
            ttl_ms=self.ttl_ms,
            poll_interval_ms=self.poll_interval_ms,
        )
        self._tasks[task.task_id] = task
        group.start_soon(self._work, task, work)
        return offer.accept(task.state())

    async def _work(self, task: _Task, work: TaskWork) -> None:
        with task.scope:
            try:
                result = _as_result(await work(TaskControl(task)))
            except ToolError as exc:
                task.result = _dump(
                    CallToolResult(content=[TextContent(type="text", text=str(exc))], is_error=True)
                )
                task.touch(TaskStatus.COMPLETED)
            except Exception as exc:
                task.error = {"code": INTERNAL_ERROR, "message": f"{type(exc).__name__}: {exc}"}
                task.touch(TaskStatus.FAILED)
            else:
                task.result = _dump(result)
                task.touch(TaskStatus.COMPLETED)
        if task.scope.cancel_called:
            task.touch(TaskStatus.CANCELLED)

    def _expire(self) -> None:
        now = datetime.now(UTC)
        for task_id, task in list(self._tasks.items()):
            if task.created_at + timedelta(milliseconds=task.ttl_ms) < now:
                task.scope.cancel()
                del self._tasks[task_id]

    def _find(self, task_id: str, owner: str) -> _Task | None:
        self._expire()
        task = self._tasks.get(task_id)
        return task if task is not None and secrets.compare_digest(task.owner, owner) else None

    async def get(self, task_id: str, owner: str) -> TaskState | None:
        """The task, or `None` when `owner` has none by that id."""
        task = self._find(task_id, owner)
        return task.state() if task is not None else None

    async def cancel(self, task_id: str, owner: str) -> TaskState | None:
        """Cancel the task's work; it reads `cancelled` from now on."""
        task = self._find(task_id, owner)
        if task is None:
            return None
        if task.status not in TERMINAL_TASK_STATUSES:
            task.touch(TaskStatus.CANCELLED)
            task.scope.cancel()
        return task.state()

    async def update(
        self, task_id: str, owner: str, responses: Mapping[str, Any]
    ) -> TaskState | None:
        """Answer pending questions by key; unknown keys are ignored."""
        task = self._find(task_id, owner)
        if task is None:
            return None
        for key, answer in responses.items():
            question = task.questions.pop(key, None)
            if question is not None:
                question.answer = answer
                question.answered.set()
        if not task.questions and task.status is TaskStatus.INPUT_REQUIRED:
            task.touch(TaskStatus.WORKING)
        return task.state()
