"""Caller-written steps, strict parsing, the prompt's parts, revisions and sessions."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from executor.catalog import Catalog
from executor.errors import PlanValidationError
from executor.ids import PlanId
from executor.plan import Plan, Step
from executor.policy import AgentConfig, AgentLimits, ToolPolicy
from executor.status import PlanStatus
from executor.validate import Problem, parse_steps, validate_plan
from planner import (
    CALLER_MODEL,
    LiteLLMBackend,
    ModelPlanner,
    ModelReply,
    PlanRequest,
    RepairSession,
    Revision,
    SessionEntry,
    StepsPlanner,
    parse_answer,
)
from planner.prompt import HISTORY_ENTRIES
from tests.conftest import NetworkGuard
from tests.planner.fake_openai import MODEL, FakeOpenAI
from tests.planner.test_litellm import GOOD

pytestmark = pytest.mark.anyio


def _codes(problems: list[object]) -> set[str]:
    return {p.code for p in problems if isinstance(p, Problem)}


# --------------------------------------------------------------------------- caller steps


async def test_caller_steps_are_validated_and_returned(catalog: Catalog) -> None:
    draft = await StepsPlanner(GOOD["steps"]).plan(PlanRequest(query="time", catalog=catalog))
    assert [s.id for s in draft.steps] == ["s1", "s2"]
    assert draft.model == CALLER_MODEL
    assert draft.attempts == 0
    assert draft.strategy == "Caller-written plan of 2 steps for: time"
    plan = draft.to_plan(PlanId("p9"), query="time", agent="default", session_id="sess")
    assert plan.status is PlanStatus.DRAFT
    assert plan.steps == draft.steps
    assert plan.session_id == "sess"


async def test_caller_steps_with_problems_are_refused_with_all_of_them(catalog: Catalog) -> None:
    steps: list[dict[str, Any]] = [
        {"id": "a", "server": "time", "tool": "nope", "arguments": {}},
        {"id": "b", "server": "math", "tool": "add", "arguments": {"a": "x", "b": 1}},
        {"id": "c", "server": "math", "tool": "add", "arguments": {"a": 1}, "bogus": True},
        {
            "id": "d",
            "server": "math",
            "tool": "add",
            "arguments": {"a": 1, "b": 2},
            "depends_on": ["c"],
        },
    ]
    with pytest.raises(PlanValidationError) as caught:
        await StepsPlanner(steps, strategy="mine").plan(PlanRequest(query="q", catalog=catalog))
    codes = _codes(caught.value.problems)
    assert {"unknown_tool", "invalid_arguments", "invalid_step"} <= codes
    # 'd' depends on 'c', which was dropped for its own problem: no noise about it.
    assert "unknown_dependency" not in codes


async def test_caller_steps_obey_the_agents_policy_and_limits(catalog: Catalog) -> None:
    agent = AgentConfig(
        name="tiny", tool_policy=ToolPolicy(deny=("notes",)), limits=AgentLimits(max_steps=1)
    )
    with pytest.raises(PlanValidationError) as caught:
        await StepsPlanner(GOOD["steps"]).plan(PlanRequest(query="q", catalog=catalog, agent=agent))
    assert {"tool_not_allowed", "too_many_steps"} <= _codes(caught.value.problems)


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("Here is the plan: {}", "not valid JSON"),
        (json.dumps(GOOD) + " Hope this helps!", "not valid JSON"),
        ("[1, 2]", "not an object"),
        (json.dumps({**GOOD, "notes": "x"}), "unexpected keys 'notes'"),
        (json.dumps({"steps": GOOD["steps"]}), "'strategy' is missing or empty"),
        (json.dumps({"strategy": " ", "steps": GOOD["steps"]}), "'strategy' is missing or empty"),
        (json.dumps({"strategy": "x", "steps": {}}), "'steps' is missing or not an array"),
        ('{"strategy": "x", "steps": [], "n": NaN}', "not valid JSON"),
    ],
)
def test_answers_are_parsed_strictly(text: str, fragment: str) -> None:
    _, _, problems = parse_answer(ModelReply(text=text))
    assert problems
    assert any(fragment in str(p) for p in problems), [str(p) for p in problems]


def test_a_fence_around_the_whole_answer_is_tolerated() -> None:
    strategy, steps, problems = parse_answer(ModelReply(text=f"```json\n{json.dumps(GOOD)}\n```"))
    assert problems == []
    assert strategy == GOOD["strategy"]
    assert steps == GOOD["steps"]


def test_tool_call_data_is_parsed_too() -> None:
    strategy, steps, problems = parse_answer(ModelReply(data=GOOD))
    assert (strategy, len(steps), problems) == (GOOD["strategy"], 2, [])


# --------------------------------------------------------------------------- prompt


def test_the_prompt_has_the_agents_voice_and_only_its_tools(catalog: Catalog) -> None:
    agent = AgentConfig(
        name="clerk",
        description="Keeps the office tidy.",
        system_prompt="You work for ACME.",
        personality="Terse and careful.",
        tool_policy=ToolPolicy(allow=("time", "notes")),
        limits=AgentLimits(max_steps=7),
    )
    ask = RepairSession(
        PlanRequest(query="note the time", catalog=catalog, agent=agent)
    ).next_request()
    assert ask is not None
    system = ask.messages[0].content
    assert system.startswith("You work for ACME.")
    assert "Keeps the office tidy." in system
    assert "Personality: Terse and careful." in system
    assert "at most 7" in system
    assert '"strategy"' in system
    assert "${s1.items.0.name}" in system  # the reference syntax, with a path
    assert "notes" in system
    assert 'server "math"' not in system
    assert 'server "web"' not in system
    assert ask.messages[-1].content.startswith("Request: note the time")


def test_the_example_names_only_a_shown_tool_the_closest_to_the_request(
    catalog: Catalog,
) -> None:
    agent = AgentConfig(name="a", tool_policy=ToolPolicy(deny=("web",)))
    shown = {t.key for t in catalog if t.server != "web"}
    queries = {
        "Add 2 and 3": ("math", "add"),
        "Save a note titled groceries": ("notes", "write_note"),
        "Convert 09:30 from Paris time to Tokyo time": ("time", "convert_time"),
        "Frobnicate the quux": ("math", "add"),  # no term matches: the first shown
    }
    systems = set()
    for query, expected in queries.items():
        ask = RepairSession(PlanRequest(query=query, catalog=catalog, agent=agent)).next_request()
        assert ask is not None
        system, example_request, example, request = ask.messages
        assert (example_request.role, example.role, request.role) == ("user", "assistant", "user")
        answer = json.loads(example.content)
        named = {(s["server"], s["tool"]) for s in answer["steps"]}
        assert named == {expected} and named <= shown
        # The example is a valid plan of the shown tools (a copy of it validates).
        assert validate_plan(parse_steps(answer["steps"])[0], catalog, agent.tool_policy) == []
        assert request.content.startswith(f"Request: {query}")
        # No server outside the catalog anywhere in the prompt.
        text = "\n".join(m.content for m in ask.messages)
        assert not re.search(r'"server": "(?!(time|math|notes|web)")', text)
        systems.add(system.content)
    # One system prompt for every request (a local server reuses its evaluated prefix).
    assert len(systems) == 1


def test_session_history_is_shown_and_bounded(catalog: Catalog) -> None:
    history = tuple(
        SessionEntry(
            query=f"query number {i}",
            strategy="did things " * 100,
            status=PlanStatus.COMPLETED,
            outcome="ok",
        )
        for i in range(HISTORY_ENTRIES + 3)
    )
    ask = RepairSession(PlanRequest(query="again", catalog=catalog, history=history)).next_request()
    assert ask is not None
    system = ask.messages[0].content
    assert "Earlier in this session" in system
    assert "query number 0" not in system  # only the last few
    assert f"query number {HISTORY_ENTRIES + 2}" in system
    section = system[system.index("Earlier in this session") :]
    assert all(len(line) <= 302 for line in section.splitlines())


def test_session_entry_from_a_stored_plan() -> None:
    plan = Plan(
        id=PlanId("p1"),
        query="what time",
        strategy="ask",
        status=PlanStatus.FAILED,
        steps=(Step(id="s1", server="time", tool="get_current_time"),),
    )
    entry = SessionEntry.from_plan(plan, "timezone unknown")
    assert (entry.query, entry.strategy, entry.status, entry.outcome) == (
        "what time",
        "ask",
        PlanStatus.FAILED,
        "timezone unknown",
    )


async def test_revise_shows_the_old_plan_and_the_feedback(
    fake_openai: FakeOpenAI, catalog: Catalog
) -> None:
    old = Plan(
        id=PlanId("p1"),
        query="Save the time in Paris as a note",
        strategy=GOOD["strategy"],
        status=PlanStatus.REJECTED,
        steps=tuple(Step.model_validate(s) for s in GOOD["steps"]),
    )
    revised = json.loads(json.dumps(GOOD))
    revised["steps"][0]["arguments"]["timezone"] = "Europe/Berlin"
    fake_openai.reply(revised)
    request = PlanRequest(
        query=old.query,
        catalog=catalog,
        revision=Revision(plan=old, feedback="Use Berlin instead of Paris."),
    )
    backend = LiteLLMBackend(MODEL, api_base=fake_openai.url, timeout_s=30)

    draft = await ModelPlanner(backend).plan(request)

    assert draft.steps[0].arguments == {"timezone": "Europe/Berlin"}
    assert draft.steps[1] == old.steps[1]  # what the user kept
    user = fake_openai.requests[0]["messages"][-1]["content"]
    assert "Use Berlin instead of Paris." in user
    assert "(status: rejected)" in user
    assert json.dumps(GOOD["steps"][0]["arguments"]) in user


# --------------------------------------------------------------------------- guard and API


async def test_the_guard_refuses_and_records_a_remote_model(
    network_guard: NetworkGuard, catalog: Catalog
) -> None:
    from planner import PlannerError

    for base in ("http://203.0.113.9/v1", "https://api.openai.invalid/v1"):
        backend = LiteLLMBackend(MODEL, api_base=base, api_key_env="K", env={"K": "k"}, timeout_s=5)
        with pytest.raises(PlannerError):
            await ModelPlanner(backend).plan(PlanRequest(query="q", catalog=catalog))
    assert any("203.0.113.9" in v for v in network_guard.violations)
    assert any("api.openai.invalid" in v for v in network_guard.violations)
    network_guard.violations.clear()  # seen and expected: let the test pass
