"""The litellm path, against a scripted OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from executor.catalog import Catalog
from executor.errors import PlanValidationError
from executor.ids import PlanId
from executor.policy import DEFAULT_MAX_STEPS
from executor.records import PlannerAttempt
from executor.validate import Problem
from planner import (
    LiteLLMBackend,
    ModelPlanner,
    PlannerError,
    PlannerFailure,
    PlannerOptions,
    PlanRequest,
    ResponseMode,
)
from planner.schema import ANSWER_BUDGET_CAP, MAX_SCHEMA_STEPS, answer_budget
from tests.planner.fake_openai import MODEL, FakeOpenAI

pytestmark = pytest.mark.anyio

GOOD: dict[str, Any] = {
    "strategy": "Read the time in Paris, then save it as a note.",
    "steps": [
        {
            "id": "s1",
            "server": "time",
            "tool": "get_current_time",
            "description": "Time in Paris",
            "arguments": {"timezone": "Europe/Paris"},
            "depends_on": [],
        },
        {
            "id": "s2",
            "server": "notes",
            "tool": "write_note",
            "description": "Save it",
            "arguments": {"title": "Paris time", "body": "It is ${s1.datetime} in Paris."},
            "depends_on": ["s1"],
        },
    ],
}

# One answer with an unknown tool, bad arguments and a cycle.
BAD: dict[str, Any] = {
    "strategy": "Get the time, add numbers, loop.",
    "steps": [
        {
            "id": "s1",
            "server": "time",
            "tool": "get_time",
            "description": "",
            "arguments": {"timezone": "UTC"},
            "depends_on": [],
        },
        {
            "id": "s2",
            "server": "math",
            "tool": "add",
            "description": "",
            "arguments": {"a": "two", "b": 3},
            "depends_on": [],
        },
        {
            "id": "s3",
            "server": "math",
            "tool": "add",
            "description": "",
            "arguments": {"a": "${s4}", "b": 1},
            "depends_on": [],
        },
        {
            "id": "s4",
            "server": "math",
            "tool": "add",
            "description": "",
            "arguments": {"a": "${s3}", "b": 1},
            "depends_on": [],
        },
    ],
}


def _backend(fake: FakeOpenAI, **options: Any) -> LiteLLMBackend:
    options.setdefault("timeout_s", 30)
    return LiteLLMBackend(MODEL, api_base=fake.url, **options)


def _request(catalog: Catalog, query: str = "Save the time in Paris as a note") -> PlanRequest:
    return PlanRequest(query=query, catalog=catalog, plan_id=PlanId("p-1"))


class Recorder:
    def __init__(self) -> None:
        self.attempts: list[PlannerAttempt] = []

    async def __call__(self, attempt: PlannerAttempt) -> None:
        self.attempts.append(attempt)


async def test_a_good_plan_comes_back_as_a_draft(fake_openai: FakeOpenAI, catalog: Catalog) -> None:
    fake_openai.reply(GOOD)
    recorder = Recorder()

    draft = await ModelPlanner(_backend(fake_openai)).plan(_request(catalog), on_attempt=recorder)

    assert [s.id for s in draft.steps] == ["s1", "s2"]
    assert draft.steps[1].depends_on == ("s1",)
    assert draft.strategy == GOOD["strategy"]
    assert set(draft.considered_tools) == {t.alias for t in catalog}
    assert draft.attempts == 1
    [attempt] = recorder.attempts
    assert attempt.plan_id == "p-1"
    assert attempt.prompt_tokens == 123  # as the provider reported
    assert attempt.completion_tokens == 45
    assert attempt.errors == ()
    assert attempt.model == MODEL

    [body] = fake_openai.requests
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema"
    branches = fmt["json_schema"]["schema"]["properties"]["steps"]["items"]["anyOf"]
    assert {
        (b["properties"]["server"]["enum"][0], b["properties"]["tool"]["enum"][0]) for b in branches
    } == {t.key for t in catalog}
    system = body["messages"][0]
    assert system["role"] == "system"
    assert 'server "time", tool "get_current_time"' in system["content"]
    assert "${s1}" in system["content"]  # the reference syntax is taught
    assert body["messages"][-1]["content"].startswith("Request: Save the time in Paris")
    assert fake_openai.headers[0]["authorization"] == "Bearer unused"


async def test_repair_sends_the_exact_problems_back(
    fake_openai: FakeOpenAI, catalog: Catalog
) -> None:
    fake_openai.reply(BAD)
    fake_openai.reply(GOOD)
    recorder = Recorder()

    draft = await ModelPlanner(_backend(fake_openai)).plan(_request(catalog), on_attempt=recorder)

    assert [s.id for s in draft.steps] == ["s1", "s2"]
    assert draft.attempts == 2
    first, second = recorder.attempts
    assert (first.attempt, second.attempt) == (1, 2)
    assert second.errors == ()
    codes = _codes(first.errors)
    assert {"unknown_tool", "invalid_arguments", "cycle"} <= codes

    repair = fake_openai.requests[1]["messages"]
    assert repair[-2] == {"role": "assistant", "content": json.dumps(BAD)}
    feedback = repair[-1]["content"]
    for error in first.errors:
        assert f"- {error}" in feedback  # every problem, word for word
    assert "get_current_time" in feedback  # the unknown tool's suggestion
    assert "s3 -> s4 -> s3" in feedback or "s4 -> s3 -> s4" in feedback


def _codes(errors: tuple[str, ...]) -> set[str]:
    text = "\n".join(errors)
    found = set()
    if "there is no tool" in text or "has no tool" in text:
        found.add("unknown_tool")
    if "does not fit the input schema" in text:
        found.add("invalid_arguments")
    if "form a cycle" in text:
        found.add("cycle")
    return found


async def test_a_plan_never_fixed_raises_with_the_problems(
    fake_openai: FakeOpenAI, catalog: Catalog
) -> None:
    for _ in range(3):
        fake_openai.reply(BAD)
    recorder = Recorder()

    with pytest.raises(PlanValidationError) as caught:
        await ModelPlanner(_backend(fake_openai), PlannerOptions(max_repairs=2)).plan(
            _request(catalog), on_attempt=recorder
        )

    assert len(fake_openai.requests) == 3
    assert [a.attempt for a in recorder.attempts] == [1, 2, 3]
    assert all(a.errors for a in recorder.attempts)
    problems = caught.value.problems
    assert all(isinstance(p, Problem) for p in problems)
    assert {p.code for p in problems if isinstance(p, Problem)} >= {
        "unknown_tool",
        "invalid_arguments",
        "cycle",
    }


async def test_max_repairs_zero_asks_once(fake_openai: FakeOpenAI, catalog: Catalog) -> None:
    fake_openai.reply(BAD)
    with pytest.raises(PlanValidationError):
        await ModelPlanner(_backend(fake_openai), PlannerOptions(max_repairs=0)).plan(
            _request(catalog)
        )
    assert len(fake_openai.requests) == 1


async def test_unparseable_answer_is_repaired(fake_openai: FakeOpenAI, catalog: Catalog) -> None:
    fake_openai.reply("Sure! Here is the plan: {")
    fake_openai.reply("```json\n" + json.dumps(GOOD) + "\n```")
    draft = await ModelPlanner(_backend(fake_openai)).plan(_request(catalog))
    assert len(draft.steps) == 2
    assert "not valid JSON" in fake_openai.requests[1]["messages"][-1]["content"]


async def test_provider_error_500_is_unavailable(fake_openai: FakeOpenAI, catalog: Catalog) -> None:
    fake_openai.error(500, "the GPU caught fire", kind="server_error")
    recorder = Recorder()
    with pytest.raises(PlannerError) as caught:
        await ModelPlanner(_backend(fake_openai)).plan(_request(catalog), on_attempt=recorder)
    assert caught.value.failure is PlannerFailure.UNAVAILABLE
    assert "HTTP 500" in str(caught.value)
    assert "the GPU caught fire" in str(caught.value)
    assert len(fake_openai.requests) == 1  # no retries behind our back
    [attempt] = recorder.attempts
    assert attempt.errors == (str(caught.value),)


async def test_provider_error_401_names_the_key_variable(
    fake_openai: FakeOpenAI, catalog: Catalog
) -> None:
    fake_openai.error(401, "Incorrect API key provided")
    backend = _backend(
        fake_openai, api_key_env="PLANNER_TEST_KEY", env={"PLANNER_TEST_KEY": "sk-t"}
    )
    with pytest.raises(PlannerError) as caught:
        await ModelPlanner(backend).plan(_request(catalog))
    assert caught.value.failure is PlannerFailure.AUTHENTICATION
    assert "'PLANNER_TEST_KEY'" in str(caught.value)
    assert fake_openai.headers[0]["authorization"] == "Bearer sk-t"


async def test_missing_key_variable_is_reported_before_any_call(
    fake_openai: FakeOpenAI, catalog: Catalog
) -> None:
    backend = _backend(fake_openai, api_key_env="PLANNER_TEST_ABSENT", env={})
    with pytest.raises(PlannerError) as caught:
        await ModelPlanner(backend).plan(_request(catalog))
    assert caught.value.failure is PlannerFailure.NOT_CONFIGURED
    assert "PLANNER_TEST_ABSENT" in str(caught.value)
    assert fake_openai.requests == []


async def test_timeout_is_reported_as_timeout(fake_openai: FakeOpenAI, catalog: Catalog) -> None:
    fake_openai.hang()
    with pytest.raises(PlannerError) as caught:
        await ModelPlanner(_backend(fake_openai, timeout_s=0.5)).plan(_request(catalog))
    assert caught.value.failure is PlannerFailure.TIMEOUT
    assert "no answer within 0.5 s" in str(caught.value)


async def test_json_schema_refused_with_422_falls_back_to_json_object(
    fake_openai: FakeOpenAI, catalog: Catalog
) -> None:
    fake_openai.error(422, "response_format json_schema is not supported")
    fake_openai.reply(GOOD)
    fake_openai.reply(GOOD)
    backend = _backend(fake_openai)
    planner = ModelPlanner(backend)

    draft = await planner.plan(_request(catalog))
    assert len(draft.steps) == 2
    refused, accepted = fake_openai.requests
    assert refused["response_format"]["type"] == "json_schema"
    assert accepted["response_format"]["type"] == "json_object"
    schema = accepted["response_format"]["schema"]
    assert schema == refused["response_format"]["json_schema"]["schema"]
    # The server constrains decoding with it; it is not repeated in the prompt.
    assert accepted["messages"] == refused["messages"]
    assert "JSON Schema" not in accepted["messages"][0]["content"]
    assert backend.working_mode is ResponseMode.JSON_OBJECT

    # The working mode is remembered: the next plan goes straight to json_object.
    await planner.plan(_request(catalog))
    assert fake_openai.requests[2]["response_format"]["type"] == "json_object"


async def test_falls_back_to_tool_calling_when_json_modes_are_refused(
    fake_openai: FakeOpenAI, catalog: Catalog
) -> None:
    fake_openai.error(422, "no json_schema here")
    fake_openai.error(400, "response_format json_object is not supported by this model")
    fake_openai.reply_tool_call(GOOD)
    backend = _backend(fake_openai)

    draft = await ModelPlanner(backend).plan(_request(catalog))

    assert len(draft.steps) == 2
    last = fake_openai.requests[-1]
    assert "response_format" not in last
    assert last["tool_choice"]["function"]["name"] == "submit_plan"
    assert last["tools"][0]["function"]["parameters"]["required"] == ["strategy", "steps"]
    assert backend.working_mode is ResponseMode.TOOLS


async def test_every_mode_refused_is_a_bad_request(
    fake_openai: FakeOpenAI, catalog: Catalog
) -> None:
    for _ in range(3):
        fake_openai.error(422, "structured output is not supported (tools, response_format)")
    with pytest.raises(PlannerError) as caught:
        await ModelPlanner(_backend(fake_openai)).plan(_request(catalog))
    assert caught.value.failure is PlannerFailure.BAD_REQUEST
    assert "response_mode='none'" in str(caught.value)


async def test_unconstrained_mode_sends_no_format(
    fake_openai: FakeOpenAI, catalog: Catalog
) -> None:
    fake_openai.reply(GOOD)
    await ModelPlanner(_backend(fake_openai, response_mode=ResponseMode.NONE)).plan(
        _request(catalog)
    )
    [body] = fake_openai.requests
    assert "response_format" not in body
    assert "tools" not in body


async def test_a_truncated_answer_is_said_to_be_cut_off(
    fake_openai: FakeOpenAI, catalog: Catalog
) -> None:
    fake_openai.reply(json.dumps(GOOD)[:40], finish_reason="length")
    fake_openai.reply(GOOD)
    await ModelPlanner(_backend(fake_openai)).plan(_request(catalog))
    feedback = fake_openai.requests[1]["messages"][-1]["content"]
    assert "cut off" in feedback


async def test_policy_limits_what_is_shown_and_what_validates(
    fake_openai: FakeOpenAI, catalog: Catalog
) -> None:
    from executor.policy import AgentConfig, ToolPolicy

    agent = AgentConfig(name="timekeeper", tool_policy=ToolPolicy(allow=("time",)))
    wrong = copy.deepcopy(GOOD)  # uses notes.write_note, which the agent may not use
    fake_openai.reply(wrong)
    fake_openai.reply({"strategy": "Read the clock.", "steps": [GOOD["steps"][0]]})
    request = PlanRequest(query="time in Paris", catalog=catalog, agent=agent)

    draft = await ModelPlanner(_backend(fake_openai)).plan(request)

    assert [s.tool for s in draft.steps] == ["get_current_time"]
    system = fake_openai.requests[0]["messages"][0]["content"]
    assert "write_note" not in system
    assert "not allowed" in fake_openai.requests[1]["messages"][-1]["content"]


async def test_ordered_steps_constrain_decoding_and_the_prompt_stays_the_same(
    fake_openai: FakeOpenAI, catalog: Catalog
) -> None:
    fake_openai.reply(GOOD)
    fake_openai.reply(GOOD)
    backend = _backend(fake_openai, response_mode=ResponseMode.JSON_OBJECT)
    await ModelPlanner(backend, PlannerOptions(ordered_steps=True)).plan(_request(catalog))
    await ModelPlanner(backend).plan(_request(catalog))
    ordered, plain = fake_openai.requests
    assert "step1" in ordered["response_format"]["schema"]["$defs"]  # positions spelled out
    assert "step1" not in plain["response_format"]["schema"]["$defs"]
    # The ordered schema constrains decoding only: the prompt shows a step limit.
    assert ordered["messages"][1:] == plain["messages"][1:]
    assert "at most 12" in ordered["messages"][0]["content"]  # MAX_ORDERED_STEPS
    assert f"at most {DEFAULT_MAX_STEPS}" in plain["messages"][0]["content"]  # the agent's limit


def test_the_answer_budget_follows_the_step_limit_and_the_tools(catalog: Catalog) -> None:
    tools = list(catalog)
    plain = answer_budget(tools, max_steps=50)
    ordered = answer_budget(tools, max_steps=50, ordered=True)
    few = answer_budget(tools, max_steps=2)
    assert few < ordered < plain <= ANSWER_BUDGET_CAP
    assert answer_budget(tools[:1], max_steps=2) < few  # a narrower tool, a smaller budget
    # Text the answer may copy into arguments (a long query) widens it.
    assert answer_budget(tools, max_steps=2, copied_text="x" * 3000) == few + 1000
    # Past the schema's own cap on steps, a higher limit asks for nothing more.
    assert answer_budget(tools, max_steps=100_000) == answer_budget(
        tools, max_steps=MAX_SCHEMA_STEPS
    )


async def test_an_endpoint_nobody_listens_on_is_unreachable(catalog: Catalog) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = LiteLLMBackend(MODEL, api_base=f"http://127.0.0.1:{port}/v1", timeout_s=10)
    with pytest.raises(PlannerError) as caught:
        await ModelPlanner(backend).plan(_request(catalog))
    assert caught.value.failure is PlannerFailure.UNAVAILABLE
    assert f"cannot reach http://127.0.0.1:{port}/v1" in str(caught.value)
