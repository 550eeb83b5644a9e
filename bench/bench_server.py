"""`taskorch serve` cold start: from spawning the process to a served `tools/list`, over stdio.

Each run starts a fresh `python -m server.cli serve` (the example servers
configured, a fresh database), connects with the MCP SDK's `Client` as a host
would, lists the tools, and stops. The figure is the median of 10 runs; the
target is under one second, which holds only while nothing heavy (litellm)
is imported at start.

`imports_median_s` is the part of it spent starting Python and importing
what `serve` imports (the MCP SDK most of all), measured the same way in
fresh processes: the rest is opening the store, building the server (the
SDK derives every tool's schemas) and the two requests.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from server.demo import child_env, demo_config, repo_root

RUNS = 10
IMPORT_RUNS = 5
# As `serve` imports them: the collector paused (see `server.cli.common.pause_gc`).
_SERVE_IMPORTS = (
    "import gc; gc.disable(); "
    "import server.cli.main, server.config, server.service, server.mcp.build"
)


async def _one(workdir: Path, index: int) -> float:
    config = workdir / "config.json"
    params = StdioServerParameters(
        command=sys.executable,
        args=[
            "-m",
            "server.cli",
            "serve",
            "--config",
            str(config),
            "--db",
            str(workdir / f"cold-{index}.db"),
        ],
        env=child_env(),
        cwd=str(repo_root()),
    )
    with (workdir / "stderr.log").open("a", encoding="utf-8") as errlog:
        t0 = time.perf_counter()
        async with Client(stdio_client(params, errlog=errlog)) as client:
            tools = await client.list_tools()
            elapsed = time.perf_counter() - t0
    if len(tools.tools) != 12:
        raise RuntimeError(f"expected taskorch's 12 tools, got {len(tools.tools)}")
    return elapsed


def _imports_once() -> float:
    # Timed to the child's line, not its exit: tearing the interpreter down is not start-up.
    code = f"{_SERVE_IMPORTS}; print('imported', flush=True)"
    t0 = time.perf_counter()
    with subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, env=child_env(), cwd=repo_root()
    ) as child:
        line = child.stdout.readline() if child.stdout is not None else b""
        elapsed = time.perf_counter() - t0
    if line.strip() != b"imported" or child.returncode != 0:
        raise RuntimeError(f"importing what `serve` imports failed: {line!r}")
    return elapsed


async def _measure(workdir: Path) -> list[float]:
    (workdir / "config.json").write_text(json.dumps(demo_config(workdir)), encoding="utf-8")
    await _one(workdir, -1)  # warm the OS file cache, as any second start would be
    return [await _one(workdir, i) for i in range(RUNS)]


def main() -> dict[str, object]:
    """Measure the cold start; returns seconds (median, min, max) over 10 runs."""
    with tempfile.TemporaryDirectory(prefix="taskorch-bench-") as tmp:
        times = anyio.run(_measure, Path(tmp))
    imports = [_imports_once() for _ in range(IMPORT_RUNS)]
    return {
        "cold_start_to_tools_list_median_s": round(statistics.median(times), 3),
        "cold_start_min_s": round(min(times), 3),
        "cold_start_max_s": round(max(times), 3),
        "imports_median_s": round(statistics.median(imports), 3),
        "runs": len(times),
        "target_s": 1.0,
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
