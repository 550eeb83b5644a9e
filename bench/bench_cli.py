"""The command line's read commands: wall time to exit, as a ratio to `python -c pass`.

`--help`, `--version`, `plans`, `show ID` and `watch ID` (of a finished plan)
only read: they load neither the MCP SDK, litellm nor the downstream pool, and
`plans`, `show` and `watch` of a settled plan read SQLite straight, without
typer, pydantic or an event loop (`tests/server/test_cli_imports.py` checks
that, `tests/server/test_cli_quick.py` that they print the same). Each is run as a user runs
it (the installed `taskorch` script, a fresh process, a database holding one
finished plan), interleaved with `python -c pass` in the same rounds, so that
the ratio holds on a loaded machine where the seconds do not; the CPU seconds
each used are given too. The target is under 0.4 s each on an idle machine.

Python's bytecode is cached (in the run's temporary directory, not the
checkout), as it is for anyone who installed taskorch: pip compiles a wheel's
modules on install, and a checkout's first run writes them. `make` sets
`PYTHONDONTWRITEBYTECODE`, with which every run would compile taskorch's own
modules again; `plans (compiling)` measures that case once more, for comparison.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from server.demo import child_env, repo_root

ROUNDS = 9
TARGET_S = 0.4
# A config as people have one (servers, an agent, limits), not an empty one: the read
# commands must be fast with what users have. No server is started by a read.
_CONFIG = {
    "mcpServers": {
        "files": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem"]},
        "docs": {"url": "https://docs.example/mcp", "headers": {"X-Team": "tools"}},
    },
    "agents": {"reader": {"auto_approve": "read_only", "tool_policy": {"allow": ["files.*"]}}},
    "limits": {"max_parallel_steps": 4},
}


def _taskorch() -> list[str]:
    script = Path(sys.executable).parent / "taskorch"
    return [str(script)] if script.exists() else [sys.executable, "-m", "server.cli"]


def _finished_plan(cli: list[str], where: list[str], workdir: Path, env: dict[str, str]) -> str:
    """Run a one-step plan of built-in steps (no server needed) and return its id."""
    steps = [
        {
            "id": "greet",
            "server": "taskorch",
            "tool": "format",
            "arguments": {"template": "hello {who}", "values": {"who": "world"}},
        }
    ]
    plan = workdir / "plan.json"
    plan.write_text(json.dumps({"query": "say hello", "steps": steps}), encoding="utf-8")
    subprocess.run(
        [*cli, "run", str(plan), "--yes", *where], env=env, check=True, capture_output=True
    )
    listed = subprocess.run(
        [*cli, "plans", *where], env=env, check=True, capture_output=True, text=True
    )
    return next(
        line.split("│")[1].strip() for line in listed.stdout.splitlines() if "completed" in line
    )


def _cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def _time(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds to exit, and the CPU seconds (user + system) the process used."""
    cpu0, t0 = _cpu(), time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=repo_root(), capture_output=True, check=False)
    elapsed, cpu = time.perf_counter() - t0, _cpu() - cpu0
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr[-500:]!r}")
    return elapsed, cpu


def main() -> dict[str, object]:
    """Median seconds of each read command and of `python -c pass`, and their ratio."""
    with tempfile.TemporaryDirectory(prefix="taskorch-bench-") as tmp:
        workdir = Path(tmp)
        db = workdir / "t.db"
        config = workdir / "config.json"
        config.write_text(json.dumps(_CONFIG), encoding="utf-8")
        env = {**child_env(), "COLUMNS": "120"}
        for key in [k for k in env if k.startswith("TASKORCH_")]:
            del env[key]
        compiling = {**env, "PYTHONDONTWRITEBYTECODE": "1"}
        compiling.pop("PYTHONPYCACHEPREFIX", None)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")
        where = ["--config", str(config), "--db", str(db)]
        cli = _taskorch()
        plan_id = _finished_plan(cli, where, workdir, env)
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "--help": [*cli, "--help"],
            "--version": [*cli, "--version"],
            "plans": [*cli, "plans", *where],
            "show": [*cli, "show", plan_id, *where],
            "watch (finished)": [*cli, "watch", plan_id, *where],
            "plans (compiling)": [*cli, "plans", *where],
        }
        envs = {name: compiling if "compiling" in name else env for name in commands}
        for name, argv in commands.items():
            # Warm the OS file cache and write the bytecode, as any second start would be.
            _time(argv, envs[name])
        times: dict[str, list[float]] = {name: [] for name in commands}
        cpus: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(ROUNDS):
            for name, argv in commands.items():
                wall, cpu = _time(argv, envs[name])
                times[name].append(wall)
                cpus[name].append(cpu)
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    base = medians.pop("python -c pass")
    figures: dict[str, object] = {"python_c_pass_median_s": round(base, 3)}
    for name, median in medians.items():
        figures[f"{name}_median_s"] = round(median, 3)
        figures[f"{name}_ratio"] = round(median / base, 1)
        # CPU time suffers less than wall time from other sessions sharing the cores.
        figures[f"{name}_cpu_s"] = round(statistics.median(cpus[name]), 3)
    figures["slowest_median_s"] = round(
        max(m for name, m in medians.items() if "compiling" not in name), 3
    )
    figures["target_s"] = TARGET_S
    figures["rounds"] = ROUNDS
    figures["load_average_1m"] = round(os.getloadavg()[0], 2)
    return figures


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
