"""Random DAGs with random failures: the engine never deadlocks, never runs a step early,
never calls a tool twice when the failure may have let it run and the tool is not safe to
repeat, and ends every step in a terminal state, except what waits on an interrupted step."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from executor.calls import ProgressFn, ToolResult
from executor.catalog import ToolAnnotations
from executor.errors import Delivery, ErrorKind, ToolCallError
from executor.run import Run, SchedulerConfig
from executor.status import PlanStatus, StepStatus
from tests.executor.scheduler_support import InProcessCaller, harness, save_confirmed


@dataclass(frozen=True)
class StepSpec:
    deps: tuple[int, ...]
    fail_first: int
    """Calls that fail before one succeeds."""
    failure: Delivery
    """How they fail: raising (not delivered, or ambiguous), or answering `isError`."""
    safe: bool
    """The step's tool is annotated idempotent."""
    on_error: str
    attempts: int


@st.composite
def dags(draw: st.DrawFn) -> tuple[list[StepSpec], int, int | None]:
    n = draw(st.integers(min_value=1, max_value=18))
    steps = []
    for i in range(n):
        deps = draw(st.sets(st.integers(min_value=0, max_value=i - 1), max_size=3)) if i else set()
        steps.append(
            StepSpec(
                deps=tuple(sorted(deps)),
                fail_first=draw(st.sampled_from([0, 0, 0, 1, 2, 9])),
                failure=draw(st.sampled_from(list(Delivery))),
                safe=draw(st.booleans()),
                on_error=draw(st.sampled_from(["fail", "continue", "continue"])),
                attempts=draw(st.integers(min_value=1, max_value=3)),
            )
        )
    limit = draw(st.integers(min_value=1, max_value=5))
    cancel_after_ms = draw(st.one_of(st.none(), st.integers(min_value=0, max_value=15)))
    return steps, limit, cancel_after_ms


class Recorder:
    """The tool: checks, at every start, that each dependency had succeeded."""

    def __init__(self, specs: list[StepSpec]) -> None:
        self.specs = specs
        self.calls: Counter[int] = Counter()
        self.succeeded: set[int] = set()
        self.early: list[tuple[int, int]] = []

    async def __call__(self, arguments: dict[str, Any], on_progress: ProgressFn | None) -> Any:
        i = int(arguments["i"])
        self.early.extend((i, d) for d in self.specs[i].deps if d not in self.succeeded)
        self.calls[i] += 1
        await anyio.sleep(0.001 * (i % 3))
        spec = self.specs[i]
        if self.calls[i] <= spec.fail_first:
            if spec.failure is Delivery.ANSWERED:
                return ToolResult(content=[{"type": "text", "text": "no"}], is_error=True)
            message = f"step {i} call {self.calls[i]} fails"
            raise ToolCallError(ErrorKind.NETWORK, message, delivery=spec.failure)
        self.succeeded.add(i)
        return {"i": i}


def plan_of(specs: list[StepSpec]) -> list[Mapping[str, Any]]:
    return [
        {
            "id": f"s{i}",
            "server": "mem",
            "tool": "safe" if spec.safe else "work",
            "arguments": {"i": i},
            "depends_on": [f"s{d}" for d in spec.deps],
            "on_error": spec.on_error,
            "retry": {
                "initial_interval_s": 0.001,
                "maximum_interval_s": 0.002,
                "maximum_attempts": spec.attempts,
                "jitter": 0,
            },
        }
        for i, spec in enumerate(specs)
    ]


_ids = itertools.count()


@pytest.mark.anyio
@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,  # the suite must be deterministic: the same 40 cases every run
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=dags())
async def test_random_dags_with_failures_always_finish_in_order(
    tmp_path: Path, case: tuple[list[StepSpec], int, int | None]
) -> None:
    specs, limit, cancel_after_ms = case
    recorder = Recorder(specs)
    caller = InProcessCaller(
        {("mem", "work"): recorder, ("mem", "safe"): recorder},
        {("mem", "safe"): ToolAnnotations(idempotent=True)},
    )
    plan_id = f"p{next(_ids)}"
    async with harness(tmp_path, caller, SchedulerConfig(max_parallel_steps=limit)) as h:
        await save_confirmed(h.store, plan_id, plan_of(specs))
        with anyio.fail_after(30):  # a deadlock shows as a timeout here
            run = await h.scheduler.start(plan_id)
            assert isinstance(run, Run)  # one process: nothing runs it elsewhere
            if cancel_after_ms is not None:
                await anyio.sleep(cancel_after_ms / 1000)
                run.cancel()
            report = await run.wait()
        stored = await h.store.get_step_states(plan_id, 1)
        plan = await h.store.get_plan(plan_id)

    assert recorder.early == []
    assert caller.log.max_in_flight <= limit
    waits = report.status is PlanStatus.INTERRUPTED
    assert (report.status.is_terminal or waits) and plan.status is report.status
    status = {int(s.id[1:]): s.status for s in report.steps}
    assert {k: v.status for k, v in stored.items()} == {f"s{i}": s for i, s in status.items()}
    interrupted = {i for i, s in status.items() if s is StepStatus.INTERRUPTED}
    assert waits <= bool(interrupted)
    above: dict[int, set[int]] = {}
    for i, spec in enumerate(specs):
        above[i] = set(spec.deps).union(*(above[d] for d in spec.deps))
        if status[i] is StepStatus.SUCCEEDED:
            assert all(status[d] is StepStatus.SUCCEEDED for d in spec.deps)
            assert i in recorder.succeeded
        assert recorder.calls[i] <= spec.attempts
        if not spec.safe and spec.failure is not Delivery.NOT_DELIVERED:
            # It may have run (or refused): an unsafe tool is never called twice.
            assert recorder.calls[i] <= 1
        if i in interrupted:
            assert not spec.safe
        elif waits and above[i] & interrupted:
            # Waiting on a decision: not run (or skipped after a failure before it).
            assert status[i] in (StepStatus.PENDING, StepStatus.SKIPPED), status[i]
        else:
            assert status[i].is_terminal
    if report.status is PlanStatus.COMPLETED:
        assert set(status.values()) == {StepStatus.SUCCEEDED}
    failed_hard = any(
        status[i] is StepStatus.FAILED and specs[i].on_error == "fail" for i in range(len(specs))
    )
    if failed_hard and report.status is not PlanStatus.CANCELLED:
        assert report.status is PlanStatus.FAILED
    if cancel_after_ms is None:
        assert report.status is not PlanStatus.CANCELLED
        assert StepStatus.CANCELLED not in status.values() or failed_hard
