"""Durability through the face: kill -9 `taskorch run` mid-run; the next start finishes the plan."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from executor.status import PlanStatus
from server.config import load_config
from server.service import TaskOrchestrator
from tests.e2e.support import ROOT, clean_env, write_config


@pytest.mark.anyio
async def test_a_killed_run_is_resumed_at_the_next_start(tmp_path: Path) -> None:
    config_path = write_config(tmp_path, servers=("stats",))
    db = tmp_path / "t.db"
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(
        json.dumps(
            {
                "query": "a slow sum, then one more",
                "steps": [
                    {
                        "id": "slow",
                        "server": "stats",
                        "tool": "running_total",
                        "arguments": {"values": list(range(30)), "delay_s": 0.1},
                    },
                    {
                        "id": "after",
                        "server": "stats",
                        "tool": "evaluate",
                        "arguments": {"expression": "${slow.total} + 1"},
                    },
                ],
            }
        )
    )
    run = [sys.executable, "-m", "server.cli", "run", str(plan_file), "--yes"]
    proc = await anyio.open_process(
        [*run, "--config", str(config_path), "--db", str(db)],
        cwd=ROOT,
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    config = load_config(config_path)
    try:
        # A second process reads the same database while the run writes it.
        async with TaskOrchestrator(config, db_path=db, resume=False) as watcher:
            with anyio.fail_after(60):
                while True:
                    plans = await watcher.list_task_plans(statuses=[PlanStatus.EXECUTING])
                    if plans.count:
                        progress = await watcher.get_progress(plans.plans[0].plan_id)
                        if progress.running_steps == ["slow"]:
                            break
                    await anyio.sleep(0.05)
            plan_id = plans.plans[0].plan_id
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        with anyio.fail_after(30):
            await proc.wait()

    async with TaskOrchestrator(config, db_path=db) as orch:
        with anyio.fail_after(90):
            while True:
                if (await orch.get_progress(plan_id)).status is PlanStatus.COMPLETED:
                    break
                await anyio.sleep(0.1)
        view = await orch.get_task_plan(plan_id)
    steps = {s.id: s for s in view.steps}
    # `running_total` is read-only, so the step in flight was safe to run again.
    assert steps["slow"].attempts == 2
    assert steps["after"].attempts == 1
    assert steps["after"].output["value"] == sum(range(30)) + 1
