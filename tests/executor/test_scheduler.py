"""The execution engine against a real downstream server over stdio, SQLite on disk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from executor.errors import ApprovalError, ErrorKind, UserError
from executor.plan import RetryPolicy
from executor.records import EventKind
from executor.run import SchedulerConfig
from executor.status import PlanStatus, StepStatus
from tests.executor.scheduler_support import (
    StoreKind,
    collect,
    engine_caller,
    harness,
    max_concurrency,
    save_confirmed,
    wait_until,
)

FAST_RETRY = {"initial_interval_s": 0.01, "maximum_interval_s": 0.05, "maximum_attempts": 3}


def sleep_step(step_id: str, ms: int = 20, **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "server": "engine", "tool": "sleep", "arguments": {"ms": ms}, **extra}


def echo_step(step_id: str, value: Any, **extra: Any) -> dict[str, Any]:
    return {
        "id": step_id,
        "server": "engine",
        "tool": "echo",
        "arguments": {"value": value},
        **extra,
    }


@pytest.mark.anyio
async def test_diamond_moves_data_through_references(tmp_path: Path, store_kind: StoreKind) -> None:
    steps = [
        echo_step("top", {"name": "ada", "langs": ["py", "ml"]}),
        echo_step("left", "${top.value.name}"),
        echo_step("right", "${top.value.langs.1}"),
        echo_step(
            "bottom", {"pair": ["${left.value}", "${right.value}"], "msg": "hi ${left.value}"}
        ),
    ]
    async with engine_caller() as caller, harness(tmp_path, caller, store_kind=store_kind) as h:
        report, events = await h.run("diamond", steps)

    assert report.status is PlanStatus.COMPLETED
    by_id = {s.id: s for s in report.steps}
    assert by_id["bottom"].output == {"value": {"pair": ["ada", "ml"], "msg": "hi ada"}}
    assert all(s.attempts == 1 and s.duration_s is not None for s in report.steps)
    order = [e.step_id for e in events if e.kind is EventKind.STEP_STARTED]
    assert order[0] == "top" and order[-1] == "bottom"
    assert events[-1].kind is EventKind.PLAN_FINISHED
    assert events[-1].data["status"] == "completed"
    seqs = [e.seq for e in events]
    assert all(s > 0 for s in seqs) and seqs == sorted(seqs)


@pytest.mark.anyio
async def test_wide_fan_out_fan_in_respects_the_step_limit(tmp_path: Path) -> None:
    fan = [sleep_step(f"w{i}", 30, depends_on=["root"]) for i in range(24)]
    steps = [
        sleep_step("root", 1),
        *fan,
        sleep_step("sink", 1, depends_on=[s["id"] for s in fan]),
    ]
    config = SchedulerConfig(max_parallel_steps=6)
    async with engine_caller() as caller, harness(tmp_path, caller, config) as h:
        report, events = await h.run("fan", steps)

    assert report.status is PlanStatus.COMPLETED
    assert report.counts[StepStatus.SUCCEEDED] == 26
    # The limit holds, and the fan really runs in parallel.
    assert 2 <= max_concurrency(events) <= 6
    started = [e.step_id for e in events if e.kind is EventKind.STEP_STARTED]
    assert started[0] == "root" and started[-1] == "sink"


@pytest.mark.anyio
async def test_long_chain_passes_a_value_down(tmp_path: Path) -> None:
    steps = [echo_step("c0", 0)]
    steps += [echo_step(f"c{i}", f"${{c{i - 1}.value}}") for i in range(1, 40)]
    async with engine_caller() as caller, harness(tmp_path, caller) as h:
        report, events = await h.run("chain", steps)

    assert report.status is PlanStatus.COMPLETED
    assert report.steps[-1].output == {"value": 0}
    assert max_concurrency(events) == 1


@pytest.mark.anyio
async def test_a_reference_to_a_missing_path_fails_with_invalid_arguments(tmp_path: Path) -> None:
    steps = [
        echo_step("src", {"alpha": 1, "beta": 2}),
        echo_step("use", "${src.value.gamma}"),
    ]
    async with engine_caller() as caller, harness(tmp_path, caller) as h:
        report, _ = await h.run("badref", steps)
        attempts = await h.store.get_attempts("badref", 1, "use")

    use = report.steps[1]
    assert report.status is PlanStatus.FAILED
    assert use.status is StepStatus.FAILED and use.attempts == 1
    assert use.error is not None and use.error.kind is ErrorKind.INVALID_ARGUMENTS
    assert "${src.value.gamma}" in use.error.message
    assert "'alpha'" in use.error.message and "'beta'" in use.error.message
    assert [a.status for a in attempts] == [StepStatus.FAILED]


@pytest.mark.anyio
async def test_a_step_that_fails_twice_then_succeeds_is_retried(
    tmp_path: Path, store_kind: StoreKind
) -> None:
    steps = [
        {
            "id": "flaky",
            "server": "engine",
            "tool": "fail_times",
            "arguments": {"key": "k", "n": 2, "state_dir": str(tmp_path)},
            # The tool is not annotated idempotent: the step opts in to retrying it.
            "retry": {**FAST_RETRY, "non_idempotent": True},
        }
    ]
    async with engine_caller() as caller, harness(tmp_path, caller, store_kind=store_kind) as h:
        report, events = await h.run("retry", steps)
        attempts = await h.store.get_attempts("retry", 1, "flaky")

    assert report.status is PlanStatus.COMPLETED
    assert report.steps[0].attempts == 3
    assert report.steps[0].output == {"calls": 3}
    assert [a.status for a in attempts] == [
        StepStatus.FAILED,
        StepStatus.FAILED,
        StepStatus.SUCCEEDED,
    ]
    assert attempts[0].error is not None and attempts[0].error.kind is ErrorKind.TOOL_ERROR
    retrying = [e for e in events if e.kind is EventKind.STEP_RETRYING]
    assert [e.data["attempt"] for e in retrying] == [1, 2]


@pytest.mark.anyio
async def test_a_non_retryable_error_is_not_retried(tmp_path: Path) -> None:
    steps = [
        {
            "id": "bad",
            "server": "engine",
            "tool": "fail",
            "arguments": {"kind": "invalid_arguments", "message": "x must be positive"},
            "retry": FAST_RETRY,
        }
    ]
    async with engine_caller() as caller, harness(tmp_path, caller) as h:
        report, events = await h.run("noretry", steps)

    bad = report.steps[0]
    assert bad.status is StepStatus.FAILED and bad.attempts == 1
    assert bad.error is not None and bad.error.kind is ErrorKind.INVALID_ARGUMENTS
    assert "x must be positive" in bad.error.message
    assert not [e for e in events if e.kind is EventKind.STEP_RETRYING]


@pytest.mark.anyio
async def test_a_step_timeout_fails_the_step_with_timeout(tmp_path: Path) -> None:
    steps = [
        sleep_step("slow", 30_000, timeout_s=0.3, retry={**FAST_RETRY, "maximum_attempts": 2}),
    ]
    async with engine_caller() as caller, harness(tmp_path, caller) as h:
        report, _ = await h.run("timeout", steps)

    slow = report.steps[0]
    assert slow.status is StepStatus.FAILED and slow.attempts == 2
    assert slow.error is not None and slow.error.kind is ErrorKind.TIMEOUT


@pytest.mark.anyio
async def test_the_plan_deadline_fails_the_run(tmp_path: Path) -> None:
    steps = [
        sleep_step("quick", 1),
        sleep_step("long", 30_000, depends_on=["quick"]),
        sleep_step("after", 1, depends_on=["long"]),
    ]
    async with engine_caller() as caller, harness(tmp_path, caller) as h:
        report, events = await h.run("deadline", steps, deadline_s=1.5)

    by_id = {s.id: s for s in report.steps}
    assert report.status is PlanStatus.FAILED
    assert by_id["quick"].status is StepStatus.SUCCEEDED
    assert by_id["long"].status is StepStatus.FAILED
    assert by_id["long"].error is not None and by_id["long"].error.kind is ErrorKind.TIMEOUT
    assert by_id["after"].status is StepStatus.SKIPPED
    assert report.message is not None and "deadline of 1.5 s" in report.message
    assert events[-1].kind is EventKind.PLAN_FINISHED


@pytest.mark.anyio
async def test_on_error_continue_lets_independent_branches_finish(
    tmp_path: Path, store_kind: StoreKind
) -> None:
    steps = [
        {"id": "boom", "server": "engine", "tool": "fail", "on_error": "continue"},
        sleep_step("child", 1, depends_on=["boom"]),
        sleep_step("grandchild", 1, depends_on=["child"]),
        sleep_step("other", 100),
        sleep_step("other2", 1, depends_on=["other"]),
    ]
    retry = RetryPolicy(maximum_attempts=1)
    async with (
        engine_caller() as caller,
        harness(tmp_path, caller, SchedulerConfig(default_retry=retry), store_kind=store_kind) as h,
    ):
        report, _ = await h.run("cont", steps)

    status = {s.id: s.status for s in report.steps}
    assert status == {
        "boom": StepStatus.FAILED,
        "child": StepStatus.SKIPPED,
        "grandchild": StepStatus.SKIPPED,
        "other": StepStatus.SUCCEEDED,
        "other2": StepStatus.SUCCEEDED,
    }
    assert report.status is PlanStatus.FAILED


@pytest.mark.anyio
async def test_on_error_fail_cancels_what_is_in_flight(
    tmp_path: Path, store_kind: StoreKind
) -> None:
    marker = tmp_path / "hang.txt"
    steps = [
        {"id": "hang", "server": "engine", "tool": "hang", "arguments": {"marker": str(marker)}},
        sleep_step("wait", 300),
        {"id": "boom", "server": "engine", "tool": "fail", "depends_on": ["wait"]},
        sleep_step("later", 1, depends_on=["boom"]),
        sleep_step("after_hang", 1, depends_on=["hang"]),
    ]
    retry = RetryPolicy(maximum_attempts=1)
    async with (
        engine_caller() as caller,
        harness(tmp_path, caller, SchedulerConfig(default_retry=retry), store_kind=store_kind) as h,
    ):
        report, _ = await h.run("failfast", steps)
        attempts = await h.store.get_attempts("failfast", 1, "hang")

    status = {s.id: s.status for s in report.steps}
    assert status == {
        "hang": StepStatus.CANCELLED,
        "wait": StepStatus.SUCCEEDED,
        "boom": StepStatus.FAILED,
        "later": StepStatus.SKIPPED,
        "after_hang": StepStatus.SKIPPED,
    }
    assert report.status is PlanStatus.FAILED
    assert report.message is not None and "'boom'" in report.message
    assert [a.status for a in attempts] == [StepStatus.CANCELLED]


@pytest.mark.anyio
async def test_cancel_mid_run_ends_cancelled_and_reaches_downstream(
    tmp_path: Path, store_kind: StoreKind
) -> None:
    marker = tmp_path / "hang.txt"
    steps = [
        sleep_step("first", 1),
        {
            "id": "hang",
            "server": "engine",
            "tool": "hang",
            "arguments": {"marker": str(marker)},
            "depends_on": ["first"],
        },
        sleep_step("never", 1, depends_on=["hang"]),
    ]
    async with engine_caller() as caller, harness(tmp_path, caller, store_kind=store_kind) as h:
        await save_confirmed(h.store, "cancel", steps)
        run = await h.scheduler.start("cancel")
        sub = h.scheduler.subscribe("cancel")
        async with sub:
            async for event in sub:
                if event.kind is EventKind.STEP_STARTED and event.step_id == "hang":
                    break
        await wait_until(marker.exists)
        report = await h.scheduler.cancel("cancel")
        assert run.done
        # The downstream handler itself saw the cancellation.
        await wait_until(lambda: "cancelled" in marker.read_text())
        stored = await h.store.get_plan("cancel")

    status = {s.id: s.status for s in report.steps}
    assert status == {
        "first": StepStatus.SUCCEEDED,
        "hang": StepStatus.CANCELLED,
        "never": StepStatus.CANCELLED,
    }
    assert report.status is PlanStatus.CANCELLED
    assert stored.status is PlanStatus.CANCELLED


@pytest.mark.anyio
async def test_downstream_progress_is_forwarded_to_subscribers(tmp_path: Path) -> None:
    steps = [
        {
            "id": "p",
            "server": "engine",
            "tool": "progress",
            "arguments": {"steps": 3, "delay_ms": 10},
        }
    ]
    async with engine_caller() as caller, harness(tmp_path, caller) as h:
        report, events = await h.run("progress", steps)
        stored = await h.store.get_events("progress")

    progress = [e for e in events if e.kind is EventKind.STEP_PROGRESS]
    assert report.status is PlanStatus.COMPLETED
    assert [e.data["progress"] for e in progress] == [1, 2, 3]
    assert progress[0].data["total"] == 3 and progress[0].step_id == "p"
    # Progress is live only; the log keeps the transitions.
    assert EventKind.STEP_PROGRESS not in {e.kind for e in stored}
    assert EventKind.STEP_SUCCEEDED in {e.kind for e in stored}


@pytest.mark.anyio
async def test_rerunning_a_failed_plan_reruns_only_what_did_not_succeed(
    tmp_path: Path, store_kind: StoreKind
) -> None:
    out = tmp_path / "out.txt"

    def append(step_id: str, **extra: Any) -> dict[str, Any]:
        return {
            "id": step_id,
            "server": "engine",
            "tool": "append_line",
            "arguments": {"path": str(out), "line": step_id},
            **extra,
        }

    steps = [
        append("a"),
        {
            "id": "flaky",
            "server": "engine",
            "tool": "fail_times",
            "arguments": {"key": "f", "n": 1, "state_dir": str(tmp_path)},
            "depends_on": ["a"],
            "retry": {"maximum_attempts": 1},
        },
        append("b", depends_on=["flaky"]),
    ]
    async with engine_caller() as caller, harness(tmp_path, caller, store_kind=store_kind) as h:
        first, _ = await h.run("rerun", steps)
        assert first.status is PlanStatus.FAILED
        assert [s.status for s in first.steps] == [
            StepStatus.SUCCEEDED,
            StepStatus.FAILED,
            StepStatus.SKIPPED,
        ]
        second = await h.scheduler.execute("rerun")

    assert second.status is PlanStatus.COMPLETED
    assert out.read_text().splitlines() == ["a", "b"]
    assert [s.attempts for s in second.steps] == [1, 2, 1]


@pytest.mark.anyio
async def test_an_unapproved_or_changed_plan_is_refused(tmp_path: Path) -> None:
    async with engine_caller() as caller, harness(tmp_path, caller) as h:
        plan = await save_confirmed(h.store, "ok", [sleep_step("s")])
        stale = plan.model_copy(
            update={"id": "stale", "approved_hash": "v1:" + "0" * 64}, deep=True
        )
        await h.store.save_plan(stale)
        with pytest.raises(ApprovalError, match="confirm this version"):
            await h.scheduler.start("stale")
        draft = plan.model_copy(
            update={"id": "draft", "status": PlanStatus.DRAFT, "approved_hash": None}
        )
        await h.store.save_plan(draft)
        with pytest.raises(ApprovalError, match="confirm it"):
            await h.scheduler.start("draft")
        report = await h.scheduler.execute("ok")
        assert report.status is PlanStatus.COMPLETED
        with pytest.raises(UserError, match="nothing is left to run"):
            await h.scheduler.start("ok")
        assert (await h.store.get_plan("stale")).status is PlanStatus.CONFIRMED


@pytest.mark.anyio
async def test_events_reach_every_subscriber_and_end_with_the_run(tmp_path: Path) -> None:
    steps = [sleep_step("a", 5), sleep_step("b", 5, depends_on=["a"])]
    async with engine_caller() as caller, harness(tmp_path, caller) as h:
        await save_confirmed(h.store, "subs", steps)
        run = await h.scheduler.start("subs")
        one, two = h.scheduler.subscribe("subs"), run.subscribe()
        with anyio.fail_after(30):
            first, second = await collect(one), await collect(two)
        report = await run.wait()
        late = await collect(h.scheduler.subscribe("subs"))

    assert report.status is PlanStatus.COMPLETED
    kinds = [e.kind for e in first]
    assert kinds[0] is EventKind.EXECUTION_STARTED and kinds[-1] is EventKind.PLAN_FINISHED
    assert [e.seq for e in first] == [e.seq for e in second]
    assert late == []


@pytest.mark.anyio
async def test_a_rerun_reads_a_large_output_of_an_earlier_run_from_the_store(
    tmp_path: Path,
) -> None:
    big = "é" * 20_000  # over what a step state keeps inline
    steps = [
        {"id": "a", "server": "engine", "tool": "echo", "arguments": {"value": big}},
        {
            "id": "flaky",
            "server": "engine",
            "tool": "fail_times",
            "arguments": {"key": "f", "n": 1, "state_dir": str(tmp_path)},
            "depends_on": ["a"],
            "retry": {"maximum_attempts": 1},
        },
        {
            "id": "b",
            "server": "engine",
            "tool": "echo",
            "arguments": {"value": "${a.value}"},
            "depends_on": ["flaky"],
        },
    ]
    async with engine_caller() as caller, harness(tmp_path, caller) as h:
        first, _ = await h.run("big", steps)
        assert first.status is PlanStatus.FAILED
        # Reports keep a summary of a large output, not the output.
        summary = first.steps[0].summary
        assert first.steps[0].output is None and summary is not None and not summary.inline
        assert (
            summary.size_bytes == len(json.dumps({"value": big}, ensure_ascii=False).encode()) - 1
        )
        second = await h.scheduler.execute("big")
        result = await h.store.get_step_result("big", 1, "b")

    assert second.status is PlanStatus.COMPLETED
    assert result is not None and result.output() == {"value": big}


@pytest.mark.anyio
async def test_whoever_followed_a_run_is_not_asked_the_next_runs_questions(
    tmp_path: Path,
) -> None:
    # A host task's asker, set for a run, must not receive the questions of a later run
    # of the same plan that another caller follows (it could read and answer them).
    async def ask(question: Any) -> dict[str, Any]:
        raise AssertionError(f"asked after its run ended: {question}")

    async with engine_caller() as caller, harness(tmp_path, caller) as h:
        await save_confirmed(h.store, "asked", [echo_step("only", 1)])
        h.scheduler.askers.set("asked", ask)
        run = await h.scheduler.start("asked")
        report = await run.wait()
        await wait_until(lambda: h.scheduler.get_run("asked") is None)

    assert report.status is PlanStatus.COMPLETED
    assert h.scheduler.askers.asker("asked") is None
    assert h.scheduler.askers.claim("asked", ask)  # the next follower takes them
