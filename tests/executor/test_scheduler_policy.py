"""Where a step's retry policy, timeout and limits come from: step, else agent, else config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from executor.calls import ProgressFn
from executor.catalog import ToolAnnotations
from executor.errors import Delivery, ErrorKind, ToolCallError
from executor.plan import RetryPolicy
from executor.policy import AgentConfig, AgentLimits
from executor.records import EventKind
from executor.run import SchedulerConfig
from executor.status import PlanStatus, StepStatus
from tests.executor.scheduler_support import InProcessCaller, collect, harness, save_confirmed


def always_failing() -> InProcessCaller:
    async def fail(arguments: dict[str, Any], on_progress: ProgressFn | None) -> Any:
        # Never delivered, so safe to retry whatever the tool.
        refused = Delivery.NOT_DELIVERED
        raise ToolCallError(ErrorKind.NETWORK, "connection refused", delivery=refused)

    return InProcessCaller({("mem", "fail"): fail})


def fail_step(step_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "server": "mem", "tool": "fail", "on_error": "continue", **extra}


@pytest.mark.anyio
async def test_retry_policy_comes_from_the_step_then_the_agent_then_the_config(
    tmp_path: Path,
) -> None:
    tiny = {"initial_interval_s": 0.001, "maximum_interval_s": 0.001, "jitter": 0}
    config = SchedulerConfig(default_retry=RetryPolicy(maximum_attempts=4, **tiny))
    agent = AgentConfig(name="careful", retry=RetryPolicy(maximum_attempts=3, **tiny))
    async with harness(tmp_path, always_failing(), config) as h:
        await h.store.save_agent(agent)
        await save_confirmed(
            h.store,
            "with_agent",
            [fail_step("own", retry={"maximum_attempts": 2, **tiny}), fail_step("agents")],
            agent="careful",
        )
        await save_confirmed(h.store, "no_agent", [fail_step("default")])
        with_agent = await h.scheduler.execute("with_agent")
        no_agent = await h.scheduler.execute("no_agent")

    assert [s.attempts for s in with_agent.steps] == [2, 3]
    assert [s.attempts for s in no_agent.steps] == [4]
    assert all(s.error is not None and s.error.kind is ErrorKind.NETWORK for s in no_agent.steps)


@pytest.mark.anyio
async def test_backoff_grows_and_is_capped(tmp_path: Path) -> None:
    retry = {
        "initial_interval_s": 0.01,
        "backoff_coefficient": 2.0,
        "maximum_interval_s": 0.03,
        "maximum_attempts": 5,
        "jitter": 0.1,
    }
    async with harness(tmp_path, always_failing()) as h:
        await save_confirmed(h.store, "p", [fail_step("s", retry=retry)])
        run = await h.scheduler.start("p")
        events = await collect(h.scheduler.subscribe("p"))
        report = await run.wait()

    delays = [e.data["delay_s"] for e in events if e.kind is EventKind.STEP_RETRYING]
    assert report.steps[0].attempts == 5
    assert len(delays) == 4
    for delay, base in zip(delays, [0.01, 0.02, 0.03, 0.03], strict=True):
        assert base * 0.9 - 0.001 <= delay <= base * 1.1 + 0.001


@pytest.mark.anyio
async def test_agent_limits_bound_parallelism_and_time(tmp_path: Path) -> None:
    async def sleepy(arguments: dict[str, Any], on_progress: ProgressFn | None) -> Any:
        await anyio.sleep(float(arguments["s"]))
        return {}

    tools = InProcessCaller(
        {("mem", "sleep"): sleepy}, {("mem", "sleep"): ToolAnnotations(read_only=True)}
    )
    agent = AgentConfig(
        name="narrow",
        limits=AgentLimits(max_parallel_steps=2, step_timeout_s=1.0),
        retry=RetryPolicy(maximum_attempts=1),
    )
    steps = [
        {"id": f"q{i}", "server": "mem", "tool": "sleep", "arguments": {"s": 0.01}}
        for i in range(6)
    ]
    steps.append(
        {
            "id": "slow",
            "server": "mem",
            "tool": "sleep",
            "arguments": {"s": 30},
            "on_error": "continue",
        }
    )
    async with harness(tmp_path, tools) as h:
        await h.store.save_agent(agent)
        await save_confirmed(h.store, "p", steps, agent="narrow")
        report = await h.scheduler.execute("p")

    assert tools.log.max_in_flight == 2
    slow = report.steps[-1]
    assert slow.status is StepStatus.FAILED
    assert slow.error is not None and slow.error.kind is ErrorKind.TIMEOUT
    assert report.status is PlanStatus.FAILED
    assert report.counts[StepStatus.SUCCEEDED] == 6


@pytest.mark.anyio
async def test_server_and_execution_limits_hold_across_runs(tmp_path: Path) -> None:
    async def sleepy(arguments: dict[str, Any], on_progress: ProgressFn | None) -> Any:
        await anyio.sleep(0.01)
        return {}

    def plan(tag: str) -> list[dict[str, Any]]:
        return [
            {"id": f"s{i}", "server": "mem", "tool": "sleep", "arguments": {"tag": tag}}
            for i in range(8)
        ]

    shared = InProcessCaller({("mem", "sleep"): sleepy})
    config = SchedulerConfig(max_parallel_steps=4, server_max_calls={"mem": 3})
    async with harness(tmp_path, shared, config) as h:
        for name in ("a", "b"):
            await save_confirmed(h.store, name, plan(name))
        runs = [await h.scheduler.start("a"), await h.scheduler.start("b")]
        reports = [await r.wait() for r in runs]
    assert all(r.status is PlanStatus.COMPLETED for r in reports)
    assert shared.log.max_in_flight == 3

    one_at_a_time = InProcessCaller({("mem", "sleep"): sleepy})
    config = SchedulerConfig(max_concurrent_executions=1)
    async with harness(tmp_path / "serial", one_at_a_time, config) as h:
        for name in ("a", "b"):
            await save_confirmed(h.store, name, plan(name))
        runs = [await h.scheduler.start("a"), await h.scheduler.start("b")]
        second = await h.scheduler.progress("b")
        assert second.status is PlanStatus.EXECUTING and second.running == 0
        for r in runs:
            await r.wait()
    tags = [tag for tag, _ in one_at_a_time.log.started]
    # The second run started only once the first had finished.
    assert tags == ["a"] * 8 + ["b"] * 8
