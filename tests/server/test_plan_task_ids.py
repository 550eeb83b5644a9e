"""Planning task ids: signed for their caller, so only the caller reads one, even after a restart.

Over HTTP every request carries the same token, so the binding of an id to its
caller (`caller_of`) is shown here on the backend itself, with the store's key
read across two opens of the database as across a restart of taskorch.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from mcp_types import CallToolRequestParams, CallToolResult

from executor.tasks_wire import TaskStatus
from server.mcp.plan_tasks import PlanningTasks
from server.mcp.tasks_ext import _OFFER, TaskOffer
from server.mcp.tasks_memory import TaskControl
from server.service import TaskOrchestrator

pytestmark = pytest.mark.anyio


async def _start(tasks: PlanningTasks, owner: str, stop: anyio.Event) -> str:
    async def work(_: TaskControl) -> CallToolResult:
        await stop.wait()
        return CallToolResult(content=[])

    offer = TaskOffer(owner, CallToolRequestParams(name="create_plan"))
    token = _OFFER.set(offer)
    try:
        await tasks.run(work)
    finally:
        _OFFER.reset(token)
    assert offer.accepted is not None
    return offer.accepted.task_id


async def test_a_planning_task_is_its_callers_alone_before_and_after_a_restart(
    tmp_path: Path,
) -> None:
    db = tmp_path / "t.db"
    stop = anyio.Event()
    async with TaskOrchestrator(db_path=db, connect=False, resume=False) as orch:
        tasks = PlanningTasks(orch)
        task_id = await _start(tasks, "alice", stop)
        assert PlanningTasks.owns(task_id)
        working = await tasks.get(task_id, "alice")
        assert working is not None and working.status is TaskStatus.WORKING
        assert await tasks.get(task_id, "mallory") is None
        assert await tasks.cancel(task_id, "mallory") is None
        stop.set()
    async with TaskOrchestrator(db_path=db, connect=False, resume=False) as orch:
        tasks = PlanningTasks(orch)
        lost = await tasks.get(task_id, "alice")
        assert lost is not None and lost.status is TaskStatus.FAILED
        assert lost.error is not None and "restart" in lost.error["message"]
        assert await tasks.get(task_id, "mallory") is None
        token, created, mac = task_id.split(".")
        assert await tasks.get(f"{token}.{created}.{mac[::-1]}", "alice") is None
        assert await tasks.get(f"{token[::-1]}.{created}.{mac}", "alice") is None
        # The time written another way int() would take is another id, not this one.
        for respelt in (f"0x{created}", f" {created}", f"{created[0]}_{created[1:]}"):
            assert await tasks.get(f"{token}.{respelt}.{mac}", "alice") is None
    # Another database never issued it.
    async with TaskOrchestrator(db_path=tmp_path / "other.db", connect=False) as orch:
        assert await PlanningTasks(orch).get(task_id, "alice") is None


async def test_a_caller_has_a_bounded_number_of_plannings_at_once(tmp_path: Path) -> None:
    # Each planning is a model call that goes on after the client left: a flood of
    # create_plan tasks must not start model calls without end.
    from mcp.server.mcpserver.exceptions import ToolError

    from server.mcp.tasks_memory import MAX_WORKING_PER_CALLER

    stop = anyio.Event()
    async with TaskOrchestrator(db_path=tmp_path / "t.db", connect=False, resume=False) as orch:
        tasks = PlanningTasks(orch)
        started = [await _start(tasks, "alice", stop) for _ in range(MAX_WORKING_PER_CALLER)]
        with pytest.raises(ToolError, match=r"wait for one to finish or cancel one"):
            await _start(tasks, "alice", stop)
        assert await _start(tasks, "bob", stop)  # another caller is not held back
        await tasks.cancel(started[0], "alice")
        assert await _start(tasks, "alice", stop)  # room again
        stop.set()
