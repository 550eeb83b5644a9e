"""Two engines on one database file (as two processes would be): neither overrides the other."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from executor.calls import ProgressFn
from executor.errors import TransitionError, UserError
from executor.records import EventKind
from executor.run import Scheduler
from executor.status import PlanStatus, StepStatus
from executor.store import ExpectedPlanStatus, SqliteStore, WriteBatch
from tests.executor.scheduler_support import InProcessCaller, save_confirmed


@pytest.mark.anyio
async def test_a_batch_expecting_a_status_is_refused_once_the_status_changed(
    tmp_path: Path,
) -> None:
    async with await SqliteStore.open(tmp_path / "db") as store:
        plan = await save_confirmed(store, "p", [{"id": "a", "server": "s", "tool": "t"}])
        states = await store.get_step_states(plan.id, 1)
        running = states["a"].model_copy(update={"status": StepStatus.RUNNING, "attempts": 1})
        batch = WriteBatch(
            step_states=[running], expect=ExpectedPlanStatus("p", 1, PlanStatus.EXECUTING)
        )
        with pytest.raises(TransitionError, match="is confirmed, not executing"):
            await store.write(batch)
        assert (await store.get_step_states("p", 1))["a"].status is StepStatus.PENDING
        await store.update_plan_status("p", 1, PlanStatus.EXECUTING)
        await store.write(batch)
        assert (await store.get_step_states("p", 1))["a"].status is StepStatus.RUNNING


def _two_steps() -> list[dict[str, Any]]:
    return [
        {"id": "first", "server": "mem", "tool": "work", "arguments": {"tag": "first"}},
        {
            "id": "second",
            "server": "mem",
            "tool": "work",
            "arguments": {"tag": "second"},
            "depends_on": ["first"],
        },
    ]


@pytest.mark.anyio
async def test_a_cancel_from_another_engine_is_carried_out_by_the_engine_that_runs_it(
    tmp_path: Path,
) -> None:
    stopped = anyio.Event()

    async def endless(arguments: dict[str, Any], on_progress: ProgressFn | None) -> Any:
        try:
            await anyio.sleep_forever()
        finally:
            stopped.set()

    tools = InProcessCaller({("mem", "work"): endless})
    db = tmp_path / "shared.db"
    async with (
        await SqliteStore.open(db) as store_a,
        await SqliteStore.open(db) as store_b,
        Scheduler(store_a, tools) as engine_a,
        Scheduler(store_b, InProcessCaller({})) as engine_b,
    ):
        await save_confirmed(store_a, "p", _two_steps())
        run = await engine_a.start("p")
        async with engine_a.subscribe("p") as events:
            async for event in events:
                if event.kind is EventKind.STEP_STARTED:
                    break
        # Engine B has no run of its own: it asks A, and answers once A has stopped.
        cancelled = await engine_b.cancel("p")
        assert stopped.is_set()  # A's call in flight was cancelled before B answered
        assert cancelled.status is PlanStatus.CANCELLED
        report = await run.wait()
        stored = [e.kind for e in await store_b.get_events("p")]
        states = await store_b.get_step_states("p", 1)

    assert report.status is PlanStatus.CANCELLED
    assert [tag for tag, _ in tools.log.started] == ["first"]
    assert {k: v.status for k, v in states.items()} == {
        "first": StepStatus.CANCELLED,
        "second": StepStatus.CANCELLED,
    }
    # A wrote the end of its own run; B wrote nothing but its request.
    assert stored.count(EventKind.PLAN_FINISHED) == 1
    assert EventKind.STEP_CANCELLED in stored


@pytest.mark.anyio
async def test_a_plan_changed_by_another_engine_stops_the_run_at_its_next_write(
    tmp_path: Path,
) -> None:
    release = anyio.Event()

    async def slow(arguments: dict[str, Any], on_progress: ProgressFn | None) -> Any:
        if arguments["tag"] == "first":
            await release.wait()
        return {}

    tools = InProcessCaller({("mem", "work"): slow})
    db = tmp_path / "shared.db"
    async with (
        await SqliteStore.open(db) as store_a,
        await SqliteStore.open(db) as store_b,
        Scheduler(store_a, tools) as engine_a,
    ):
        await save_confirmed(store_a, "p", _two_steps())
        run = await engine_a.start("p")
        async with engine_a.subscribe("p") as events:
            async for event in events:
                if event.kind is EventKind.STEP_STARTED:
                    break
        # Another writer (an older taskorch, say) changes the plan under the run.
        await store_b.update_plan_status("p", 1, PlanStatus.CANCELLED)
        release.set()
        with pytest.raises(UserError, match="another process changed it"):
            await run.wait()
        states = await store_b.get_step_states("p", 1)

    assert [tag for tag, _ in tools.log.started] == ["first"]
    assert states["second"].status is StepStatus.PENDING  # nothing more was written
