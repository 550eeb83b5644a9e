"""taskorch's own MCP tasks: a host's task is a plan's run, kept in the store.

`RunTasks` is the `TaskBackend` of taskorch's `TasksExtension`. `execute_plan`,
once its approval round is done, hands the run to `start`: the run starts (not
waited for), the task is recorded with its caller as owner, and the call is
answered with the task's handle. The task's state is read from the run each
time it is asked for, so it survives a restart of taskorch as the run does:

| the plan       | the task                                                          |
|----------------|-------------------------------------------------------------------|
| confirmed, executing | `working`, with progress in `statusMessage`                  |
| interrupted    | `input_required`: one question per interrupted step (rerun/skip)  |
| completed      | `completed`, with what `execute_plan(wait=true)` answers          |
| failed, rejected | `failed`, the report in the error's `data`                      |
| cancelled      | `cancelled`                                                       |

A downstream tool's question (elicitation) during the run also makes the task
`input_required`, the question naming the server, tool and step. `tasks/update`
answers the questions: a tool's answer goes back to the tool at once; once
every interrupted step has its decision the run goes on with them.
`tasks/cancel` cancels the run.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import anyio
from mcp_types import CallToolResult
from mcp_types.jsonrpc import INTERNAL_ERROR

from executor.asking import DownstreamQuestion, HostAsker
from executor.plan import Plan
from executor.records import StepState
from executor.run import Decision
from executor.status import PlanStatus, StepStatus
from executor.tasks_wire import TaskStatus
from server.mcp.tasks_ext import TaskOffer, TaskState
from server.service import TaskOrchestrator
from server.views import RunView

__all__ = ["POLL_INTERVAL_MS", "TASK_TTL_MS", "RunTasks"]

TASK_TTL_MS: Final = 30 * 24 * 3600 * 1000
"""A task reads as long as its plan is kept; this is what hosts are told (30 days)."""
POLL_INTERVAL_MS: Final = 1000
"""How often hosts are asked to poll."""

_KEY_PREFIX: Final = "step-"
_ASK_PREFIX: Final = "ask-"
_ACTIONS: Final = ("accept", "decline", "cancel")


@dataclass
class _Question:
    request: dict[str, Any]
    answered: anyio.Event = field(default_factory=anyio.Event)
    answer: Any = None


AnswerFn = Callable[[RunView], Awaitable[CallToolResult]]
"""Builds the tool result `execute_plan(wait=true)` answers with, from a report."""


def _updated_at(report: RunView, created_at: datetime) -> datetime:
    moments = [created_at]
    for step in report.steps:
        moments += [m for m in (step.started_at, step.finished_at) if m is not None]
    return max(m if m.tzinfo else m.replace(tzinfo=UTC) for m in moments)


def _latest_step(plan: Plan, states: Mapping[str, StepState]) -> str | None:
    """The step that changed last, worded like `execute_plan`'s progress notifications."""
    moved = [s for s in states.values() if s.started_at is not None]
    if not moved:
        return None
    last = max(moved, key=lambda s: max(m for m in (s.started_at, s.finished_at) if m))
    step = plan.step(last.step_id)
    return f"{step.id} ({step.server}.{step.tool}): {last.status.value}"


def _question(plan_id: str, step_id: str, reason: str) -> dict[str, Any]:
    message = (
        f"Plan {plan_id}: step {step_id!r} may or may not have taken effect ({reason}). "
        "'rerun' calls it again (its effect may happen twice); 'skip' treats it as done "
        "without an output."
    )
    schema = {
        "type": "object",
        "properties": {"decision": {"type": "string", "enum": ["rerun", "skip"]}},
        "required": ["decision"],
    }
    return {
        "method": "elicitation/create",
        "params": {"mode": "form", "message": message, "requestedSchema": schema},
    }


def _decision(answer: Any) -> Decision | None:
    if not isinstance(answer, Mapping) or answer.get("action") != "accept":
        return None
    content = answer.get("content")
    choice = content.get("decision") if isinstance(content, Mapping) else None
    return choice if choice in ("rerun", "skip") else None


class RunTasks:
    """Host tasks backed by plan runs (see the module docstring).

    Args:
        orchestrator: The open orchestrator whose runs the tasks are.
        answer: Builds the completed task's result from the final report.
    """

    def __init__(self, orchestrator: TaskOrchestrator, answer: AnswerFn) -> None:
        """Serve tasks over `orchestrator`'s runs."""
        self._orch = orchestrator
        self._answer = answer
        # Decisions given so far, until every interrupted step has one (then they apply).
        self._decisions: dict[str, dict[str, Decision]] = {}
        # Questions of downstream tools waiting for the host, by task, then by key.
        self._questions: dict[str, dict[str, _Question]] = {}
        # What asks each unfinished task's host (registered for each run of its plan).
        self._asks: dict[str, HostAsker] = {}

    async def start(
        self, offer: TaskOffer, plan_id: str, on_interrupted: Decision | None
    ) -> CallToolResult:
        """Start the plan's run and answer the call with a task for it."""
        task_id = secrets.token_urlsafe(24)
        # Before the run starts: its first question may come at once.
        self._listen(task_id, plan_id)
        try:
            report = await self._orch.execute_task_plan(
                plan_id, wait=False, on_interrupted=on_interrupted
            )
            now = datetime.now(UTC)
            await self._orch.store.add_host_task(task_id, offer.owner, plan_id, report.version, now)
        except BaseException:
            self._orch.scheduler.askers.clear(plan_id, self._asks.pop(task_id))
            raise
        return offer.accept(await self._state(task_id, plan_id, now, report))

    def _listen(self, task_id: str, plan_id: str) -> None:
        """Send the questions the plan's downstream tools ask to this task's host.

        The scheduler forgets who asks once a run stops: this registers the task's
        asker again for the next run of its plan (after decisions, or a restart).
        """
        known = self._asks.get(task_id)
        if known is not None:
            self._orch.scheduler.askers.set(plan_id, known)
            return

        async def ask(question: DownstreamQuestion) -> dict[str, Any]:
            pending = _Question(question.for_host())
            key = f"{_ASK_PREFIX}{secrets.token_hex(6)}"
            asked = self._questions.setdefault(task_id, {})
            asked[key] = pending
            try:
                await pending.answered.wait()
            finally:
                asked.pop(key, None)
            answer = pending.answer
            if question.method != "elicitation/create":
                return dict(answer) if isinstance(answer, Mapping) else {}
            if isinstance(answer, Mapping) and answer.get("action") in _ACTIONS:
                return dict(answer)
            return {"action": "cancel"}

        self._asks[task_id] = ask
        self._orch.scheduler.askers.set(plan_id, ask)

    async def _state(
        self, task_id: str, plan_id: str, created_at: datetime, report: RunView
    ) -> TaskState:
        status = report.status
        progress = report.progress
        plan, states = await self._orch.plan_with_states(plan_id, report.version)
        news = _latest_step(plan, states)
        fields: dict[str, Any] = {
            "task_id": task_id,
            "created_at": created_at,
            "updated_at": _updated_at(report, created_at),
            "ttl_ms": TASK_TTL_MS,
            "poll_interval_ms": POLL_INTERVAL_MS,
            "status_message": (
                f"{news or report.message} ({progress.completed} of {progress.total} steps "
                f"done, {progress.running} running; the plan is {status.value})"
            ),
        }
        if status is PlanStatus.COMPLETED:
            result = await self._answer(report)
            dumped = result.model_dump(by_alias=True, mode="json", exclude_none=True)
            return TaskState(status=TaskStatus.COMPLETED, result=dumped, **fields)
        if status is PlanStatus.CANCELLED:
            return TaskState(status=TaskStatus.CANCELLED, **fields)
        if status in (PlanStatus.FAILED, PlanStatus.REJECTED):
            error = {
                "code": INTERNAL_ERROR,
                "message": f"the plan {status.value}: {report.message}",
                "data": report.model_dump(mode="json"),
            }
            return TaskState(status=TaskStatus.FAILED, error=error, **fields)
        asked = {key: q.request for key, q in self._questions.get(task_id, {}).items()}
        if status is PlanStatus.INTERRUPTED or asked:
            answered = self._decisions.get(task_id, {})
            questions = asked | {
                f"{_KEY_PREFIX}{step.id}": _question(
                    plan_id, step.id, step.error.message if step.error else "interrupted"
                )
                for step in report.steps
                if step.status is StepStatus.INTERRUPTED and step.id not in answered
            }
            if questions:
                return TaskState(
                    status=TaskStatus.INPUT_REQUIRED, input_requests=questions, **fields
                )
        return TaskState(status=TaskStatus.WORKING, **fields)

    async def get(self, task_id: str, owner: str) -> TaskState | None:
        """The task, mapped from its run as it stands now."""
        task = await self._orch.store.get_host_task(task_id)
        if task is None or not secrets.compare_digest(task.owner, owner):
            return None
        report = await self._orch.execution_report(task.plan_id)
        if report.finished:
            self._asks.pop(task_id, None)
        elif self._orch.scheduler.askers.asker(task.plan_id) is None:
            self._listen(task_id, task.plan_id)  # again, after a restart of taskorch
        return await self._state(task_id, task.plan_id, task.created_at, report)

    async def cancel(self, task_id: str, owner: str) -> TaskState | None:
        """Cancel the run (a finished one stays as it is)."""
        state = await self.get(task_id, owner)
        if state is None or state.status in (
            TaskStatus.COMPLETED,
            TaskStatus.FAILED,
            TaskStatus.CANCELLED,
        ):
            return state
        task = await self._orch.store.get_host_task(task_id)
        assert task is not None
        await self._orch.cancel_task_execution(task.plan_id)
        return await self.get(task_id, owner)

    async def update(
        self, task_id: str, owner: str, responses: Mapping[str, Any]
    ) -> TaskState | None:
        """Take decisions for interrupted steps; the run goes on once all are given."""
        state = await self.get(task_id, owner)
        if state is None or state.status is not TaskStatus.INPUT_REQUIRED:
            return state
        pending = state.input_requests or {}
        asked = self._questions.get(task_id, {})
        decided = self._decisions.setdefault(task_id, {})
        for key, answer in responses.items():
            question = asked.pop(key, None)
            if question is not None:
                question.answer = answer
                question.answered.set()
                continue
            choice = _decision(answer)
            if key in pending and key.startswith(_KEY_PREFIX) and choice is not None:
                decided[key.removeprefix(_KEY_PREFIX)] = choice
        steps = [key for key in pending if key.startswith(_KEY_PREFIX)]
        if steps and all(key.removeprefix(_KEY_PREFIX) in decided for key in steps):
            task = await self._orch.store.get_host_task(task_id)
            assert task is not None
            decisions = self._decisions.pop(task_id)
            self._listen(task_id, task.plan_id)  # the run that goes on asks this host too
            await self._orch.execute_task_plan(task.plan_id, wait=False, on_interrupted=decisions)
        return await self.get(task_id, owner)
