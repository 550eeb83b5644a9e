"""taskorch's own MCP tasks, through `taskorch serve --http` and the SDK's client.

A host that declares `io.modelcontextprotocol/tasks` gets a task handle from
`execute_plan` and polls it to the full report; cancels another run with
`tasks/cancel`; after a restart of taskorch the same task id still answers. A
host without the extension gets today's inline report. On main, `execute_plan`
answered inline whatever the host declared, and `tasks/get` was unknown.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client
from mcp.client.session import ClientRequestContext
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, ElicitRequestParams, ElicitResult, ErrorData
from mcp_types.jsonrpc import HEADER_MISMATCH, INVALID_PARAMS

from executor.task_client import TasksClient
from executor.tasks_wire import (
    CancelTaskRequest,
    CreateTaskResult,
    DetailedTask,
    GetTaskRequest,
    TaskAck,
    TaskIdParams,
    TaskStatus,
    UpdateTaskParams,
    UpdateTaskRequest,
)
from tests.e2e.support import http_server, structured, write_config
from tests.fixtures.launch import FIXTURES, MCP_FIXTURE

TASKS_SERVER = FIXTURES / "tasks_server.py"

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def tasks_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A downstream server whose tools run as tasks (taskorch's own tasks extension)."""
    folder = tmp_path_factory.mktemp("tasks-fixture")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.set_inheritable(True)
    with (folder / "log").open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, str(TASKS_SERVER), "--fd", str(sock.fileno())],
            pass_fds=(sock.fileno(),),
            stdout=subprocess.PIPE,
            stderr=log,
        )
        assert server.stdout is not None
        try:
            assert server.stdout.readline().strip() == b"ready"
            yield f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"
        finally:
            server.terminate()
            server.wait(timeout=10)
            server.stdout.close()
            sock.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tasks_fixture: str) -> Iterator[str]:
    """One `taskorch serve --http` for the tests that need no restart."""
    folder = tmp_path_factory.mktemp("served")
    fixture = {"command": sys.executable, "args": [str(MCP_FIXTURE), "--name", "fx"]}
    extra = {"fx": fixture, "tk": {"url": tasks_fixture}}
    config = write_config(folder, servers=("stats",), extra_servers=extra, allow_sampling=True)
    with http_server(config, folder / "t.db") as url:
        yield url


def _steps(values: int, delay_s: float) -> list[dict[str, Any]]:
    arguments = {"values": list(range(values)), "delay_s": delay_s}
    return [{"id": "sum", "server": "stats", "tool": "running_total", "arguments": arguments}]


@asynccontextmanager
async def _client(url: str, *, tasks: bool = True) -> AsyncIterator[Client]:
    extensions = [TasksClient()] if tasks else []
    async with Client(streamable_http_client(url), extensions=extensions) as client:
        yield client


async def _approved_plan(client: Client, steps: list[dict[str, Any]]) -> str:
    plan = structured(await client.call_tool("create_plan", {"query": "sum", "steps": steps}))
    confirm = {"plan_id": plan["plan_id"], "plan_hash": plan["plan_hash"]}
    structured(await client.call_tool("confirm_plan", confirm))
    return str(plan["plan_id"])


async def _handle(client: Client, plan_id: str) -> CreateTaskResult:
    result = await client.session.call_tool(
        "execute_plan", {"plan_id": plan_id}, allow_claimed=True
    )
    assert isinstance(result, CreateTaskResult), result
    return result


async def _get(client: Client, task_id: str) -> DetailedTask:
    request = GetTaskRequest(params=TaskIdParams(task_id=task_id))
    return await client.session.send_request(request, DetailedTask)


async def _until_done(client: Client, task_id: str) -> DetailedTask:
    with anyio.fail_after(60):
        while True:
            task = await _get(client, task_id)
            if task.status in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED):
                return task
            await anyio.sleep(0.05)


async def _one_question(client: Client, task_id: str) -> tuple[str, dict[str, Any]]:
    """Wait for the task to ask; return its one input request (key, request)."""
    with anyio.fail_after(60):
        while (task := await _get(client, task_id)).status is TaskStatus.WORKING:  # noqa: ASYNC110
            await anyio.sleep(0.05)
    assert task.status is TaskStatus.INPUT_REQUIRED, task
    assert task.input_requests is not None
    [(key, request)] = task.input_requests.items()
    return key, request


async def _answer(client: Client, task_id: str, responses: dict[str, Any]) -> None:
    params = UpdateTaskParams(task_id=task_id, input_responses=responses)
    await client.session.send_request(UpdateTaskRequest(params=params), TaskAck)


async def test_a_tasks_host_gets_a_handle_polls_it_and_it_outlives_a_restart(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, servers=("stats",))
    db = tmp_path / "t.db"
    with http_server(config, db) as url:
        async with _client(url) as client:
            plan_id = await _approved_plan(client, _steps(5, 0.05))
            handle = await _handle(client, plan_id)
            assert len(handle.task_id) >= 32  # unguessable
            assert handle.status is TaskStatus.WORKING
            done = await _until_done(client, handle.task_id)
            assert done.status is TaskStatus.COMPLETED, done
            report = CallToolResult.model_validate(done.result).structured_content
            assert report is not None
            assert report["status"] == "completed"
            assert report["steps"][0]["output"]["total"] == sum(range(5))
            # Ask what it is, by another request each, the way the SDK sends it.
            with pytest.raises(MCPError) as unknown:
                await _get(client, "not-" + handle.task_id)
            assert unknown.value.code == INVALID_PARAMS
    with http_server(config, db) as url, anyio.fail_after(60):
        async with _client(url) as client:
            again = await _get(client, handle.task_id)
    assert again.status is TaskStatus.COMPLETED
    assert again.result == done.result


async def test_tasks_cancel_cancels_the_run(served: str) -> None:
    async with _client(served) as client:
        plan_id = await _approved_plan(client, _steps(200, 0.1))
        handle = await _handle(client, plan_id)
        request = CancelTaskRequest(params=TaskIdParams(task_id=handle.task_id))
        ack = await client.session.send_request(request, TaskAck)
        assert ack.result_type == "complete"
        done = await _until_done(client, handle.task_id)
        assert done.status is TaskStatus.CANCELLED
        progress = structured(await client.call_tool("get_progress", {"plan_id": plan_id}))
        assert progress["status"] == "cancelled"


async def test_a_host_without_the_extension_gets_the_report_inline(served: str) -> None:
    async with _client(served, tasks=False) as client:
        plan_id = await _approved_plan(client, _steps(3, 0.0))
        report = structured(await client.call_tool("execute_plan", {"plan_id": plan_id}))
        assert report["status"] == "completed"


async def test_the_mcp_name_header_must_be_the_task_id(served: str) -> None:
    url = served
    async with _client(url) as client:
        plan_id = await _approved_plan(client, _steps(3, 0.0))
        handle = await _handle(client, plan_id)
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {
            "extensions": {"io.modelcontextprotocol/tasks": {}}
        },
    }
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tasks/get",
        "params": {"taskId": handle.task_id, "_meta": meta},
    }
    headers = {
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tasks/get",
    }
    async with httpx.AsyncClient(timeout=30) as http:
        for name in ("someone-elses-task", None):
            sent = {**headers, "Mcp-Name": name} if name else headers
            answer = await http.post(url, content=json.dumps(body), headers=sent)
            assert answer.json()["error"]["code"] == HEADER_MISMATCH, answer.text
        right = {**headers, "Mcp-Name": handle.task_id}
        answer = await http.post(url, content=json.dumps(body), headers=right)
        assert answer.json()["result"]["taskId"] == handle.task_id, answer.text


async def test_tasks_update_decides_an_interrupted_step(served: str, tmp_path: Path) -> None:
    # `hang` never answers and is not safe to repeat: its timeout leaves the step
    # interrupted, and the task asks the host what to do.
    marker = tmp_path / "hang"
    hang = {"id": "h", "server": "fx", "tool": "hang", "arguments": {"marker": str(marker)}}
    steps: list[dict[str, Any]] = [
        {**hang, "timeout_s": 0.5},
        {"id": "after", "server": "stats", "tool": "evaluate", "arguments": {"expression": "2"}},
    ]
    async with _client(served) as client:
        plan_id = await _approved_plan(client, steps)
        handle = await _handle(client, plan_id)
        key, question = await _one_question(client, handle.task_id)
        assert question["method"] == "elicitation/create"
        assert "'h'" in question["params"]["message"]
        answer = {key: {"action": "accept", "content": {"decision": "skip"}}}
        await _answer(client, handle.task_id, answer)
        done = await _until_done(client, handle.task_id)
    assert done.status is TaskStatus.COMPLETED, done
    report = CallToolResult.model_validate(done.result).structured_content
    assert report is not None
    assert {s["id"]: s["status"] for s in report["steps"]} == {"h": "skipped", "after": "succeeded"}


async def test_a_downstream_question_reaches_the_host_through_its_task(served: str) -> None:
    steps = [{"id": "who", "server": "fx", "tool": "ask_name", "arguments": {}}]
    async with _client(served) as client:
        plan_id = await _approved_plan(client, steps)
        handle = await _handle(client, plan_id)
        key, question = await _one_question(client, handle.task_id)
        text = question["params"]["message"]
        assert "fx.ask_name" in text and "'who'" in text and "What is your name?" in text
        answer = {key: {"action": "accept", "content": {"name": "Ada"}}}
        await _answer(client, handle.task_id, answer)
        done = await _until_done(client, handle.task_id)
    assert done.status is TaskStatus.COMPLETED, done
    report = CallToolResult.model_validate(done.result).structured_content
    assert report is not None
    assert report["steps"][0]["output"] == {"result": "Hello, Ada!"}


async def test_a_waiting_2025_host_is_asked_inside_its_execute_plan_call(served: str) -> None:
    asked: list[str] = []

    async def elicit(
        context: ClientRequestContext, params: ElicitRequestParams
    ) -> ElicitResult | ErrorData:
        asked.append(params.message)
        return ElicitResult(action="accept", content={"name": "Grace"})

    steps = [{"id": "who", "server": "fx", "tool": "ask_name", "arguments": {}}]
    transport = streamable_http_client(served)
    async with Client(transport, mode="legacy", elicitation_callback=elicit) as client:
        plan_id = await _approved_plan(client, steps)
        with anyio.fail_after(60):
            report = structured(await client.call_tool("execute_plan", {"plan_id": plan_id}))
    assert report["steps"][0]["output"] == {"result": "Hello, Grace!"}, report["steps"][0]
    [text] = asked
    assert "fx.ask_name" in text and "'who'" in text and "What is your name?" in text


async def test_an_allowed_sampling_request_reaches_the_host_through_its_task(served: str) -> None:
    arguments = {"text": "a long text about tasks"}
    steps = [{"id": "sum", "server": "fx", "tool": "summarize", "arguments": arguments}]
    async with _client(served) as client:
        plan_id = await _approved_plan(client, steps)
        handle = await _handle(client, plan_id)
        key, request = await _one_question(client, handle.task_id)
        assert request["method"] == "sampling/createMessage"
        assert request["params"]["messages"][0]["content"]["text"] == "a long text about tasks"
        assert "fx.summarize" in request["params"]["_meta"]["io.github.taskorch/asker"]
        answer = {
            key: {
                "role": "assistant",
                "content": {"type": "text", "text": "tasks, briefly"},
                "model": "host-model",
            }
        }
        await _answer(client, handle.task_id, answer)
        done = await _until_done(client, handle.task_id)
    assert done.status is TaskStatus.COMPLETED, done
    report = CallToolResult.model_validate(done.result).structured_content
    assert report is not None
    assert report["steps"][0]["output"] == {"result": "tasks, briefly"}


async def test_a_downstream_tasks_question_reaches_the_host_through_its_task(served: str) -> None:
    # Both sides at once: the step's call becomes a downstream task that asks a
    # question; taskorch puts it to its own host's task, and sends the answer back.
    arguments = {"filename": "notes.txt"}
    steps = [{"id": "rm", "server": "tk", "tool": "confirm_delete", "arguments": arguments}]
    async with _client(served) as client:
        plan_id = await _approved_plan(client, steps)
        handle = await _handle(client, plan_id)
        key, question = await _one_question(client, handle.task_id)
        text = question["params"]["message"]
        assert "tk.confirm_delete" in text and "'rm'" in text and "Delete notes.txt?" in text
        answer = {key: {"action": "accept", "content": {"confirm": True}}}
        await _answer(client, handle.task_id, answer)
        done = await _until_done(client, handle.task_id)
    assert done.status is TaskStatus.COMPLETED, done
    report = CallToolResult.model_validate(done.result).structured_content
    assert report is not None
    assert report["steps"][0]["output"] == "deleted notes.txt"
