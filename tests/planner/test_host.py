"""The host's own model: planning through MCP sampling, with an in-process client.

The tool is a real `MCPServer` tool whose parameter is filled by
`HostPlanning`'s resolver chain; the client answers the sampling requests from
a script. Both protocol eras are covered: 2026-07-28 (the default, rounds of
`InputRequiredResult`) and 2025-11-25 (`mode="legacy"`, requests mid-call).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import pytest
from mcp import Client
from mcp.client.session import ClientRequestContext
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.resolve import Resolve
from mcp.types import (
    CreateMessageRequestParams,
    CreateMessageResult,
    ImageContent,
    TextContent,
)

from executor.catalog import Catalog
from executor.errors import PlanValidationError
from executor.policy import AgentConfig, ToolPolicy
from planner import (
    HostPlanning,
    HostPlanOutcome,
    ModelPlanner,
    PlannerError,
    PlannerFailure,
    PlannerOptions,
    PlanRequest,
    SamplingBackend,
    host_supports_sampling,
)
from tests.planner.conftest import example_tools
from tests.planner.test_litellm import BAD, GOOD

pytestmark = pytest.mark.anyio


async def _host_request(query: str, ctx: Context) -> PlanRequest | None:
    if not host_supports_sampling(ctx):
        return None
    if query == "nothing allowed":
        agent = AgentConfig(name="locked", tool_policy=ToolPolicy(allow=()))
        return PlanRequest(query=query, catalog=Catalog(example_tools()), agent=agent)
    return PlanRequest(query=query, catalog=Catalog(example_tools()))


HOST = HostPlanning(_host_request, PlannerOptions(max_repairs=2))


async def create_plan(
    query: str,
    ctx: Context,
    planned: Annotated[HostPlanOutcome | None, Resolve(HOST.resolver)],
) -> dict[str, Any]:
    """Plan with the host's model (the shape the face's create_plan takes)."""
    if planned is None:
        return {"status": "no_host_model"}
    protocol = ctx.protocol_version
    attempts = [[a.attempt, list(a.errors), a.model] for a in planned.attempts]
    try:
        draft = planned.unwrap()
    except PlanValidationError as exc:
        problems = [str(p) for p in exc.problems]
        return {"status": "invalid", "problems": problems, "protocol": protocol}
    except PlannerError as exc:
        return {"status": "error", "failure": exc.failure.value, "attempts": attempts}
    return {
        "protocol": protocol,
        "status": "planned",
        "steps": [s.id for s in draft.steps],
        "strategy": draft.strategy,
        "attempts": attempts,
    }


def _app() -> MCPServer:
    app = MCPServer("planner-host-test")
    app.add_tool(create_plan)
    return app


class ScriptedHost:
    """Answers sampling requests from a list, recording what it was asked."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.asked: list[CreateMessageRequestParams] = []

    async def __call__(
        self, context: ClientRequestContext, params: CreateMessageRequestParams
    ) -> CreateMessageResult:
        self.asked.append(params)
        answer = self.answers.pop(0)
        if isinstance(answer, CreateMessageResult):
            return answer
        text = answer if isinstance(answer, str) else json.dumps(answer)
        return CreateMessageResult(
            role="assistant", content=TextContent(type="text", text=text), model="host-llm"
        )


async def _call(
    host: ScriptedHost | None, *, legacy: bool, query: str = "Save the time in Paris"
) -> dict[str, Any]:
    options: dict[str, Any] = {"mode": "legacy"} if legacy else {}
    if host is not None:
        options["sampling_callback"] = host
    async with Client(_app(), **options) as client:
        result = await client.call_tool("create_plan", {"query": query})
    assert not result.is_error, result.content
    assert result.structured_content is not None
    out: dict[str, Any] = result.structured_content
    return out


@pytest.mark.parametrize("legacy", [False, True], ids=["2026-07-28", "2025-11-25"])
async def test_host_model_plans_and_repairs(legacy: bool) -> None:
    host = ScriptedHost(BAD, GOOD)

    out = await _call(host, legacy=legacy)

    assert out["protocol"] == ("2025-11-25" if legacy else "2026-07-28")
    assert out["status"] == "planned"
    assert out["steps"] == ["s1", "s2"]
    assert [a[0] for a in out["attempts"]] == [1, 2]
    assert out["attempts"][0][1]  # the first answer's problems were recorded
    assert out["attempts"][1][1] == []
    assert {a[2] for a in out["attempts"]} == {"host"}
    # Asked exactly twice: each question once, however many rounds it took.
    assert len(host.asked) == 2
    first, repair = host.asked
    assert first.system_prompt is not None
    assert 'server "time", tool "get_current_time"' in first.system_prompt
    assert "validates against this JSON Schema" in first.system_prompt
    assert first.include_context == "none"
    last = repair.messages[-1].content
    assert isinstance(last, TextContent)
    for problem in out["attempts"][0][1]:
        assert f"- {problem}" in last.text
    answered = repair.messages[-2].content
    assert isinstance(answered, TextContent)
    assert json.loads(answered.text) == BAD


@pytest.mark.parametrize("legacy", [False, True], ids=["2026-07-28", "2025-11-25"])
async def test_host_model_that_never_fixes_its_plan(legacy: bool) -> None:
    host = ScriptedHost(BAD, BAD, BAD)
    out = await _call(host, legacy=legacy)
    assert out["protocol"] == ("2025-11-25" if legacy else "2026-07-28")
    assert out["status"] == "invalid"
    assert len(host.asked) == 3
    assert any("form a cycle" in p for p in out["problems"])


async def test_a_non_text_answer_is_a_clear_error() -> None:
    image = CreateMessageResult(
        role="assistant",
        content=ImageContent(type="image", data="aGk=", mime_type="image/png"),
        model="host-llm",
    )
    out = await _call(ScriptedHost(image), legacy=False)
    assert out["status"] == "error"
    assert out["failure"] == PlannerFailure.BAD_RESPONSE.value
    assert len(out["attempts"]) == 1


async def test_a_client_without_sampling_is_skipped() -> None:
    out = await _call(None, legacy=False)
    assert out == {"status": "no_host_model"}


async def test_sampling_backend_with_a_sampler_function(catalog: Catalog) -> None:
    asked: list[CreateMessageRequestParams] = []

    async def sampler(params: CreateMessageRequestParams) -> CreateMessageResult:
        asked.append(params)
        return CreateMessageResult(
            role="assistant", content=TextContent(type="text", text=json.dumps(GOOD)), model="m"
        )

    draft = await ModelPlanner(SamplingBackend(sampler)).plan(
        PlanRequest(query="Save the time in Paris", catalog=catalog)
    )
    assert [s.id for s in draft.steps] == ["s1", "s2"]
    assert draft.model == "host"
    [params] = asked
    assert params.messages[0].role == "user"


async def test_sampling_backend_maps_a_refusal(catalog: Catalog) -> None:
    from mcp.shared.exceptions import MCPError

    async def sampler(params: CreateMessageRequestParams) -> CreateMessageResult:
        raise MCPError(code=-1, message="the user declined")

    with pytest.raises(PlannerError) as caught:
        await ModelPlanner(SamplingBackend(sampler)).plan(
            PlanRequest(query="Save the time in Paris", catalog=catalog)
        )
    assert caught.value.failure is PlannerFailure.REFUSED
    assert "the user declined" in str(caught.value)


async def test_a_planning_error_before_sampling_reaches_the_tool() -> None:
    host = ScriptedHost()
    out = await _call(host, legacy=False, query="nothing allowed")
    assert out == {"status": "error", "failure": "not_configured", "attempts": []}
    assert host.asked == []
