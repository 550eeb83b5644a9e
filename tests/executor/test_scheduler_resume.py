"""Resume after a crash and the rerun/skip decision, from crash states written to the store."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from executor.catalog import ToolAnnotations
from executor.errors import ErrorKind, UserError
from executor.plan import utc_now
from executor.records import AttemptRecord, Event, EventKind, StepState
from executor.run import FollowedRun, Scheduler
from executor.status import PlanStatus, SkipReason, StepStatus
from executor.store import ExpectedPlanStatus, PlanStatusChange, RunLease, Store, WriteBatch
from tests.executor.scheduler_support import (
    InProcessCaller,
    StoreKind,
    harness,
    noop_tool,
    open_store,
    save_confirmed,
    wait_until,
)

SAFE = ToolAnnotations(idempotent=True)


def caller() -> InProcessCaller:
    return InProcessCaller(
        {("mem", "effect"): noop_tool, ("mem", "safe"): noop_tool},
        {("mem", "safe"): SAFE},
    )


def step(step_id: str, tool: str = "effect", **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "server": "mem", "tool": tool, "arguments": {"tag": step_id}, **extra}


async def crash_state(
    store: Store,
    plan_id: str,
    *,
    in_flight: Sequence[str] = (),
    succeeded: Sequence[str] = (),
    between_attempts: Sequence[str] = (),
) -> None:
    """Write what a run killed at this moment leaves behind."""
    now = utc_now()
    batch = WriteBatch(plan_status=PlanStatusChange(plan_id, 1, PlanStatus.EXECUTING, now))
    for sid in succeeded:
        batch.step_states.append(
            StepState(
                plan_id=plan_id,
                version=1,
                step_id=sid,
                status=StepStatus.SUCCEEDED,
                attempts=1,
                output={"from": sid},
                started_at=now,
                finished_at=now,
            )
        )
    for sid in [*in_flight, *between_attempts]:
        batch.step_states.append(
            StepState(
                plan_id=plan_id,
                version=1,
                step_id=sid,
                status=StepStatus.RUNNING,
                attempts=1,
                started_at=now,
            )
        )
        done = sid in between_attempts
        batch.attempts.append(
            AttemptRecord(
                plan_id=plan_id,
                version=1,
                step_id=sid,
                attempt=1,
                started_at=now,
                finished_at=now if done else None,
                status=StepStatus.FAILED if done else StepStatus.RUNNING,
            )
        )
    await store.write(batch)


@pytest.mark.anyio
async def test_resume_reruns_safe_steps_and_never_reruns_succeeded_ones(
    tmp_path: Path, store_kind: StoreKind
) -> None:
    tools = caller()
    steps = [
        step("done"),
        step("safe", "safe", depends_on=["done"]),
        step("retry", depends_on=["done"]),
        step("last", depends_on=["safe", "retry"]),
    ]
    async with harness(tmp_path, tools, store_kind=store_kind) as h:
        await save_confirmed(h.store, "p", steps)
        await crash_state(
            h.store, "p", succeeded=["done"], in_flight=["safe"], between_attempts=["retry"]
        )
        runs = await h.scheduler.resume()
        assert [r.plan_id for r in runs] == ["p"]
        report = await runs[0].wait()
        attempts = await h.store.get_attempts("p", 1, "safe")
        events = await h.store.get_events("p")

    assert report.status is PlanStatus.COMPLETED
    started = [tag for tag, _ in tools.log.started]
    assert sorted(started[:2]) == ["retry", "safe"] and started[2:] == ["last"]
    assert [a.status for a in attempts] == [StepStatus.INTERRUPTED, StepStatus.SUCCEEDED]
    assert {s.id: s.attempts for s in report.steps} == {
        "done": 1,
        "safe": 2,
        "retry": 2,
        "last": 1,
    }
    assert EventKind.EXECUTION_RESUMED in {e.kind for e in events}


@pytest.mark.anyio
async def test_an_interrupted_plan_waits_for_a_decision_and_says_why(
    tmp_path: Path, store_kind: StoreKind
) -> None:
    tools = caller()
    steps = [step("a"), step("b"), step("after_a", depends_on=["a"]), step("free")]
    async with harness(tmp_path, tools, store_kind=store_kind) as h:
        await save_confirmed(h.store, "p", steps)
        await crash_state(h.store, "p", in_flight=["a", "b"])
        runs = await h.scheduler.resume()
        assert len(runs) == 1
        first = await runs[0].wait()
        assert first.status is PlanStatus.INTERRUPTED
        assert first.needs_decision == ("a", "b")
        assert first.message is not None and "on_interrupted" in first.message
        # What does not depend on an interrupted step ran; its dependent waits.
        assert [tag for tag, _ in tools.log.started] == ["free"]
        assert {s.id: s.status for s in first.steps}["after_a"] is StepStatus.PENDING

        # A plain execute keeps waiting, and says why.
        again = await h.scheduler.execute("p")
        assert again.status is PlanStatus.INTERRUPTED and again.needs_decision == ("a", "b")
        assert (await h.store.get_plan("p")).status is PlanStatus.INTERRUPTED

        with pytest.raises(UserError, match="no decision for step"):
            await h.scheduler.execute("p", on_interrupted={"a": "skip"})
        with pytest.raises(UserError, match="not interrupted"):
            await h.scheduler.execute("p", on_interrupted={"a": "skip", "b": "rerun", "x": "skip"})

        final = await h.scheduler.execute("p", on_interrupted={"a": "skip", "b": "rerun"})
        stored = await h.store.get_step_states("p", 1)

    # The decision is a stored fact of the step, not read from its error's kind.
    assert stored["a"].skip_reason is SkipReason.DECISION and stored["a"].satisfies_dependents

    by_id = {s.id: s for s in final.steps}
    assert final.status is PlanStatus.COMPLETED
    assert by_id["a"].status is StepStatus.SKIPPED
    assert by_id["a"].error is not None and by_id["a"].error.kind is ErrorKind.INTERRUPTED
    assert by_id["b"].status is StepStatus.SUCCEEDED and by_id["b"].attempts == 2
    # A skipped step counts as done: its dependent ran.
    assert by_id["after_a"].status is StepStatus.SUCCEEDED
    assert sorted(tag for tag, _ in tools.log.started) == ["after_a", "b", "free"]
    assert by_id["free"].attempts == 1


@pytest.mark.anyio
async def test_reading_a_skipped_steps_output_fails_and_a_rerun_never_repeats_it(
    tmp_path: Path, store_kind: StoreKind
) -> None:
    tools = caller()
    steps = [
        step("a"),
        {"id": "reader", "server": "mem", "tool": "effect", "arguments": {"v": "${a.tag}"}},
    ]
    async with harness(tmp_path, tools, store_kind=store_kind) as h:
        await save_confirmed(h.store, "p", steps)
        await crash_state(h.store, "p", in_flight=["a"])
        (resumed,) = await h.scheduler.resume()
        await resumed.wait()
        report = await h.scheduler.execute("p", on_interrupted="skip")
        reader = report.steps[1]
        assert report.status is PlanStatus.FAILED
        assert reader.error is not None and reader.error.kind is ErrorKind.INVALID_ARGUMENTS
        assert "'a' has no output" in reader.error.message

        # Re-running the failed plan re-runs the reader, never the skipped step.
        again = await h.scheduler.execute("p")
        assert again.steps[0].status is StepStatus.SKIPPED
        assert again.steps[0].attempts == 1
    assert tools.log.started == []


@pytest.mark.anyio
async def test_cancel_gives_up_on_an_interrupted_plan(
    tmp_path: Path, store_kind: StoreKind
) -> None:
    async with harness(tmp_path, caller(), store_kind=store_kind) as h:
        await save_confirmed(h.store, "p", [step("a"), step("b", depends_on=["a"])])
        await crash_state(h.store, "p", in_flight=["a"])
        await h.scheduler.resume()
        report = await h.scheduler.cancel("p")

    assert report.status is PlanStatus.CANCELLED
    assert [s.status for s in report.steps] == [StepStatus.INTERRUPTED, StepStatus.CANCELLED]


@pytest.mark.anyio
async def test_a_plan_executing_elsewhere_is_followed_not_started_twice(
    tmp_path: Path, store_kind: StoreKind
) -> None:
    here = caller()
    async with harness(tmp_path, here, store_kind=store_kind) as h:
        await save_confirmed(h.store, "p", [step("a"), step("b", depends_on=["a"])])
        await crash_state(h.store, "p")
        # A live process holds it (on another machine: its lease is all there is to go by).
        other = RunLease("other-host|1|0.000|a", 3600.0)
        await h.store.claim_runs(other)
        run = await h.scheduler.start("p")
        assert isinstance(run, FollowedRun) and not run.done
        assert run.report().status is PlanStatus.EXECUTING
        assert "process 1 on other-host runs it" in (run.report().message or "")
        events = run.subscribe()

        # The other process runs the steps and ends the plan; this one only watches.
        held = ExpectedPlanStatus("p", 1, PlanStatus.EXECUTING, lease=other)
        now = utc_now()
        for sid in ("a", "b"):
            done = StepState(
                plan_id="p", version=1, step_id=sid, status=StepStatus.SUCCEEDED, attempts=1
            )
            await h.store.write(
                WriteBatch(
                    step_states=[done],
                    events=[Event(plan_id="p", kind=EventKind.STEP_SUCCEEDED, step_id=sid)],
                    expect=held,
                )
            )
        await h.store.write(
            WriteBatch(
                plan_status=PlanStatusChange("p", 1, PlanStatus.COMPLETED, finished_at=now),
                events=[Event(plan_id="p", kind=EventKind.PLAN_FINISHED, data={})],
                expect=held,
            )
        )
        with anyio.fail_after(30):
            report = await run.wait()
            seen = [(e.kind, e.step_id) async for e in events]
    assert report.status is PlanStatus.COMPLETED
    assert [s.status for s in report.steps] == [StepStatus.SUCCEEDED] * 2
    assert seen == [
        (EventKind.STEP_SUCCEEDED, "a"),
        (EventKind.STEP_SUCCEEDED, "b"),
        (EventKind.PLAN_FINISHED, None),
    ]
    assert here.log.started == []


@pytest.mark.anyio
async def test_closing_the_scheduler_mid_run_leaves_a_run_to_resume(
    tmp_path: Path, store_kind: StoreKind
) -> None:
    gate = anyio.Event()

    async def blocked(arguments: dict[str, Any], on_progress: Any) -> Any:
        await gate.wait()
        return {}

    first = InProcessCaller(
        {("mem", "safe"): blocked, ("mem", "effect"): blocked}, {("mem", "safe"): SAFE}
    )
    steps = [step("s", "safe"), step("e"), step("last", depends_on=["s", "e"])]
    async with open_store(tmp_path, store_kind) as store:
        await save_confirmed(store, "p", steps)
        async with Scheduler(store, first) as scheduler:
            run = await scheduler.start("p")
            await wait_until(lambda: first.log.in_flight == 2)
        assert run.done
        stopped = run.report()
        assert stopped.status is PlanStatus.EXECUTING
        assert stopped.message is not None and "resumes" in stopped.message
        assert (await store.get_plan("p")).status is PlanStatus.EXECUTING

        # The next start: the safe step runs again, the other waits for a decision.
        second = caller()
        async with Scheduler(store, second) as scheduler:
            (resumed,) = await scheduler.resume()
            report = await resumed.wait()
            assert report.status is PlanStatus.INTERRUPTED and report.needs_decision == ("e",)
            final = await scheduler.execute("p", on_interrupted="rerun")

    assert final.status is PlanStatus.COMPLETED
    assert sorted(tag for tag, _ in second.log.started) == ["e", "last", "s"]
