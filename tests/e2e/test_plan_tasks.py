"""Planning as an MCP task, through `taskorch serve --http` and the SDK's client.

A host that declares `io.modelcontextprotocol/tasks` and has taskorch plan with
a model (the config's, here a scripted OpenAI-compatible server on 127.0.0.1;
or its own, through sampling) gets a task handle from `create_plan`; the task
completes with exactly what `create_plan` answers inline, is cancelled by
`tasks/cancel`, completes with the planner's error as a tool error, and after a
restart of taskorch reads as failed with a message that says why. On
house-face (cf178a8) `create_plan` answered inline whatever the host declared.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.client.context import ClientRequestContext
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import (
    CallToolResult,
    CreateMessageRequestParams,
    CreateMessageResult,
    InputRequiredResult,
    InputResponse,
    TextContent,
)
from mcp_types.jsonrpc import INVALID_PARAMS

from executor.task_client import TasksClient
from executor.tasks_wire import (
    CancelTaskRequest,
    CreateTaskResult,
    DetailedTask,
    GetTaskRequest,
    TaskAck,
    TaskIdParams,
    TaskStatus,
)
from tests.e2e.support import http_server, structured, tool_text, write_config
from tests.planner.fake_openai import COUNT_PLAN, COUNT_QUERY, MODEL, FakeOpenAI

pytestmark = pytest.mark.anyio

QUERY = COUNT_QUERY
PLAN = COUNT_PLAN
_TERMINAL = (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A scripted OpenAI-compatible server on 127.0.0.1; every answer must be used."""
    with FakeOpenAI() as server:
        yield server
    assert not server.unexpected, server.unexpected


def _model_config(folder: Path, fake: FakeOpenAI) -> Path:
    settings = {"timeout_s": 60, "response_mode": "json_object"}
    return write_config(
        folder, servers=("text",), model=MODEL, api_base=fake.url, model_settings=settings
    )


@pytest.fixture(scope="module")
def model_served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, FakeOpenAI]]:
    """One `taskorch serve --http` planning with the scripted model (tests with no restart)."""
    folder = tmp_path_factory.mktemp("model-served")
    with FakeOpenAI() as fake, http_server(_model_config(folder, fake), folder / "t.db") as url:
        yield url, fake


@pytest.fixture
def served(model_served: tuple[str, FakeOpenAI]) -> Iterator[tuple[str, FakeOpenAI]]:
    """The shared server, its scripted model checked to have used every answer after a test."""
    _, fake = model_served
    fake.requests.clear()
    yield model_served
    assert not fake.unexpected, fake.unexpected


@asynccontextmanager
async def _client(url: str, *, tasks: bool = True, **options: Any) -> AsyncIterator[Client]:
    extensions = [TasksClient()] if tasks else []
    async with Client(streamable_http_client(url), extensions=extensions, **options) as client:
        yield client


async def _handle(client: Client, arguments: dict[str, Any]) -> CreateTaskResult:
    result = await client.session.call_tool("create_plan", arguments, allow_claimed=True)
    assert isinstance(result, CreateTaskResult), result
    return result


async def _get(client: Client, task_id: str) -> DetailedTask:
    request = GetTaskRequest(params=TaskIdParams(task_id=task_id))
    return await client.session.send_request(request, DetailedTask)


async def _until_done(client: Client, task_id: str) -> DetailedTask:
    with anyio.fail_after(60):
        while (task := await _get(client, task_id)).status not in _TERMINAL:  # noqa: ASYNC110
            await anyio.sleep(0.05)
        return task


def _without_identity(answer: dict[str, Any]) -> dict[str, Any]:
    """A plan answer without what differs between two plans made alike (its id, its time)."""
    text = json.dumps({k: v for k, v in answer.items() if k != "created_at"})
    same: dict[str, Any] = json.loads(text.replace(str(answer["plan_id"]), "PLAN_ID"))
    return same


async def test_a_planning_task_completes_with_what_create_plan_answers_inline(
    served: tuple[str, FakeOpenAI],
) -> None:
    url, fake_openai = served
    fake_openai.reply(PLAN, delay_s=0.3)
    fake_openai.reply(PLAN)
    session = {"query": QUERY, "session_id": "completes"}
    async with _client(url) as client:
        handle = await _handle(client, session)
        assert len(handle.task_id) >= 32  # unguessable
        assert handle.status is TaskStatus.WORKING
        done = await _until_done(client, handle.task_id)
        assert done.status is TaskStatus.COMPLETED, done
        plans = structured(await client.call_tool("list_plans", {"session_id": "completes"}))
    async with _client(url, tasks=False) as plain:
        inline = await plain.call_tool("create_plan", session)
    from_task = CallToolResult.model_validate(done.result)
    assert not from_task.is_error, tool_text(from_task)
    answer = from_task.structured_content
    assert answer is not None
    assert answer["status"] == "awaiting_confirmation"  # approval is execute_plan's round
    assert [s["tool"] for s in answer["steps"]] == ["word_count"]
    assert [p["plan_id"] for p in plans["plans"]] == [answer["plan_id"]]  # stored once
    # The same shape as the inline answer: structured content and its text.
    expected = structured(inline)
    assert _without_identity(answer) == _without_identity(expected)
    assert [c.type for c in from_task.content] == [c.type for c in inline.content]
    assert json.loads(tool_text(from_task)) == answer


async def test_caller_written_steps_are_answered_inline_even_for_a_tasks_host(
    served: tuple[str, FakeOpenAI],
) -> None:
    url, fake_openai = served
    async with _client(url) as client:
        arguments = {"query": QUERY, "steps": PLAN["steps"]}
        result = await client.session.call_tool("create_plan", arguments, allow_claimed=True)
    assert isinstance(result, CallToolResult), result
    assert structured(result)["status"] == "awaiting_confirmation"
    assert fake_openai.requests == []


async def test_tasks_cancel_stops_the_planning(served: tuple[str, FakeOpenAI]) -> None:
    url, fake_openai = served
    # A model that does answer, a little later: a planning the cancel did not stop
    # would get this plan and store it.
    fake_openai.reply(PLAN, delay_s=1.0)
    async with _client(url) as client:
        handle = await _handle(client, {"query": QUERY, "session_id": "cancelled"})
        with anyio.fail_after(60):
            while not fake_openai.requests:  # noqa: ASYNC110 - the model is being asked
                await anyio.sleep(0.05)
        request = CancelTaskRequest(params=TaskIdParams(task_id=handle.task_id))
        await client.session.send_request(request, TaskAck)
        done = await _until_done(client, handle.task_id)
        assert done.status is TaskStatus.CANCELLED, done
        await anyio.sleep(1.5)  # past the model's answer: a planning that went on stores it
        plans = structured(await client.call_tool("list_plans", {"session_id": "cancelled"}))
    assert plans["plans"] == []
    assert len(fake_openai.requests) == 1  # no repair round after the cancel


async def test_a_planner_error_completes_the_task_as_the_inline_tool_error(
    served: tuple[str, FakeOpenAI],
) -> None:
    # SEP-2663: a tool error (isError) is a `completed` task; `failed` is for JSON-RPC errors.
    url, fake_openai = served
    fake_openai.error(401, "Incorrect API key provided", kind="authentication_error")
    fake_openai.error(401, "Incorrect API key provided", kind="authentication_error")
    async with _client(url) as client:
        handle = await _handle(client, {"query": QUERY})
        done = await _until_done(client, handle.task_id)
    async with _client(url, tasks=False) as plain:
        inline = await plain.call_tool("create_plan", {"query": QUERY})
    assert done.status is TaskStatus.COMPLETED, done
    from_task = CallToolResult.model_validate(done.result)
    assert from_task.is_error and inline.is_error
    assert tool_text(from_task) == tool_text(inline)
    assert "planning failed" in tool_text(from_task)


async def test_after_a_restart_a_planning_task_reads_as_failed_and_says_why(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.hang()
    config = _model_config(tmp_path, fake_openai)
    db = tmp_path / "t.db"
    with http_server(config, db) as url:
        async with _client(url) as client:
            handle = await _handle(client, {"query": QUERY})
            with anyio.fail_after(60):
                while not fake_openai.requests:  # noqa: ASYNC110 - the model is being asked
                    await anyio.sleep(0.05)
    with http_server(config, db) as url, anyio.fail_after(60):
        async with _client(url) as client:
            lost = await _get(client, handle.task_id)
            # A forged id (the right shape, another secret) is unknown, not "lost".
            head, _, _ = handle.task_id.rpartition(".")
            with pytest.raises(MCPError) as forged:
                await _get(client, f"{head}.{'A' * 22}")
            plans = structured(await client.call_tool("list_plans", {}))
    assert lost.status is TaskStatus.FAILED, lost
    assert lost.error is not None
    message = str(lost.error["message"])
    assert "restart" in message and "create_plan" in message
    assert forged.value.code == INVALID_PARAMS
    assert plans["plans"] == []


def _host_answer(request: dict[str, Any]) -> CreateMessageResult:
    """The host's model answering one sampling request with the plan."""
    assert request["method"] == "sampling/createMessage", request
    text = TextContent(type="text", text=json.dumps(PLAN))
    return CreateMessageResult(role="assistant", content=text, model="host-llm")


async def test_planning_with_the_hosts_model_answers_with_a_task_after_sampling(
    tmp_path: Path,
) -> None:
    # No model configured: the host's own plans, in the input-required rounds, which
    # SEP-2663 resolves before the task is created; the task then stores the plan.
    config = write_config(tmp_path, servers=("text",))
    asked = 0
    with http_server(config, tmp_path / "t.db") as url:
        async with _client(url, sampling_callback=_unused_sampler) as client:
            arguments = {"query": QUERY}
            result = await client.session.call_tool(
                "create_plan", arguments, allow_claimed=True, allow_input_required=True
            )
            while isinstance(result, InputRequiredResult):
                requests = result.input_requests or {}
                asked += len(requests)
                answers: dict[str, InputResponse] = {
                    key: _host_answer(r.model_dump(by_alias=True, mode="json"))
                    for key, r in requests.items()
                }
                result = await client.session.call_tool(
                    "create_plan",
                    arguments,
                    allow_claimed=True,
                    allow_input_required=True,
                    input_responses=answers,
                    request_state=result.request_state,
                )
            assert isinstance(result, CreateTaskResult), result
            done = await _until_done(client, result.task_id)
    assert asked == 1
    assert done.status is TaskStatus.COMPLETED, done
    answer = CallToolResult.model_validate(done.result).structured_content
    assert answer is not None
    assert [s["tool"] for s in answer["steps"]] == ["word_count"]


async def _unused_sampler(
    context: ClientRequestContext, params: CreateMessageRequestParams
) -> CreateMessageResult:
    """Declares sampling; the rounds are answered by the test itself."""
    raise AssertionError("sampling is asked in input-required rounds on 2026-07-28")
