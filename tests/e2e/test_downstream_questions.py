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

import pytest

from executor.status import PlanStatus
from server.config import load_config
from server.service import TaskOrchestrator
from tests.e2e.support import write_config
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
