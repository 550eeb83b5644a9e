"""Retries respect the tool, and a decision blocks only what depends on it.

Every test drives the scheduler against real fixture servers over stdio: the
engine fixture's `tally` tools count their invocations in a file, so a test can
see exactly how many times a side effect happened.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from executor.catalog import ToolAnnotations
from executor.downstream import Pool
from executor.errors import Delivery, ErrorKind
from executor.plan import RetryPolicy
from executor.records import EventKind
from executor.retry import Verdict, decide
from executor.status import PlanStatus, StepStatus
from tests.executor.scheduler_support import (
    StoreKind,
    confirmed,
    engine_caller,
    harness,
    save_confirmed,
)
from tests.executor.test_scheduler_resume import crash_state
from tests.fixtures.launch import EVERYTHING, everything_spec, tiny_spec

FAST = {"initial_interval_s": 0.01, "maximum_interval_s": 0.05, "maximum_attempts": 3}


def calls(counter: Path) -> int:
    """How many times a `tally` tool ran with this counter."""
    return int(counter.read_text()) if counter.exists() else 0


def tally(step_id: str, counter: Path, tool: str = "tally", **extra: Any) -> dict[str, Any]:
    arguments = {"counter": str(counter)}
    arguments.update(extra.pop("arguments", {}))
    return {
        "id": step_id,
        "server": "engine",
        "tool": tool,
        "arguments": arguments,
        "retry": extra.pop("retry", FAST),
        **extra,
    }


def echo(step_id: str, value: Any, **extra: Any) -> dict[str, Any]:
    return {
        "id": step_id,
        "server": "engine",
        "tool": "echo",
        "arguments": {"value": value},
        **extra,
    }


def statuses(report: Any) -> dict[str, StepStatus]:
    return {s.id: s.status for s in report.steps}


# --------------------------------------------------------------------------- the rule

SAFE = ToolAnnotations(idempotent=True)
UNSAFE = ToolAnnotations()
D, K, V = Delivery, ErrorKind, Verdict


@pytest.mark.parametrize(
    ("kind", "delivery", "annotations", "opted_in", "attempt", "verdict", "says_why"),
    [
        # Not delivered: the policy alone decides.
        (K.NETWORK, D.NOT_DELIVERED, UNSAFE, False, 1, V.RETRY, False),
        (K.TOOL_UNAVAILABLE, D.NOT_DELIVERED, None, False, 2, V.RETRY, False),
        (K.NETWORK, D.NOT_DELIVERED, UNSAFE, False, 3, V.FAIL, False),
        (K.AUTHENTICATION, D.NOT_DELIVERED, UNSAFE, False, 1, V.FAIL, False),
        # Ambiguous: retried only when safe to repeat, else interrupted (budget or not).
        (K.TIMEOUT, D.AMBIGUOUS, SAFE, False, 1, V.RETRY, False),
        (K.TIMEOUT, D.AMBIGUOUS, ToolAnnotations(read_only=True), False, 1, V.RETRY, False),
        (K.TIMEOUT, D.AMBIGUOUS, UNSAFE, True, 1, V.RETRY, False),
        (K.TIMEOUT, D.AMBIGUOUS, SAFE, False, 3, V.FAIL, False),
        (K.TIMEOUT, D.AMBIGUOUS, UNSAFE, False, 1, V.INTERRUPT, True),
        (K.NETWORK, D.AMBIGUOUS, None, False, 3, V.INTERRUPT, True),
        (K.CANCELLED, D.AMBIGUOUS, UNSAFE, False, 1, V.INTERRUPT, True),
        # Answered: protocol and argument errors never; tool errors when safe.
        (K.INVALID_ARGUMENTS, D.ANSWERED, SAFE, True, 1, V.FAIL, False),
        (K.TOOL_UNAVAILABLE, D.ANSWERED, SAFE, True, 1, V.FAIL, False),
        (K.TOOL_ERROR, D.ANSWERED, SAFE, False, 1, V.RETRY, False),
        (K.TOOL_ERROR, D.ANSWERED, UNSAFE, True, 1, V.RETRY, False),
        (K.TOOL_ERROR, D.ANSWERED, UNSAFE, False, 1, V.FAIL, True),
        (K.TOOL_ERROR, D.ANSWERED, UNSAFE, False, 3, V.FAIL, False),
        # A crash: spends no attempt.
        (K.INTERRUPTED, D.AMBIGUOUS, SAFE, False, 3, V.RETRY, False),
        (K.INTERRUPTED, D.AMBIGUOUS, UNSAFE, False, 0, V.INTERRUPT, True),
        (K.INTERRUPTED, D.AMBIGUOUS, UNSAFE, True, 9, V.RETRY, False),
    ],
)
def test_the_one_retry_rule(
    kind: ErrorKind,
    delivery: Delivery,
    annotations: ToolAnnotations | None,
    opted_in: bool,
    attempt: int,
    verdict: Verdict,
    says_why: bool,
) -> None:
    policy = RetryPolicy(maximum_attempts=3, non_idempotent=opted_in)
    decision = decide(kind, delivery, policy=policy, attempt=attempt, annotations=annotations)
    assert decision.verdict is verdict
    # The reason is given when safety, not the policy, stopped a retry.
    assert bool(decision.reason) is says_why


def test_opting_in_is_part_of_what_is_approved() -> None:
    plain = confirmed("p", [{"id": "a", "server": "s", "tool": "t", "retry": {}}])
    opted = confirmed(
        "p", [{"id": "a", "server": "s", "tool": "t", "retry": {"non_idempotent": True}}]
    )
    unset = confirmed("p", [{"id": "a", "server": "s", "tool": "t", "retry": {"jitter": 0.1}}])
    assert plain.plan_hash == unset.plan_hash != opted.plan_hash
    assert "non_idempotent" not in str(plain.steps[0].hash_payload())


# --------------------------------------------------------------------------- ambiguous


@pytest.mark.anyio
async def test_a_non_idempotent_call_that_times_out_runs_once_and_waits_for_a_decision(
    tmp_path: Path, store_kind: StoreKind
) -> None:
    counter = tmp_path / "charge"
    steps = [
        tally("charge", counter, arguments={"sleep_ms": 30_000}, timeout_s=0.5),
        echo("receipt", "sent", depends_on=["charge"]),
        tally("slow", tmp_path / "slow", "tally_read_only", arguments={"sleep_ms": 1500}),
        echo("after_slow", "${slow.calls}"),
    ]
    async with engine_caller() as caller, harness(tmp_path, caller, store_kind=store_kind) as h:
        report, events = await h.run("charge", steps)
        assert calls(counter) == 1
        assert statuses(report) == {
            "charge": StepStatus.INTERRUPTED,
            "receipt": StepStatus.PENDING,
            "slow": StepStatus.SUCCEEDED,
            "after_slow": StepStatus.SUCCEEDED,
        }
        assert report.status is PlanStatus.INTERRUPTED
        assert report.needs_decision == ("charge",)
        error = report.steps[0].error
        assert error is not None and error.kind is ErrorKind.TIMEOUT
        assert "may or may not have taken effect" in error.message
        assert "on_interrupted" in (report.message or "")
        assert not [e for e in events if e.kind is EventKind.STEP_RETRYING]
        assert EventKind.STEP_INTERRUPTED in {e.kind for e in events}
        assert (await h.store.get_plan("charge")).status is PlanStatus.INTERRUPTED

        # The same decision as after a crash: skip it, and its dependent runs.
        final = await h.scheduler.execute("charge", on_interrupted="skip")

    assert final.status is PlanStatus.COMPLETED
    assert statuses(final)["receipt"] is StepStatus.SUCCEEDED
    assert calls(counter) == 1


@pytest.mark.anyio
async def test_a_call_safe_to_repeat_that_times_out_is_retried(tmp_path: Path) -> None:
    kinds = {
        "idempotent": ("tally_idempotent", FAST),
        "read_only": ("tally_read_only", FAST),
        "opted_in": ("tally", {**FAST, "non_idempotent": True}),
    }
    steps = [
        tally(
            name,
            tmp_path / name,
            tool,
            arguments={"sleep_ms": 30_000},
            timeout_s=0.3,
            retry=retry,
            on_error="continue",
        )
        for name, (tool, retry) in kinds.items()
    ]
    async with engine_caller() as caller, harness(tmp_path, caller) as h:
        report, _ = await h.run("t", steps)

    assert report.status is PlanStatus.FAILED
    for step in report.steps:
        assert calls(tmp_path / step.id) == 3, step.id
        assert step.status is StepStatus.FAILED and step.attempts == 3
        assert step.error is not None and step.error.kind is ErrorKind.TIMEOUT


def tiny_tally(step_id: str, counter: Path, tool: str = "tally", **extra: Any) -> dict[str, Any]:
    return {
        "id": step_id,
        "server": extra.pop("server", "tiny"),
        "tool": tool,
        "arguments": {"counter": str(counter), **extra.pop("arguments", {})},
        "retry": extra.pop("retry", FAST),
        **extra,
    }


def lines(counter: Path) -> int:
    return len(counter.read_text().splitlines()) if counter.exists() else 0


@pytest.mark.anyio
async def test_a_server_that_exits_mid_call_is_not_called_again_for_a_non_idempotent_tool(
    tmp_path: Path,
) -> None:
    once, safe = tmp_path / "once", tmp_path / "safe"
    steps = [
        tiny_tally("once", once, arguments={"exit": True}),
        tiny_tally("after", once, depends_on=["once"]),
        tiny_tally(
            "safe",
            safe,
            "tally_idempotent",
            arguments={"exit": True},
            server="tiny2",
            on_error="continue",
        ),
    ]
    servers = {"tiny": tiny_spec(), "tiny2": tiny_spec("tiny2")}
    pool = Pool(servers, restart_backoff_s=0.01)
    async with pool as caller, harness(tmp_path, caller) as h:
        first, _ = await h.run("exit", steps)

    assert lines(once) == 1  # the server died after the effect: never repeated
    assert lines(safe) == 3  # annotated idempotent: retried (it exits every time)
    assert statuses(first) == {
        "once": StepStatus.INTERRUPTED,
        "after": StepStatus.PENDING,
        "safe": StepStatus.FAILED,
    }
    assert first.status is PlanStatus.INTERRUPTED and first.needs_decision == ("once",)
    error = first.steps[0].error
    assert error is not None and error.kind is ErrorKind.TOOL_UNAVAILABLE
    assert "exited" in error.message and "may or may not have taken effect" in error.message


# --------------------------------------------------------------------------- not delivered


@pytest.mark.anyio
async def test_a_call_that_never_reached_the_server_is_retried_even_when_not_idempotent(
    tmp_path: Path,
) -> None:
    counter = tmp_path / "n"
    # The server dies during its first starts: those attempts never reach the tool.
    spec = tiny_spec("tiny", "--fail-starts", f"3:{tmp_path / 'starts'}")
    step = tiny_tally("t", counter, retry={**FAST, "maximum_attempts": 6})
    pool = Pool({"tiny": spec}, restart_backoff_s=0.01)
    async with pool as caller, harness(tmp_path, caller) as h:
        report, _ = await h.run("nd", [step])
        attempts = await h.store.get_attempts("nd", 1, "t")

    assert report.status is PlanStatus.COMPLETED
    assert lines(counter) == 1
    *refused, last = attempts
    assert refused and last.status is StepStatus.SUCCEEDED
    for attempt in refused:
        assert attempt.status is StepStatus.FAILED and attempt.error is not None
        assert attempt.error.kind is ErrorKind.TOOL_UNAVAILABLE


# --------------------------------------------------------------------------- answered


@pytest.mark.anyio
async def test_a_tool_error_is_retried_only_for_a_tool_safe_to_repeat(tmp_path: Path) -> None:
    def flaky(step_id: str, **extra: Any) -> dict[str, Any]:
        return {
            "id": step_id,
            "server": "engine",
            "tool": "fail_times",
            "arguments": {"key": step_id, "n": 1, "state_dir": str(tmp_path)},
            "retry": extra.pop("retry", FAST),
            "on_error": "continue",
            **extra,
        }

    steps = [flaky("plain"), flaky("opted_in", retry={**FAST, "non_idempotent": True})]
    async with engine_caller() as caller, harness(tmp_path, caller) as h:
        report, _ = await h.run("answered", steps)

    plain, opted_in = report.steps
    assert plain.status is StepStatus.FAILED and plain.attempts == 1
    assert plain.error is not None and plain.error.kind is ErrorKind.TOOL_ERROR
    assert "not annotated idempotent or read-only" in plain.error.message
    assert "non_idempotent" in plain.error.message
    assert opted_in.status is StepStatus.SUCCEEDED and opted_in.attempts == 2


@pytest.mark.anyio
async def test_an_argument_error_is_never_retried_whatever_the_policy(tmp_path: Path) -> None:
    steps = [
        {
            "id": "bad",
            "server": "engine",
            "tool": "fail",
            "arguments": {"kind": "invalid_arguments", "message": "x must be positive"},
            # Nothing is listed as non-retryable: the refusal itself says "do not repeat".
            "retry": {**FAST, "non_retryable": []},
        }
    ]
    async with engine_caller() as caller, harness(tmp_path, caller) as h:
        report, _ = await h.run("bad", steps)

    bad = report.steps[0]
    assert bad.status is StepStatus.FAILED and bad.attempts == 1
    assert bad.error is not None and bad.error.kind is ErrorKind.INVALID_ARGUMENTS


@pytest.mark.anyio
@pytest.mark.npm
@pytest.mark.skipif(not EVERYTHING.exists(), reason="make test installs the npm packages")
async def test_a_typescript_protocol_error_in_an_is_error_result_is_never_retried(
    tmp_path: Path,
) -> None:
    # The TypeScript SDK answers protocol errors as `isError` results whose text
    # is "MCP error -32601: ..."; a tool that requires task augmentation says so.
    steps = [
        {
            "id": "research",
            "server": "everything",
            "tool": "simulate-research-query",
            "arguments": {"topic": "tides"},
            "retry": {**FAST, "non_retryable": [], "non_idempotent": True},
        }
    ]
    async with (
        Pool({"everything": everything_spec()}) as caller,
        harness(tmp_path, caller) as h,
    ):
        report, _ = await h.run("ts", steps)

    step = report.steps[0]
    assert step.status is StepStatus.FAILED and step.attempts == 1
    assert step.error is not None and step.error.kind is ErrorKind.TOOL_UNAVAILABLE
    assert "requires task augmentation" in step.error.message


# --------------------------------------------------------------------------- resume


@pytest.mark.anyio
async def test_after_a_crash_every_step_independent_of_the_interrupted_ones_runs(
    tmp_path: Path, store_kind: StoreKind
) -> None:
    out = tmp_path / "out.txt"
    writes: list[dict[str, Any]] = [
        {
            "id": f"w{i}",
            "server": "engine",
            "tool": "append_line",
            "arguments": {"path": str(out), "line": f"w{i}"},
        }
        for i in range(4)
    ]
    dependents = [echo(f"d{i}_{j}", j, depends_on=[f"w{i}"]) for i in range(4) for j in range(9)]
    done = [echo(f"done{i}", i) for i in range(2)]
    free = [echo(f"r{i}", i, depends_on=[f"done{i % 2}"]) for i in range(18)]
    steps = [*done, *writes, *dependents, *free]
    assert len(steps) == 60
    async with engine_caller() as caller, harness(tmp_path, caller, store_kind=store_kind) as h:
        await save_confirmed(h.store, "p", steps)
        await crash_state(
            h.store, "p", succeeded=["done0", "done1"], in_flight=[w["id"] for w in writes]
        )
        (run,) = await h.scheduler.resume()
        parked = await run.wait()
        by_status: dict[StepStatus, set[str]] = {}
        for s in parked.steps:
            by_status.setdefault(s.status, set()).add(s.id)

        assert parked.status is PlanStatus.INTERRUPTED
        assert by_status[StepStatus.SUCCEEDED] == {f"r{i}" for i in range(18)} | {"done0", "done1"}
        assert by_status[StepStatus.INTERRUPTED] == {f"w{i}" for i in range(4)}
        assert by_status[StepStatus.PENDING] == {d["id"] for d in dependents}
        assert parked.needs_decision == ("w0", "w1", "w2", "w3")
        assert not out.exists()  # nothing that may have happened was called again

        final = await h.scheduler.execute("p", on_interrupted="skip")

    assert final.status is PlanStatus.COMPLETED
    assert not out.exists()


# --------------------------------------------------------------------------- arguments


@pytest.mark.anyio
async def test_resolved_arguments_that_do_not_fit_the_input_schema_are_never_sent(
    tmp_path: Path,
) -> None:
    counter = tmp_path / "counter"
    steps = [
        {"id": "src", "server": "tiny", "tool": "echo", "arguments": {"text": "many"}},
        {
            "id": "count",
            "server": "tiny",
            "tool": "tally",
            "arguments": {"counter": str(counter), "times": "${src}"},
        },
    ]
    async with Pool({"tiny": tiny_spec()}) as caller, harness(tmp_path, caller) as h:
        report, events = await h.run("args", steps)
        attempts = await h.store.get_attempts("args", 1, "count")

    count = report.steps[1]
    assert not counter.exists()  # the tool, which checks nothing itself, was never called
    assert count.status is StepStatus.FAILED and count.attempts == 1
    assert count.error is not None and count.error.kind is ErrorKind.INVALID_ARGUMENTS
    assert "times" in count.error.message and "integer" in count.error.message
    assert [a.status for a in attempts] == [StepStatus.FAILED]
    assert [e.step_id for e in events if e.kind is EventKind.STEP_STARTED] == ["src"]
