"""Progress snapshots and the ETA: from history, from the run's own mean, or honestly `None`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from executor.calls import ProgressFn
from executor.eta import DurationModel, estimate_remaining_s
from executor.records import EventKind
from executor.run import SchedulerConfig
from executor.status import PlanStatus, StepStatus
from executor.store import WriteBatch
from executor.validate import checked_graph
from tests.executor.scheduler_support import InProcessCaller, harness, save_confirmed


class Gates:
    """A tool that waits until the test opens its step's gate."""

    def __init__(self) -> None:
        self.gates: dict[str, anyio.Event] = {}

    def gate(self, tag: str) -> anyio.Event:
        return self.gates.setdefault(tag, anyio.Event())

    async def __call__(self, arguments: dict[str, Any], on_progress: ProgressFn | None) -> Any:
        await self.gate(str(arguments["tag"])).wait()
        return {"tag": arguments["tag"]}


def step(step_id: str, tool: str = "work", **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "server": "mem", "tool": tool, "arguments": {"tag": step_id}, **extra}


@pytest.mark.anyio
async def test_eta_is_none_until_something_is_known_then_uses_the_runs_mean(
    tmp_path: Path,
) -> None:
    gates = Gates()
    tools = InProcessCaller({("mem", "work"): gates})
    steps = [step("a"), step("b", depends_on=["a"]), step("c", depends_on=["b"])]
    async with harness(tmp_path, tools) as h:
        await save_confirmed(h.store, "p", steps)
        before = await h.scheduler.progress("p")
        assert before.status is PlanStatus.CONFIRMED and before.eta_s is None
        # Steps with no stored state yet still count towards the total.
        assert before.total == 3 and before.percent == 0.0

        run = await h.scheduler.start("p")
        async with h.scheduler.subscribe("p") as events:
            async for event in events:
                if event.kind is EventKind.STEP_STARTED and event.step_id == "a":
                    snap = run.progress()
                    assert snap.eta_s is None
                    assert snap.running_steps == ("a",) and snap.running == 1
                    gates.gate("a").set()
                if event.kind is EventKind.STEP_STARTED and event.step_id == "b":
                    snap = run.progress()
                    # One call measured: the rest of the chain is two more of those.
                    assert snap.eta_s is not None and snap.eta_s > 0
                    assert snap.counts[StepStatus.SUCCEEDED] == 1
                    assert snap.percent == pytest.approx(100 / 3)
                    gates.gate("b").set()
                    gates.gate("c").set()
        report = await run.wait()
        after = await h.scheduler.progress("p")

    assert report.status is PlanStatus.COMPLETED
    assert after.status is PlanStatus.COMPLETED and after.eta_s == 0.0
    assert after.percent == 100.0 and after.completed == 3


@pytest.mark.anyio
async def test_eta_from_history_follows_the_critical_path_and_the_concurrency(
    tmp_path: Path,
) -> None:
    tools = InProcessCaller({})
    chain = [step("c0"), *(step(f"c{i}", depends_on=[f"c{i - 1}"]) for i in range(1, 4))]
    loose = [step(f"x{i}") for i in range(4)]
    async with harness(tmp_path, tools, SchedulerConfig(max_parallel_steps=2)) as h:
        await h.store.write(WriteBatch(durations=[("mem", "work", 0.5)]))
        await save_confirmed(h.store, "p", [*chain, *loose])
        snap = await h.scheduler.progress("p")

    # Chain: 4 x 0.5 = 2.0 s; all work: 8 x 0.5 / 2 in flight = 2.0 s.
    assert snap.eta_s == pytest.approx(2.0)
    assert snap.total == 8 and snap.percent == 0.0


def test_estimate_is_the_larger_of_critical_path_and_spread_work() -> None:
    from executor.plan import Step

    steps = [
        Step(id="a", server="s", tool="t"),
        Step(id="b", server="s", tool="t", depends_on=("a",)),
        Step(id="c", server="s", tool="t"),
        Step(id="d", server="s", tool="t"),
    ]
    graph = checked_graph(steps)
    assert graph.height == {"a": 2, "b": 1, "c": 1, "d": 1}
    work = {"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0}
    assert estimate_remaining_s(graph, work, 4) == 2.0  # the chain a -> b
    assert estimate_remaining_s(graph, work, 1) == 4.0  # one at a time
    assert estimate_remaining_s(graph, {**work, "d": None}, 4) is None
    assert estimate_remaining_s(graph, {}, 4) == 0.0

    model = DurationModel()
    assert model.estimate("s", "t") is None
    model.observe("s", "u", 3.0)
    assert model.estimate("s", "t") == 3.0  # the run's mean over every tool
    model.observe("s", "t", 1.0)
    assert model.estimate("s", "t") == 1.0  # the run's mean for this tool
