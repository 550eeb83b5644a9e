"""`notifications/tasks` (SEP-2663) from `taskorch serve --http`, read off a real listen stream.

A host that declares the tasks extension opens `subscriptions/listen` naming
its task's id and hears the task go `input_required` (a downstream tool's
question) and then `completed`, each notification the whole task as
`tasks/get` answers it; the stream then ends. A listen naming task ids from a
client without the extension is refused (-32021); ids the caller has no task
by are left out of the acknowledgement. On house-face (cf178a8) a listen's
`taskIds` was ignored and no task notification was ever sent.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types.jsonrpc import MISSING_REQUIRED_CLIENT_CAPABILITY

from executor.task_client import TasksClient
from executor.tasks_wire import (
    CancelTaskRequest,
    CreateTaskResult,
    DetailedTask,
    GetTaskRequest,
    TaskAck,
    TaskIdParams,
    UpdateTaskParams,
    UpdateTaskRequest,
)
from tests.e2e.support import http_server, structured, write_config
from tests.fixtures.launch import MCP_FIXTURE

pytestmark = pytest.mark.anyio

_TASKS: dict[str, Any] = {"extensions": {"io.modelcontextprotocol/tasks": {}}}
_LISTEN_ID = "listen-1"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("notified")
    fixture = {"command": sys.executable, "args": [str(MCP_FIXTURE), "--name", "fx"]}
    config = write_config(folder, servers=("stats",), extra_servers={"fx": fixture})
    with http_server(config, folder / "t.db") as url:
        yield url


async def _listen(
    url: str, task_ids: list[str], *, capabilities: dict[str, Any] | None = None
) -> AsyncIterator[dict[str, Any]]:
    """The messages of a raw `subscriptions/listen` stream, as a host reads them."""
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": _TASKS
        if capabilities is None
        else capabilities,
    }
    body = {
        "jsonrpc": "2.0",
        "id": _LISTEN_ID,
        "method": "subscriptions/listen",
        "params": {"notifications": {"taskIds": task_ids}, "_meta": meta},
    }
    headers = {
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "subscriptions/listen",
    }
    async with (
        httpx.AsyncClient(timeout=60) as http,
        http.stream("POST", url, content=json.dumps(body), headers=headers) as response,
    ):
        if response.headers.get("content-type", "").startswith("application/json"):
            yield json.loads(await response.aread())
            return
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                yield json.loads(line.removeprefix("data:"))


async def _run_as_task(client: Client, query: str, steps: list[dict[str, Any]]) -> CreateTaskResult:
    """Create, approve and run a plan of `steps`, its run answered as a host task."""
    plan = structured(await client.call_tool("create_plan", {"query": query, "steps": steps}))
    confirm = {"plan_id": plan["plan_id"], "plan_hash": plan["plan_hash"]}
    structured(await client.call_tool("confirm_plan", confirm))
    handle = await client.session.call_tool(
        "execute_plan", {"plan_id": plan["plan_id"]}, allow_claimed=True
    )
    assert isinstance(handle, CreateTaskResult), handle
    return handle


async def _task(client: Client, task_id: str) -> DetailedTask:
    request = GetTaskRequest(params=TaskIdParams(task_id=task_id))
    return await client.session.send_request(request, DetailedTask)


async def test_a_listening_host_hears_its_task_ask_and_complete(served: str) -> None:
    steps = [{"id": "who", "server": "fx", "tool": "ask_name", "arguments": {}}]
    frames: list[dict[str, Any]] = []
    async with Client(streamable_http_client(served), extensions=[TasksClient()]) as client:
        handle = await _run_as_task(client, "who", steps)
        with anyio.fail_after(60):
            async for frame in _listen(served, [handle.task_id, "no-such-task"]):
                frames.append(frame)
                params = frame.get("params", {})
                if frame.get("method") == "notifications/tasks" and params["status"] == (
                    "input_required"
                ):
                    [key] = params["inputRequests"]
                    answer = {key: {"action": "accept", "content": {"name": "Ada"}}}
                    update = UpdateTaskParams(task_id=handle.task_id, input_responses=answer)
                    await client.session.send_request(UpdateTaskRequest(params=update), TaskAck)
        polled = await _task(client, handle.task_id)
    ack, *notifications, end = frames
    assert ack["method"] == "notifications/subscriptions/acknowledged"
    assert ack["params"]["notifications"]["taskIds"] == [handle.task_id]  # not the unknown one
    assert end["id"] == _LISTEN_ID and "result" in end  # the stream ended: nothing left to say
    assert {n["method"] for n in notifications} == {"notifications/tasks"}
    assert {
        n["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] for n in frames[:-1]
    } == {_LISTEN_ID}
    statuses = [n["params"]["status"] for n in notifications]
    assert "input_required" in statuses
    assert statuses[-1] == "completed"
    last = notifications[-1]["params"]
    assert last["taskId"] == handle.task_id
    assert last["result"] == polled.result  # the whole task, as tasks/get answers it
    assert last["result"]["structuredContent"]["steps"][0]["output"] == {"result": "Hello, Ada!"}


async def test_a_listening_host_hears_its_run_cancelled(served: str) -> None:
    arguments = {"values": list(range(200)), "delay_s": 0.1}
    steps = [{"id": "sum", "server": "stats", "tool": "running_total", "arguments": arguments}]
    statuses: list[str] = []
    async with Client(streamable_http_client(served), extensions=[TasksClient()]) as client:
        handle = await _run_as_task(client, "sum", steps)
        with anyio.fail_after(60):
            async for frame in _listen(served, [handle.task_id]):
                if frame.get("method") != "notifications/tasks":
                    continue
                statuses.append(frame["params"]["status"])
                if statuses == ["working"]:
                    cancel = CancelTaskRequest(params=TaskIdParams(task_id=handle.task_id))
                    await client.session.send_request(cancel, TaskAck)
    assert statuses == ["working", "cancelled"]


async def test_a_listen_for_tasks_without_the_extension_is_refused(served: str) -> None:
    with anyio.fail_after(60):
        frames = [f async for f in _listen(served, ["some-task"], capabilities={})]
    [answer] = frames
    assert answer["error"]["code"] == MISSING_REQUIRED_CLIENT_CAPABILITY
    assert "io.modelcontextprotocol/tasks" in answer["error"]["message"]


async def test_a_listen_for_unknown_tasks_is_acknowledged_empty_and_ends(served: str) -> None:
    with anyio.fail_after(60):
        frames = [f async for f in _listen(served, ["nobody.s.task", "x" * 40])]
    ack, end = frames
    assert ack["params"]["notifications"]["taskIds"] == []
    assert end["id"] == _LISTEN_ID and "result" in end


async def test_a_caller_keeps_a_bounded_number_of_listens_open(served: str) -> None:
    # Each open listen reads its tasks' states every quarter second: a caller that opens
    # them without end would load the database without end.
    from server.mcp.task_listen import MAX_LISTENS_PER_CALLER

    arguments = {"values": list(range(600)), "delay_s": 0.1}
    steps = [{"id": "sum", "server": "stats", "tool": "running_total", "arguments": arguments}]
    async with Client(streamable_http_client(served), extensions=[TasksClient()]) as client:
        handle = await _run_as_task(client, "sum", steps)
        heard: list[str] = []
        refused: list[dict[str, Any]] = []
        all_open = anyio.Event()

        async def hold() -> None:
            async for frame in _listen(served, [handle.task_id]):
                if frame.get("method") == "notifications/tasks":
                    heard.append(frame["params"]["status"])
                    if len(heard) == MAX_LISTENS_PER_CALLER:
                        all_open.set()

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for _ in range(MAX_LISTENS_PER_CALLER):
                    tg.start_soon(hold)
                await all_open.wait()
                refused = [f async for f in _listen(served, [handle.task_id])]
                cancel = CancelTaskRequest(params=TaskIdParams(task_id=handle.task_id))
                await client.session.send_request(cancel, TaskAck)  # every listen ends
    [answer] = refused
    assert "error" in answer, answer
    assert f"{MAX_LISTENS_PER_CALLER} listens" in answer["error"]["message"]
    assert "close one" in answer["error"]["message"]
