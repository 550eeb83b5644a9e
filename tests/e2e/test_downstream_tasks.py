"""Downstream MCP tasks through taskorch, against FastMCP's tasks server (from PyPI).

Every tool of that server runs only as a task. Before taskorch declared the
tasks extension, every such step failed ("requires the tasks extension",
-32021). Now: a task-required step completes in a plan; kill -9 of taskorch
while a non-idempotent downstream task runs, then a restart, completes the step
from the same task, its effect once; cancelling the plan cancels the task.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from executor.status import PlanStatus
from server.config import load_config
from server.service import TaskOrchestrator
from tests.e2e.support import ROOT, clean_env, write_config
from tests.fixtures.fastmcp_launch import FastMCPServer, fastmcp_server

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def fm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastMCPServer]:
    with fastmcp_server(tmp_path_factory.mktemp("fastmcp")) as server:
        yield server


def _config(tmp_path: Path, fm: FastMCPServer) -> Path:
    return write_config(tmp_path, servers=(), extra_servers={"fm": {"url": fm.url}})


async def _wait_for(path: Path, timeout_s: float = 60) -> None:
    with anyio.fail_after(timeout_s):
        while not await anyio.Path(path).exists():  # noqa: ASYNC110 - a file, not an event
            await anyio.sleep(0.02)


async def test_a_task_required_step_completes(tmp_path: Path, fm: FastMCPServer) -> None:
    config = load_config(_config(tmp_path, fm))
    async with TaskOrchestrator(config, db_path=tmp_path / "t.db") as orch:
        step = {"id": "echo", "server": "fm", "tool": "echo_task", "arguments": {"text": "hi"}}
        view = await orch.create_task_plan("echo from a task", steps=[step])
        await orch.confirm_task_plan(view.plan_id, True, plan_hash=view.plan_hash)
        report = await orch.execute_task_plan(view.plan_id)
        assert report.status is PlanStatus.COMPLETED, report
        plan = await orch.get_task_plan(view.plan_id)
    assert plan.steps[0].output == {"result": "hi"}


async def test_cancelling_the_plan_cancels_the_downstream_task(
    tmp_path: Path, fm: FastMCPServer
) -> None:
    config = load_config(_config(tmp_path, fm))
    async with TaskOrchestrator(config, db_path=tmp_path / "t.db") as orch:
        step = {"id": "h", "server": "fm", "tool": "hang_task", "arguments": {"name": "plan-h"}}
        view = await orch.create_task_plan("wait forever", steps=[step])
        await orch.confirm_task_plan(view.plan_id, True, plan_hash=view.plan_hash)
        await orch.execute_task_plan(view.plan_id, wait=False)
        await _wait_for(fm.folder / "plan-h.started")
        report = await orch.cancel_task_execution(view.plan_id)
        assert report.status is PlanStatus.CANCELLED
    await _wait_for(fm.folder / "plan-h.cancelled", timeout_s=30)


def _task_ids(db: str) -> list[str | None]:
    """The downstream task id of every attempt, by attempt, read behind taskorch's back."""
    query = "SELECT task_id FROM attempts ORDER BY attempt"
    if db.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(db, autocommit=True) as pg:
            return [r[0] for r in pg.execute(query.encode()).fetchall()]
    if not Path(db).exists():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute(query).fetchall()
    conn.close()
    return [r[0] for r in rows]


def _recorded_task(db: str) -> str | None:
    return next((t for t in _task_ids(db) if t is not None), None)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_killed_taskorch_resumes_the_downstream_task_effect_once(
    tmp_path: Path, fm: FastMCPServer, backend: str, request: pytest.FixtureRequest
) -> None:
    # On PostgreSQL the process that takes over stands for another replica.
    config_path = _config(tmp_path, fm)
    db = str(tmp_path / "t.db") if backend == "sqlite" else request.getfixturevalue("pg_url")
    plan_file = tmp_path / "plan.json"
    log = f"kill-log-{backend}"
    line = {"name": log, "line": "written once", "hold_s": 3.0}
    step = {"id": "append", "server": "fm", "tool": "append_line", "arguments": line}
    plan_file.write_text(json.dumps({"query": "append a line", "steps": [step]}))
    run = [sys.executable, "-m", "server.cli", "run", str(plan_file), "--yes"]
    proc = await anyio.open_process(
        [*run, "--config", str(config_path), "--db", db],
        cwd=ROOT,
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        await _wait_for(fm.folder / f"{log}.started")
        with anyio.fail_after(30):
            while (task_id := _recorded_task(db)) is None:  # noqa: ASYNC110 - another process
                await anyio.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        with anyio.fail_after(30):
            await proc.wait()
    assert not (fm.folder / log).exists(), "the task finished before the kill"

    async with TaskOrchestrator(load_config(config_path), db_path=db) as orch:
        plans = await orch.list_task_plans()
        plan_id = plans.plans[0].plan_id
        with anyio.fail_after(90):
            while (await orch.get_progress(plan_id)).status is not PlanStatus.COMPLETED:  # noqa: ASYNC110
                await anyio.sleep(0.1)
        view = await orch.get_task_plan(plan_id)
    assert (fm.folder / log).read_text(encoding="utf-8") == "written once\n"
    assert view.steps[0].output == {"result": 1}
    assert view.steps[0].attempts == 2  # the one cut off, and the one that followed the task
    assert _task_ids(db) == [task_id, task_id]
