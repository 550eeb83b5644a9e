"""Fitting answers to the budget: what stays whole, what becomes a preview, nothing cut silently."""

from __future__ import annotations

import pytest

from executor.calls import ToolResult
from executor.errors import ConfigError
from executor.ids import PlanId
from executor.outputs import summarize
from executor.plan import Plan, Step
from executor.records import StepState
from executor.status import StepStatus
from server.answers import answer_bytes, fit
from server.config import parse_config
from server.views import plan_view, summaries


def _plan(outputs: dict[str, ToolResult]) -> tuple[Plan, dict[str, StepState]]:
    plan = Plan(
        id=PlanId("p"),
        query="q",
        steps=tuple(Step(id=sid, server="s", tool="t") for sid in outputs),
    )
    states = {}
    for sid, result in outputs.items():
        summary = summarize(result)
        states[sid] = StepState(
            plan_id=plan.id,
            version=1,
            step_id=sid,
            status=StepStatus.SUCCEEDED,
            output=result.output() if summary.inline else None,
            summary=summary,
        )
    return plan, states


def _text(n: int, ch: str = "a") -> ToolResult:
    return ToolResult(content=[{"type": "text", "text": ch * n}])


@pytest.mark.parametrize("budget", [12_000, 32_000])
def test_small_outputs_stay_whole_and_large_ones_share_the_rest(budget: int) -> None:
    outputs = {"tiny": _text(10), "mid": _text(3_000, "é"), "big": _text(2_000_000)}
    outputs.update({f"s{i}": _text(800) for i in range(5)})
    view = fit(plan_view(*_plan(outputs)), budget)
    assert answer_bytes(view) <= budget
    steps = {s.id: s for s in view.steps}
    assert steps["tiny"].output == "a" * 10
    for step in view.steps:
        # Every output is either whole, or a preview that says how big it is and where.
        assert (step.output is None) != (step.output_preview is None), step.id
        if step.output_preview is not None:
            assert step.output_preview.size_bytes == len(outputs[step.id].text().encode())
            assert step.output_preview.uri == f"plan://p/steps/{step.id}/output"
            assert outputs[step.id].text().startswith(step.output_preview.head)
    assert steps["big"].output_preview is not None
    if budget == 32_000:
        assert steps["mid"].output is not None and steps["s0"].output is not None
        assert len(steps["big"].output_preview.head) > 1000


def test_a_budget_too_small_for_the_plan_gets_every_output_as_a_bare_preview() -> None:
    view = fit(plan_view(*_plan({f"s{i}": _text(5_000) for i in range(8)})), 2_000)
    assert all(s.output is None and s.output_preview is not None for s in view.steps)
    assert all(s.output_preview.head == "" for s in view.steps if s.output_preview)


def test_a_view_that_fits_is_left_alone() -> None:
    view = plan_view(*_plan({"a": _text(100)}))
    assert fit(view, 32_000) is view


def test_the_reserved_server_name_is_refused() -> None:
    with pytest.raises(ConfigError, match="reserved for taskorch's built-in steps"):
        parse_config({"mcpServers": {"taskorch": {"command": "x"}}}, source="c.json")


def test_list_plans_never_shows_a_whole_query() -> None:
    plan = Plan(id=PlanId("p"), query="q" * 10_000, steps=(Step(id="a", server="s", tool="t"),))
    [line] = summaries([plan]).plans
    assert len(line.query) == 200 and line.query.endswith("…")
