"""The plan model: status transitions, the plan hash, retry policies, steps."""

from __future__ import annotations

import itertools
import os
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from executor.errors import ErrorKind, TransitionError
from executor.plan import OnError, Plan, RetryPolicy, Step
from executor.policy import ToolPolicy
from executor.status import (
    PLAN_TRANSITIONS,
    RUN_TRANSITIONS,
    STEP_TRANSITIONS,
    PlanStatus,
    RunPhase,
    StepStatus,
    check_transition,
)

ROOT = Path(__file__).resolve().parents[2]

# ----------------------------------------------------------------- transitions
# Written out by hand, not derived from the tables under test.

LEGAL_PLAN = {
    ("draft", "awaiting_confirmation"),
    ("draft", "confirmed"),
    ("draft", "rejected"),
    ("awaiting_confirmation", "confirmed"),
    ("awaiting_confirmation", "rejected"),
    ("confirmed", "executing"),
    ("confirmed", "cancelled"),
    ("executing", "completed"),
    ("executing", "failed"),
    ("executing", "cancelled"),
    ("executing", "interrupted"),
    ("interrupted", "executing"),
    ("interrupted", "cancelled"),
    ("failed", "executing"),
}

LEGAL_STEP = {
    ("pending", "running"),
    ("pending", "skipped"),
    ("pending", "cancelled"),
    ("running", "succeeded"),
    ("running", "failed"),
    ("running", "cancelled"),
    ("running", "interrupted"),
    ("running", "pending"),
    ("failed", "pending"),
    ("skipped", "pending"),
    ("cancelled", "pending"),
    ("interrupted", "pending"),
    ("interrupted", "skipped"),
}

PLAN_PAIRS = list(itertools.product(PlanStatus, PlanStatus))
STEP_PAIRS = list(itertools.product(StepStatus, StepStatus))


@pytest.mark.parametrize(("current", "target"), PLAN_PAIRS, ids=lambda s: s.value)
def test_plan_transition(current: PlanStatus, target: PlanStatus) -> None:
    if (current.value, target.value) in LEGAL_PLAN:
        assert check_transition(current, target) is target
    else:
        with pytest.raises(TransitionError, match=f"'{current.value}' -> '{target.value}'"):
            check_transition(current, target)


@pytest.mark.parametrize(("current", "target"), STEP_PAIRS, ids=lambda s: s.value)
def test_step_transition(current: StepStatus, target: StepStatus) -> None:
    if (current.value, target.value) in LEGAL_STEP:
        assert check_transition(current, target) is target
    else:
        with pytest.raises(TransitionError, match="StepStatus"):
            check_transition(current, target)


LEGAL_RUN = {
    ("queued", "running"),
    ("queued", "ended"),
    ("queued", "abandoned"),
    ("queued", "closed"),
    ("running", "stopping"),
    ("running", "ending"),
    ("running", "abandoned"),
    ("running", "closed"),
    ("stopping", "ending"),
    ("stopping", "abandoned"),
    ("stopping", "closed"),
    ("ending", "ended"),
    ("ending", "abandoned"),
    ("ending", "closed"),
}


@pytest.mark.parametrize(
    ("current", "target"), list(itertools.product(RunPhase, RunPhase)), ids=lambda s: s.value
)
def test_run_phase_transition(current: RunPhase, target: RunPhase) -> None:
    if (current.value, target.value) in LEGAL_RUN:
        assert check_transition(current, target) is target
    else:
        with pytest.raises(TransitionError, match="RunPhase"):
            check_transition(current, target)
    # A run stops here for good in exactly the phases that lead nowhere.
    assert current.is_terminal == (current in {RunPhase.ENDED, RunPhase.ABANDONED, RunPhase.CLOSED})


def test_transition_tables_cover_every_status() -> None:
    assert {(a.value, b.value) for a, bs in RUN_TRANSITIONS.items() for b in bs} == LEGAL_RUN
    assert set(RUN_TRANSITIONS) == set(RunPhase)
    assert set(PLAN_TRANSITIONS) == set(PlanStatus)
    assert set(STEP_TRANSITIONS) == set(StepStatus)
    assert {(a.value, b.value) for a, bs in PLAN_TRANSITIONS.items() for b in bs} == LEGAL_PLAN
    assert {(a.value, b.value) for a, bs in STEP_TRANSITIONS.items() for b in bs} == LEGAL_STEP


@pytest.mark.parametrize(
    ("current", "target"),
    [(PlanStatus.DRAFT, StepStatus.RUNNING), (StepStatus.PENDING, PlanStatus.EXECUTING)],
)
def test_transition_across_kinds_is_refused(current: Any, target: Any) -> None:
    # "executing"/"running" exist in one table only; mixing kinds is always a bug.
    with pytest.raises(TransitionError):
        check_transition(current, target)


def test_terminal_statuses() -> None:
    assert {s for s in PlanStatus if s.is_terminal} == {
        PlanStatus.COMPLETED,
        PlanStatus.FAILED,
        PlanStatus.CANCELLED,
        PlanStatus.REJECTED,
    }
    assert {s for s in StepStatus if not s.is_terminal} == {StepStatus.PENDING, StepStatus.RUNNING}
    # Terminal plan statuses lead nowhere, except re-running a failed plan.
    for status in PlanStatus:
        if status.is_terminal and status is not PlanStatus.FAILED:
            assert not PLAN_TRANSITIONS[status]
    assert not STEP_TRANSITIONS[StepStatus.SUCCEEDED]


# ----------------------------------------------------------------- plan hash

GOLDEN_HASH = "v1:5c9ed6f18e69d98ebbc4d17db71e20a6ff06ecbbbe85c161e8d42e3aa6aa2a64"

GOLDEN_SOURCE = """
from datetime import UTC, datetime
from executor.plan import OnError, Plan, RetryPolicy, Step

plan = Plan(
    id="plan-golden",
    query="q",
    steps=(
        Step(
            id="s1",
            server="time",
            tool="get_current_time",
            arguments={"timezone": "Europe/Paris"},
        ),
        Step(
            id="s2",
            server="time",
            tool="convert_time",
            arguments={
                "time": "${s1.datetime}",
                "target_timezone": "Asia/Tokyo",
                "source_timezone": "Europe/Paris",
            },
            timeout_s=30,
            retry=RetryPolicy(maximum_attempts=5),
            on_error=OnError.CONTINUE,
        ),
    ),
    deadline_s=120,
    agent="default",
    created_at=datetime(2026, 1, 1, tzinfo=UTC),
)
"""


# v2 (deliberately changed when plans began to record their agent's run policy): the
# same plan with a policy. A plan without one keeps its v1 hash above, so approvals
# stored before v2 stay valid.
GOLDEN_HASH_V2 = "v2:601812985092d993df0ecd11ac16b3dc602c6f3bf0d200d789b7be6b1e281b5e"

GOLDEN_SOURCE_V2 = (
    GOLDEN_SOURCE
    + """
from executor.policy import AgentLimits, RunPolicy, ToolPolicy

plan = plan.model_copy(
    update={
        "policy": RunPolicy(
            tool_policy=ToolPolicy(allow=("time",), deny=("time.set_*",)),
            limits=AgentLimits(max_steps=20, max_parallel_steps=4, step_timeout_s=30),
            retry=RetryPolicy(maximum_attempts=2),
        )
    }
)
"""
)

GOLDEN = [(GOLDEN_SOURCE, GOLDEN_HASH), (GOLDEN_SOURCE_V2, GOLDEN_HASH_V2)]


def _golden_plan(source: str = GOLDEN_SOURCE) -> Plan:
    namespace: dict[str, Any] = {}
    exec(source, namespace)
    plan = namespace["plan"]
    assert isinstance(plan, Plan)
    return plan


@pytest.mark.parametrize(("source", "golden"), GOLDEN, ids=["v1", "v2"])
def test_plan_hash_matches_golden_value(source: str, golden: str) -> None:
    assert _golden_plan(source).plan_hash == golden


@pytest.mark.parametrize(("source", "golden"), GOLDEN, ids=["v1", "v2"])
@pytest.mark.parametrize("hash_seed", ["0", "12345"])
def test_plan_hash_is_the_same_in_another_process(hash_seed: str, source: str, golden: str) -> None:
    # A different PYTHONHASHSEED reorders sets and frozensets (non_retryable).
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    out = subprocess.run(
        [sys.executable, "-c", source + "\nprint(plan.plan_hash)"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == golden


def test_plan_hash_covers_the_run_policy() -> None:
    plan = _golden_plan(GOLDEN_SOURCE_V2)
    assert plan.policy is not None
    changes: list[dict[str, Any]] = [
        {"tool_policy": ToolPolicy(allow=("time",))},
        {"limits": plan.policy.limits.model_copy(update={"max_parallel_steps": 5})},
        {"retry": None},
    ]
    for update in changes:
        other = plan.model_copy(update={"policy": plan.policy.model_copy(update=update)})
        assert other.plan_hash != plan.plan_hash, update


def test_plan_hash_ignores_argument_key_order_and_dependency_order() -> None:
    a = Plan(
        id="p",
        steps=(
            Step(id="x", server="s", tool="t"),
            Step(id="y", server="s", tool="t"),
            Step(id="z", server="s", tool="t", arguments={"a": 1, "b": 2}, depends_on=("x", "y")),
        ),
    )
    b = Plan(
        id="p",
        steps=(
            Step(id="x", server="s", tool="t"),
            Step(id="y", server="s", tool="t"),
            Step(id="z", server="s", tool="t", arguments={"b": 2, "a": 1}, depends_on=("y", "x")),
        ),
    )
    assert a.plan_hash == b.plan_hash


# No '$': a stray '${' would be a malformed reference, which refs tests cover.
safe_text = st.text(st.characters(exclude_characters="$"), max_size=8)
json_scalars = st.none() | st.booleans() | st.integers(-1000, 1000) | safe_text
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(safe_text, inner, max_size=3),
    max_leaves=6,
)
names = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    count = draw(st.integers(1, 4))
    steps = []
    for i in range(count):
        earlier = [f"s{j}" for j in range(i)]
        steps.append(
            Step(
                id=f"s{i}",
                server=draw(names),
                tool=draw(names),
                arguments=draw(st.dictionaries(names, json_values, max_size=3)),
                depends_on=tuple(draw(st.lists(st.sampled_from(earlier), unique=True)))
                if earlier
                else (),
                timeout_s=draw(st.none() | st.floats(0.5, 100)),
                retry=draw(st.none() | st.builds(RetryPolicy, maximum_attempts=st.integers(1, 9))),
                on_error=draw(st.sampled_from(OnError)),
                description=draw(st.none() | st.text(max_size=10)),
            )
        )
    return Plan(
        id="p",
        steps=tuple(steps),
        deadline_s=draw(st.none() | st.floats(1, 1000)),
        query=draw(st.text(max_size=10)),
    )


def _with_step(plan: Plan, index: int, **changes: Any) -> Plan:
    steps = list(plan.steps)
    steps[index] = Step.model_validate({**steps[index].model_dump(), **changes})
    return plan.model_copy(update={"steps": tuple(steps)})


MUTATIONS = [
    "server",
    "tool",
    "arguments",
    "depends_on",
    "timeout_s",
    "retry",
    "on_error",
    "deadline_s",
]


def _mutate(plan: Plan, what: str, index: int) -> Plan:
    step = plan.steps[index]
    if what == "server":
        return _with_step(plan, index, server=step.server + "x")
    if what == "tool":
        return _with_step(plan, index, tool=step.tool + "x")
    if what == "arguments":
        return _with_step(plan, index, arguments={**step.arguments, "_added": 1})
    if what == "depends_on":
        if step.depends_on:
            return _with_step(plan, index, depends_on=step.depends_on[1:])
        # Add a dependency on a step that comes later: still a change of content.
        return _with_step(plan, index, depends_on=("later",))
    if what == "timeout_s":
        return _with_step(plan, index, timeout_s=(step.timeout_s or 1.0) + 1.0)
    if what == "retry":
        attempts = 2 if step.retry is None else step.retry.maximum_attempts + 1
        return _with_step(plan, index, retry=RetryPolicy(maximum_attempts=attempts))
    if what == "on_error":
        other = OnError.CONTINUE if step.on_error is OnError.FAIL else OnError.FAIL
        return _with_step(plan, index, on_error=other)
    assert what == "deadline_s"
    return plan.model_copy(update={"deadline_s": (plan.deadline_s or 1.0) * 2})


@settings(derandomize=True, max_examples=150, deadline=None)
@given(plan=plans(), what=st.sampled_from(MUTATIONS), pick=st.integers(0, 3))
def test_plan_hash_changes_with_what_would_run(plan: Plan, what: str, pick: int) -> None:
    changed = _mutate(plan, what, pick % len(plan.steps))
    assert changed.plan_hash != plan.plan_hash


@settings(derandomize=True, max_examples=100, deadline=None)
@given(
    plan=plans(),
    status=st.sampled_from(PlanStatus),
    approved=st.none() | st.text(max_size=20),
    shift=st.integers(1, 10**6),
    text=st.text(max_size=20),
    pick=st.integers(0, 3),
)
def test_plan_hash_ignores_what_would_not_run(
    plan: Plan, status: PlanStatus, approved: str | None, shift: int, text: str, pick: int
) -> None:
    other = plan.model_copy(
        update={
            "status": status,
            "approved_hash": approved,
            "created_at": datetime(2020, 1, 1, tzinfo=UTC) + timedelta(seconds=shift),
            "query": text,
            "strategy": text + "!",
        }
    )
    other = _with_step(other, pick % len(plan.steps), description=text)
    assert other.plan_hash == plan.plan_hash


def test_is_approved_binds_to_content() -> None:
    plan = _golden_plan()
    assert not plan.is_approved
    approved = plan.model_copy(update={"approved_hash": plan.plan_hash})
    assert approved.is_approved
    edited = _mutate(approved, "arguments", 0)
    assert not edited.is_approved


# ----------------------------------------------------------------- retry policy


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"initial_interval_s": 0}, "initial_interval_s"),
        ({"backoff_coefficient": 0.5}, "backoff_coefficient"),
        ({"maximum_attempts": 0}, "maximum_attempts"),
        ({"jitter": 1.5}, "jitter"),
        (
            {"initial_interval_s": 10, "maximum_interval_s": 5},
            "must be at least initial_interval_s",
        ),
        ({"max_attempts": 3}, "max_attempts"),
        ({"non_retryable": ["no_such_kind"]}, "non_retryable"),
    ],
)
def test_retry_policy_rejects_bad_values(fields: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        RetryPolicy.model_validate(fields)


def test_retry_delay_grows_exponentially_up_to_the_cap() -> None:
    policy = RetryPolicy(
        initial_interval_s=1, backoff_coefficient=2, maximum_interval_s=10, jitter=0
    )
    assert [policy.delay_s(n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    assert policy.delay_s(0) == 1  # attempt numbers start at 1; 0 is treated as 1


def test_retry_delay_jitter_stays_within_bounds_and_is_seedable() -> None:
    policy = RetryPolicy(initial_interval_s=4, maximum_interval_s=100, jitter=0.25)
    rng = random.Random(42)
    delays = [policy.delay_s(2, rng) for _ in range(200)]
    assert all(6.0 <= d <= 10.0 for d in delays)
    assert len(set(delays)) > 1
    again = random.Random(42)
    assert [policy.delay_s(2, again) for _ in range(200)] == delays


@pytest.mark.parametrize(
    ("attempt", "kind", "expected"),
    [
        (1, ErrorKind.NETWORK, True),
        (2, ErrorKind.TIMEOUT, True),
        (3, ErrorKind.NETWORK, False),  # the third attempt was the last
        (1, ErrorKind.INVALID_ARGUMENTS, False),
        (1, ErrorKind.AUTHENTICATION, False),
        (1, ErrorKind.AUTHORIZATION, False),
        (1, ErrorKind.CANCELLED, False),
        (1, ErrorKind.INTERNAL, False),
        (1, ErrorKind.TOOL_ERROR, True),
    ],
)
def test_should_retry_default_policy(attempt: int, kind: ErrorKind, expected: bool) -> None:
    assert RetryPolicy().should_retry(attempt, kind) is expected


def test_should_retry_custom_policy() -> None:
    once = RetryPolicy(maximum_attempts=1)
    assert not once.should_retry(1, ErrorKind.NETWORK)
    custom = RetryPolicy(maximum_attempts=5, non_retryable=frozenset({ErrorKind.TOOL_ERROR}))
    assert not custom.should_retry(1, ErrorKind.TOOL_ERROR)
    assert custom.should_retry(4, ErrorKind.INVALID_ARGUMENTS)
    assert not custom.should_retry(5, ErrorKind.NETWORK)


def test_retry_policy_json_round_trip_is_sorted() -> None:
    policy = RetryPolicy()
    dumped = policy.model_dump(mode="json")
    assert dumped["non_retryable"] == sorted(dumped["non_retryable"])
    assert RetryPolicy.model_validate_json(policy.model_dump_json()) == policy


# ----------------------------------------------------------------- steps


def test_references_become_dependencies_once() -> None:
    step = Step(
        id="c",
        server="s",
        tool="t",
        arguments={"x": "${a.out}", "y": ["${b}", "${a}"], "z": "$${literal}"},
        depends_on=("b", "b"),
    )
    assert step.depends_on == ("b", "a")


@pytest.mark.parametrize("bad_id", ["", "1abc", "a b", "a.b", "x" * 65])
def test_step_id_must_match_the_pattern(bad_id: str) -> None:
    with pytest.raises(ValidationError, match="id"):
        Step(id=bad_id, server="s", tool="t")


def test_step_rejects_unknown_fields_and_bad_values() -> None:
    with pytest.raises(ValidationError, match="extra"):
        Step.model_validate({"id": "a", "server": "s", "tool": "t", "args": {}})
    with pytest.raises(ValidationError, match="timeout_s"):
        Step(id="a", server="s", tool="t", timeout_s=0)
    with pytest.raises(ValidationError, match="depends_on"):
        Step.model_validate({"id": "a", "server": "s", "tool": "t", "depends_on": ["not ok"]})


def test_plan_step_lookup() -> None:
    plan = _golden_plan()
    assert plan.step("s2").tool == "convert_time"
    with pytest.raises(KeyError):
        plan.step("nope")


def test_plan_hash_accepts_lone_surrogates() -> None:
    # json.loads('"\\ud800"') yields a lone surrogate; callers can send one.
    a = Plan(id="p", steps=(Step(id="a", server="s", tool="t", arguments={"x": "\ud800"}),))
    b = Plan(id="p", steps=(Step(id="a", server="s", tool="t", arguments={"x": "\ud801"}),))
    assert a.plan_hash.startswith("v1:")
    assert a.plan_hash != b.plan_hash
