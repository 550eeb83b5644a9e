"""A reference the producing tool's output schema rules out is refused before anything runs."""

from __future__ import annotations

import pytest

from executor.errors import PlanValidationError
from server.service import TaskOrchestrator


@pytest.mark.anyio
async def test_a_reference_to_a_key_the_output_schema_lacks_is_refused_at_plan_time(
    orch: TaskOrchestrator,
) -> None:
    steps = [
        # A side effect first: with the reference checked only at run time, it would
        # have happened before the plan failed.
        {
            "id": "log",
            "server": "notes",
            "tool": "append",
            "arguments": {"key": "log", "text": "x"},
        },
        {
            "id": "rd",
            "server": "notes",
            "tool": "get",
            "arguments": {"key": "log"},
            "depends_on": ["log"],
        },
        {"id": "wc", "server": "text", "tool": "word_count", "arguments": {"text": "${rd.txt}"}},
    ]
    with pytest.raises(PlanValidationError) as caught:
        await orch.create_task_plan("count the log's words", steps=steps)

    (problem,) = caught.value.problems
    assert problem.step_id == "wc"  # type: ignore[attr-defined]
    assert problem.code == "invalid_reference"  # type: ignore[attr-defined]
    message = str(problem)
    assert "'${rd.txt}'" in message and "notes.get" in message
    assert "did you mean '${rd.text}'" in message
    assert (await orch.list_task_plans()).plans == []


@pytest.mark.anyio
async def test_references_the_output_schema_allows_are_accepted(orch: TaskOrchestrator) -> None:
    steps = [
        {"id": "rd", "server": "notes", "tool": "get", "arguments": {"key": "log"}},
        {"id": "wc", "server": "text", "tool": "word_count", "arguments": {"text": "${rd.text}"}},
        {
            "id": "n",
            "server": "stats",
            "tool": "evaluate",
            "arguments": {"expression": "${wc.words} + 1"},
        },
    ]
    plan = await orch.create_task_plan("count the log's words", steps=steps)
    assert [s.id for s in plan.steps] == ["rd", "wc", "n"]
