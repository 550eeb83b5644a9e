"""A database that cannot be written stops a run cleanly, and the host is told what broke.

The database is made full for real: `PRAGMA max_page_count` on taskorch's own
connection caps the file at a few pages more than it holds, so SQLite itself
answers "database or disk is full" to the first write that needs more room.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from mcp import Client

from executor.status import PlanStatus, StepStatus
from executor.store import SqliteStore, Store
from server.config import load_config
from server.mcp import build_server
from server.service import TaskOrchestrator
from tests.e2e.support import structured, tool_text, write_config
from tests.fixtures.launch import TINY_SERVER

pytestmark = pytest.mark.anyio

TINY = {"command": sys.executable, "args": [str(TINY_SERVER), "--name", "tiny"]}
BIG = "x" * 400_000
"""An output that needs about 200 new pages to store (twice: output and result)."""


async def _set_max_pages(store: Store, pages: int) -> int:
    """Cap the store's connection at `pages` pages (never below its size); returns the cap.

    Test plumbing: the store has no public knob for this, so its connection is used
    directly, under the store's own lock.
    """
    assert isinstance(store, SqliteStore)
    async with store._lock:
        db = store._db
        assert db is not None
        rows = list(await db.execute_fetchall(f"PRAGMA max_page_count = {int(pages)}"))
    return int(rows[0][0])


async def _page_count(store: Store) -> int:
    assert isinstance(store, SqliteStore)
    async with store._lock:
        db = store._db
        assert db is not None
        rows = list(await db.execute_fetchall("PRAGMA page_count"))
    return int(rows[0][0])


async def test_a_full_database_stops_the_run_says_why_frees_it_and_resumes_once_fixed(
    tmp_path: Path,
) -> None:
    config = load_config(write_config(tmp_path, servers=(), extra_servers={"tiny": TINY}))
    db = tmp_path / "t.db"
    async with TaskOrchestrator(config, db_path=db) as orch, Client(build_server(orch)) as client:
        made = structured(
            await client.call_tool(
                "create_plan",
                {
                    "query": "echo a lot",
                    "steps": [
                        {"id": "big", "server": "tiny", "tool": "echo", "arguments": {"text": BIG}}
                    ],
                },
            )
        )
        plan_id = made["plan_id"]
        structured(
            await client.call_tool(
                "confirm_plan", {"plan_id": plan_id, "plan_hash": made["plan_hash"]}
            )
        )
        # Room for the run's small writes (start, dispatch), not for the step's output.
        full = await _set_max_pages(orch.store, await _page_count(orch.store) + 16)

        failed = await client.call_tool("execute_plan", {"plan_id": plan_id})
        assert failed.is_error
        said = tool_text(failed)
        assert "database or disk is full" in said, said
        assert plan_id in said and "stopped" in said
        assert "execute_plan" in said  # how to go on once the cause is fixed
        assert orch.scheduler.active() == []

        # Seen from another connection: still executing, and nobody holds it any more.
        async with await SqliteStore.open(db) as other:
            [lease] = await other.list_leases()
            states = await other.get_step_states(plan_id, 1)
        assert (lease.plan_id, lease.owner) == (plan_id, None)
        assert states["big"].status is StepStatus.RUNNING

        # Still full: the next try fails the same clear way.
        again = await client.call_tool("execute_plan", {"plan_id": plan_id})
        assert again.is_error and "database or disk is full" in tool_text(again)

        # The cause fixed, execute_plan resumes the run where it stopped.
        assert await _set_max_pages(orch.store, full * 1000) > full
        done = structured(await client.call_tool("execute_plan", {"plan_id": plan_id}))
        assert done["status"] == "completed", done
        view = await orch.get_task_plan(plan_id)
        _, text, _ = await orch.step_output_text(plan_id, "big")
    [step] = view.steps
    assert step.status is StepStatus.SUCCEEDED
    assert text == BIG  # stored whole (the view shows a preview of it)
    assert view.status is PlanStatus.COMPLETED


async def test_numbers_too_large_for_the_database_are_a_clear_error(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, servers=("text",)))
    async with (
        TaskOrchestrator(config, db_path=tmp_path / "t.db") as orch,
        Client(build_server(orch)) as client,
    ):
        made = structured(
            await client.call_tool(
                "create_plan",
                {
                    "query": "slug",
                    "steps": [
                        {"id": "a", "server": "text", "tool": "slugify", "arguments": {"text": "A"}}
                    ],
                },
            )
        )
        result = await client.call_tool("get_plan", {"plan_id": made["plan_id"], "version": 2**70})
    assert result.is_error
    said = tool_text(result)
    assert f"has no version {2**70}" in said, said
    assert "its versions are 1" in said
