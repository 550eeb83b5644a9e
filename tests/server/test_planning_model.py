"""Planning with a configured model through the MCP face, against a scripted model server.

The config names the model, its endpoint and its `model_settings`, as a user
writes them; `create_plan` is called as a host calls it. The scripted server
(`tests/planner/fake_openai.py`) answers late, not at all, or cut at the token
limit, and each failure must come back as a planning error naming the setting
to change, never as an internal error.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from planner import answer_budget
from planner.shortlist import allowed_tools
from server.config import load_config
from server.mcp import build_server
from server.service import TaskOrchestrator
from tests.e2e.support import structured, tool_text, write_config
from tests.planner.fake_openai import COUNT_PLAN, COUNT_QUERY, MODEL, FakeOpenAI

pytestmark = pytest.mark.anyio

QUERY = COUNT_QUERY
PLAN = COUNT_PLAN


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A scripted OpenAI-compatible server on 127.0.0.1; every answer must be used."""
    with FakeOpenAI() as server:
        yield server
    assert not server.unexpected, server.unexpected


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def _orchestrator(tmp_path: Path, **top: Any) -> TaskOrchestrator:
    config = load_config(write_config(tmp_path, servers=("text",), **top), env={})
    return TaskOrchestrator(config, db_path=tmp_path / "t.db")


@pytest.fixture
async def scripted(tmp_path: Path, fake_openai: FakeOpenAI) -> AsyncIterator[TaskOrchestrator]:
    """An orchestrator whose config plans with the scripted model, several ways."""
    orch = await _orchestrator(
        tmp_path,
        model=MODEL,
        api_base=fake_openai.url,
        model_settings={"timeout_s": 60, "max_tokens": 700, "response_mode": "json_object"},
        agents={
            "hasty": {"model_settings": {"timeout_s": 1}},
            "unreachable": {"model": MODEL, "api_base": f"http://127.0.0.1:{_dead_port()}/v1"},
            "own": {"model": "openai/elsewhere", "api_key_env": "TASKORCH_TEST_UNSET_KEY"},
            "short": {
                "model": MODEL,
                "api_base": fake_openai.url,
                "model_settings": {"max_tokens": 64},
            },
        },
    )
    async with orch:
        yield orch


async def _create_plan(orch: TaskOrchestrator, agent: str | None = None) -> Any:
    arguments: dict[str, Any] = {"query": QUERY}
    if agent is not None:
        arguments["agent"] = agent
    async with Client(build_server(orch)) as client:
        return await client.call_tool("create_plan", arguments)


def _no_internal_error(caplog: pytest.LogCaptureFixture, text: str) -> None:
    assert "internal error" not in text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_the_config_settings_reach_the_model_request(
    scripted: TaskOrchestrator, fake_openai: FakeOpenAI
) -> None:
    fake_openai.reply(PLAN)
    plan = structured(await _create_plan(scripted))
    assert [s["tool"] for s in plan["steps"]] == ["word_count"]
    [body] = fake_openai.requests
    assert body["max_tokens"] == 700
    assert body["response_format"]["type"] == "json_object"  # no json_schema attempt first


async def test_a_model_timeout_names_the_setting(
    scripted: TaskOrchestrator, fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    # The agent names no model: the config's model, with the agent's timeout on top.
    fake_openai.reply(PLAN, delay_s=10)
    result = await _create_plan(scripted, agent="hasty")
    text = tool_text(result)
    assert result.is_error
    assert "planning failed (timeout)" in text
    assert "no answer within 1 s" in text
    assert "agents.hasty.model_settings.timeout_s in " in text
    _no_internal_error(caplog, text)
    assert fake_openai.requests[0]["max_tokens"] == 700  # the config's, for its model


async def test_a_slow_model_within_the_timeout_gives_a_plan(
    scripted: TaskOrchestrator, fake_openai: FakeOpenAI
) -> None:
    fake_openai.reply(PLAN, delay_s=2)
    plan = structured(await _create_plan(scripted))
    assert plan["steps"][0]["tool"] == "word_count"


async def test_an_unreachable_model_server_names_api_base(
    scripted: TaskOrchestrator, caplog: pytest.LogCaptureFixture
) -> None:
    result = await _create_plan(scripted, agent="unreachable")
    text = tool_text(result)
    assert result.is_error
    assert "planning failed (unavailable)" in text
    assert "cannot reach http://127.0.0.1:" in text
    assert "agents.unreachable.api_base in " in text
    _no_internal_error(caplog, text)


async def test_answers_cut_at_the_token_limit_name_max_tokens(
    scripted: TaskOrchestrator, fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(3):  # the first answer and two repairs
        fake_openai.reply('{"strategy": "Count the words in the text and', finish_reason="length")
    result = await _create_plan(scripted, agent="short")
    text = tool_text(result)
    assert result.is_error
    assert "planning failed (truncated)" in text
    assert "3 of 3 answers" in text
    assert "(64 tokens)" in text
    assert "agents.short.model_settings.max_tokens in " in text
    _no_internal_error(caplog, text)
    # The agent names its own model: the config's settings are not for it.
    assert [r["max_tokens"] for r in fake_openai.requests] == [64, 64, 64]
    assert fake_openai.requests[0]["response_format"]["type"] == "json_schema"


async def test_an_agent_with_its_own_model_never_gets_the_configs_endpoint(
    scripted: TaskOrchestrator, fake_openai: FakeOpenAI
) -> None:
    result = await _create_plan(scripted, agent="own")
    assert result.is_error
    assert "'TASKORCH_TEST_UNSET_KEY'" in tool_text(result)
    assert "agents.own.api_key_env in " in tool_text(result)
    assert fake_openai.requests == []  # the config's api_base was not used


async def test_unset_max_tokens_is_derived_from_the_step_limit_and_tools(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.reply(PLAN)
    orch = await _orchestrator(tmp_path, model=MODEL, api_base=fake_openai.url)
    async with orch:
        structured(await _create_plan(orch))
        tools = allowed_tools(await orch.catalog(), _default().tool_policy)
    budget = answer_budget(
        tools, max_steps=_default().limits.max_steps, ordered=True, copied_text=QUERY
    )
    assert fake_openai.requests[0]["max_tokens"] == budget
    assert budget < 4096


def _default() -> Any:
    from server.agents import DEFAULT_AGENT

    return DEFAULT_AGENT
