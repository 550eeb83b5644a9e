"""The command line's read commands: wall time to exit, as a ratio to `python -c pass`.

`--help`, `--version`, `plans`, `show ID` and `watch ID` (of a finished plan)
only read: they load neither the MCP SDK, litellm nor the downstream pool
(`tests/server/test_cli_imports.py` checks that). Each is run as a user runs
it (the installed `taskorch` script, a fresh process, a database holding one
finished plan), interleaved with `python -c pass` in the same rounds, so that
the ratio holds on a loaded machine where the seconds do not. The target is
under 0.4 s each on an idle machine.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

from server.config import TaskorchConfig
from server.demo import child_env, repo_root
from server.service import TaskOrchestrator

ROUNDS = 9
TARGET_S = 0.4


def _taskorch() -> list[str]:
    script = Path(sys.executable).parent / "taskorch"
    return [str(script)] if script.exists() else [sys.executable, "-m", "server.cli"]


async def _finished_plan(db: Path) -> str:
    steps = [
        {
            "id": "greet",
            "server": "taskorch",
            "tool": "format",
            "arguments": {"template": "hello {who}", "values": {"who": "world"}},
        }
    ]
    async with TaskOrchestrator(TaskorchConfig(), db_path=db, resume=False) as orch:
        plan = await orch.create_task_plan("say hello", steps=steps)
        await orch.confirm_task_plan(plan.plan_id, plan_hash=plan.plan_hash)
        await orch.execute_task_plan(plan.plan_id)
        return plan.plan_id


def _time(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=repo_root(), capture_output=True, check=False)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr[-500:]!r}")
    return elapsed


def main() -> dict[str, object]:
    """Median seconds of each read command and of `python -c pass`, and their ratio."""
    with tempfile.TemporaryDirectory(prefix="taskorch-bench-") as tmp:
        workdir = Path(tmp)
        db = workdir / "t.db"
        config = workdir / "config.json"
        config.write_text("{}", encoding="utf-8")
        plan_id = anyio.run(_finished_plan, db)
        env = {**child_env(), "COLUMNS": "120"}
        for key in [k for k in env if k.startswith("TASKORCH_")]:
            del env[key]
        where = ["--config", str(config), "--db", str(db)]
        cli = _taskorch()
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "--help": [*cli, "--help"],
            "--version": [*cli, "--version"],
            "plans": [*cli, "plans", *where],
            "show": [*cli, "show", plan_id, *where],
            "watch (finished)": [*cli, "watch", plan_id, *where],
        }
        for argv in commands.values():
            _time(argv, env)  # warm the OS file cache, as any second start would be
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(ROUNDS):
            for name, argv in commands.items():
                times[name].append(_time(argv, env))
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    base = medians.pop("python -c pass")
    figures: dict[str, object] = {"python_c_pass_median_s": round(base, 3)}
    for name, median in medians.items():
        figures[f"{name}_median_s"] = round(median, 3)
        figures[f"{name}_ratio"] = round(median / base, 1)
    figures["slowest_median_s"] = round(max(medians.values()), 3)
    figures["target_s"] = TARGET_S
    figures["rounds"] = ROUNDS
    figures["load_average_1m"] = round(os.getloadavg()[0], 2)
    return figures


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
