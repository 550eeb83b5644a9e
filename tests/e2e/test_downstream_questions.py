"""A downstream tool's question (elicitation) with no host to answer it.

taskorch is the downstream server's client, not the user: the question goes to
the host following the run (see `test_host_tasks` for a host that answers).
Here nobody follows the run, so the step fails with a message that says the
question could not be forwarded and how to run the plan so that it can. On
main the pool declared no elicitation, and the tool's question ended in an
unexplained refusal.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.session import ClientRequestContext
from mcp_types import ElicitRequestFormParams, ElicitRequestParams, ElicitResult, ErrorData

from executor.asking import ASKER_META_KEY, QUESTIONS_WAITING_MAX
from executor.status import PlanStatus
from server.config import load_config
from server.service import TaskOrchestrator
from tests.e2e.support import serve_params, structured, write_config
from tests.fixtures.launch import MCP_FIXTURE

pytestmark = pytest.mark.anyio


async def test_a_question_nobody_can_answer_fails_the_step_saying_so(tmp_path: Path) -> None:
    fixture = {"command": sys.executable, "args": [str(MCP_FIXTURE), "--name", "fx"]}
    config = load_config(write_config(tmp_path, servers=(), extra_servers={"fx": fixture}))
    async with TaskOrchestrator(config, db_path=tmp_path / "t.db") as orch:
        step = {"id": "who", "server": "fx", "tool": "ask_name", "arguments": {}}
        view = await orch.create_task_plan("ask a name", steps=[step])
        await orch.confirm_task_plan(view.plan_id, True, plan_hash=view.plan_hash)
        report = await orch.execute_task_plan(view.plan_id)
    assert report.status is PlanStatus.FAILED
    error = report.steps[0].error
    assert error is not None
    assert "What is your name?" in error.message
    assert "no host that can answer follows this run" in error.message
    assert report.steps[0].attempts == 1  # refused, not retried


async def test_sampling_is_refused_unless_the_config_allows_it(tmp_path: Path) -> None:
    fixture = {"command": sys.executable, "args": [str(MCP_FIXTURE), "--name", "fx"]}
    config = load_config(write_config(tmp_path, servers=(), extra_servers={"fx": fixture}))
    assert not config.allow_sampling
    async with TaskOrchestrator(config, db_path=tmp_path / "t.db") as orch:
        step = {"id": "sum", "server": "fx", "tool": "summarize", "arguments": {"text": "x"}}
        view = await orch.create_task_plan("summarize", steps=[step])
        await orch.confirm_task_plan(view.plan_id, True, plan_hash=view.plan_hash)
        report = await orch.execute_task_plan(view.plan_id)
    assert report.status is PlanStatus.FAILED
    error = report.steps[0].error
    assert error is not None
    assert "sampling" in error.message.lower(), error.message


# A host that waits for the run (execute_plan wait=true) over `taskorch serve` on stdio.


def _serve(tmp_path: Path) -> StdioServerParameters:
    fixture = {"command": sys.executable, "args": [str(MCP_FIXTURE), "--name", "fx"]}
    config = write_config(tmp_path, servers=(), extra_servers={"fx": fixture})
    return serve_params(config, tmp_path / "t.db")


_ASK_NAME = [{"id": "who", "server": "fx", "tool": "ask_name", "arguments": {}}]


async def _plan(client: Client, *, confirm: bool = True) -> str:
    plan = structured(
        await client.call_tool("create_plan", {"query": "a name", "steps": _ASK_NAME})
    )
    if confirm:
        confirm_args = {"plan_id": plan["plan_id"], "plan_hash": plan["plan_hash"]}
        structured(await client.call_tool("confirm_plan", confirm_args))
    return str(plan["plan_id"])


async def _run(client: Client, plan_id: str) -> dict[str, Any]:
    with anyio.fail_after(60):
        return structured(await client.call_tool("execute_plan", {"plan_id": plan_id}))


def _answering(*answers: ElicitResult) -> tuple[Any, list[ElicitRequestParams]]:
    """An elicitation callback: approves plans, answers the questions of tools in turn."""
    asked: list[ElicitRequestParams] = []
    queue = list(answers)

    async def elicit(
        context: ClientRequestContext, params: ElicitRequestParams
    ) -> ElicitResult | ErrorData:
        if ASKER_META_KEY not in (params.meta or {}):  # the approval dialog
            return ElicitResult(action="accept", content={"approve": True})
        asked.append(params)
        return queue.pop(0)

    return elicit, asked


async def test_a_waiting_host_that_can_elicit_is_asked_and_its_answer_reaches_the_tool(
    tmp_path: Path,
) -> None:
    elicit, asked = _answering(ElicitResult(action="accept", content={"name": "Ada"}))
    async with Client(_serve(tmp_path), mode="legacy", elicitation_callback=elicit) as client:
        assert client.protocol_version == "2025-11-25"
        plan_id = await _plan(client, confirm=False)  # approved in the dialog, then run
        report = await _run(client, plan_id)
    assert report["status"] == "completed", report
    assert report["steps"][0]["output"] == {"result": "Hello, Ada!"}
    [question] = asked
    assert isinstance(question, ElicitRequestFormParams)
    assert "fx.ask_name" in question.message and "'who'" in question.message
    assert "What is your name?" in question.message
    assert "'who'" in question.model_dump(by_alias=True)["_meta"][ASKER_META_KEY]
    assert question.requested_schema["properties"]["name"]["type"] == "string"


async def test_a_declined_question_ends_the_step_as_the_tool_decides(tmp_path: Path) -> None:
    elicit, asked = _answering(ElicitResult(action="decline"))
    async with Client(_serve(tmp_path), mode="legacy", elicitation_callback=elicit) as client:
        report = await _run(client, await _plan(client))
    assert len(asked) == 1
    assert report["status"] == "failed", report
    assert "no name given (decline)" in report["steps"][0]["error"]["message"]


async def test_an_answer_that_does_not_fit_the_question_fails_the_step(tmp_path: Path) -> None:
    elicit, _ = _answering(ElicitResult(action="accept", content={"nom": "Ada"}))
    async with Client(_serve(tmp_path), mode="legacy", elicitation_callback=elicit) as client:
        report = await _run(client, await _plan(client))
    assert report["status"] == "failed", report
    message = report["steps"][0]["error"]["message"]
    assert "does not match the question" in message and "'name'" in message, message


async def test_a_waiting_host_without_elicitation_gets_the_step_failed_saying_so(
    tmp_path: Path,
) -> None:
    async with Client(_serve(tmp_path), mode="legacy") as client:
        report = await _run(client, await _plan(client))
    assert report["status"] == "failed", report
    step = report["steps"][0]
    message = step["error"]["message"]
    assert "What is your name?" in message
    assert "does not declare the elicitation capability (form mode)" in message, message
    assert step["attempts"] == 1


async def test_a_modern_host_without_tasks_gets_the_step_failed_saying_what_it_needs(
    tmp_path: Path,
) -> None:
    elicit, asked = _answering()
    async with Client(_serve(tmp_path), mode="auto", elicitation_callback=elicit) as client:
        assert client.protocol_version == "2026-07-28"
        report = await _run(client, await _plan(client))
    assert asked == []
    assert report["status"] == "failed", report
    message = report["steps"][0]["error"]["message"]
    assert "What is your name?" in message
    assert "io.modelcontextprotocol/tasks" in message, message


def _counting() -> tuple[Any, list[str], list[int]]:
    """An elicitation callback that answers slowly, noting how many questions it had at once."""
    asked: list[str] = []
    most = [0]
    asking = [0]

    async def elicit(
        context: ClientRequestContext, params: ElicitRequestParams
    ) -> ElicitResult | ErrorData:
        asking[0] += 1
        most[0] = max(most[0], asking[0])
        asked.append(params.message)
        await anyio.sleep(0.05)  # the others arrive meanwhile
        asking[0] -= 1
        return ElicitResult(action="accept", content={"name": "Ada"})

    return elicit, asked, most


async def _ask_many(client: Client, count: int) -> dict[str, Any]:
    steps = [{"id": "many", "server": "fx", "tool": "ask_many", "arguments": {"count": count}}]
    plan = structured(await client.call_tool("create_plan", {"query": "x", "steps": steps}))
    confirm = {"plan_id": plan["plan_id"], "plan_hash": plan["plan_hash"]}
    structured(await client.call_tool("confirm_plan", confirm))
    return await _run(client, str(plan["plan_id"]))


async def test_questions_asked_at_once_reach_the_host_one_at_a_time(tmp_path: Path) -> None:
    elicit, asked, most = _counting()
    async with Client(_serve(tmp_path), mode="legacy", elicitation_callback=elicit) as client:
        report = await _ask_many(client, 3)
    assert report["status"] == "completed", report["steps"][0]["error"]
    assert report["steps"][0]["output"] == {"result": "Hello, Ada, Ada, Ada!"}
    assert len(asked) == 3
    assert most[0] == 1  # never two questions of the step before the host at once


async def test_a_flood_of_questions_is_cut_off(tmp_path: Path) -> None:
    elicit, asked, most = _counting()
    async with Client(_serve(tmp_path), mode="legacy", elicitation_callback=elicit) as client:
        report = await _ask_many(client, QUESTIONS_WAITING_MAX + 2)
    assert most[0] <= 1
    assert len(asked) <= 1
    assert report["status"] == "failed", report
    assert "too many at once" in report["steps"][0]["error"]["message"]
