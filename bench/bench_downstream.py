"""Downstream pool: call overhead, crash detection time, processes left behind.

1. Overhead of `Pool.call` over a raw `mcp.Client.call_tool` on the SDK's own
   stdio transport, to two processes of the same stdio server (the SDK fixture's
   `echo`), interleaved call by call; medians of `CALLS` calls each.
   Targets: under 10 % and under 150 µs.
2. Time from a downstream crash (SIGKILL of the server) to the call in flight
   failing with `tool_unavailable`; median and worst of `CRASHES`. Target: < 100 ms.
3. Processes left after `CYCLES` open / call / crash / close cycles, each server
   having started a grandchild in its group: servers, grandchildren and
   unreaped children still there at the end. Target: 0.
"""

from __future__ import annotations

import logging
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters

from executor.downstream import Pool
from executor.errors import ErrorKind, ToolCallError
from tests.fixtures.launch import MCP_FIXTURE, alive, fixture_spec, our_zombies, tiny_spec

CALLS = 600
WARMUP = 50
CRASHES = 20
CYCLES = 100


async def overhead() -> dict[str, object]:
    raw_times: list[float] = []
    pool_times: list[float] = []
    params = StdioServerParameters(command=sys.executable, args=[str(MCP_FIXTURE), "--name", "raw"])
    args = {"text": "hello"}
    async with Client(params) as raw, Pool({"fx": fixture_spec("fx")}) as pool:
        await raw.list_tools()
        await pool.catalog()
        for i in range(WARMUP + CALLS):
            start = time.perf_counter()
            await raw.call_tool("echo", args)
            middle = time.perf_counter()
            await pool.call("fx", "echo", args)
            end = time.perf_counter()
            if i >= WARMUP:
                raw_times.append(middle - start)
                pool_times.append(end - middle)
    raw_median = statistics.median(raw_times)
    pool_median = statistics.median(pool_times)
    return {
        "calls_each": CALLS,
        "raw_client_median_us": round(raw_median * 1e6, 1),
        "pool_median_us": round(pool_median * 1e6, 1),
        "overhead_us": round((pool_median - raw_median) * 1e6, 1),
        "overhead_ratio": round(pool_median / raw_median - 1, 4),
    }


async def in_flight(pool: Pool, marker: Path, failed_at: list[float]) -> None:
    """A call that only ends when its server dies; notes when it failed."""
    try:
        await pool.call("tiny", "sleep", {"seconds": 600, "marker": str(marker)})
    except ToolCallError as exc:
        failed_at.append(time.perf_counter())
        assert exc.kind is ErrorKind.TOOL_UNAVAILABLE, exc


async def crash_detection() -> dict[str, object]:
    delays: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        marker = Path(tmp) / "marker"
        async with Pool({"tiny": tiny_spec("tiny")}) as pool:
            for _ in range(CRASHES):
                await pool.call("tiny", "echo", {"text": "up"})  # (re)started and healthy
                [health] = pool.health()
                assert health.pid is not None
                await anyio.Path(marker).unlink(missing_ok=True)
                failed_at: list[float] = []

                async with anyio.create_task_group() as tg:
                    tg.start_soon(in_flight, pool, marker, failed_at)
                    with anyio.fail_after(30):
                        while not await anyio.Path(marker).exists():  # noqa: ASYNC110
                            await anyio.sleep(0.005)
                    killed_at = time.perf_counter()
                    os.kill(health.pid, signal.SIGKILL)
                delays.append(failed_at[0] - killed_at)
    return {
        "crashes": CRASHES,
        "crash_to_failure_median_ms": round(statistics.median(delays) * 1000, 2),
        "crash_to_failure_max_ms": round(max(delays) * 1000, 2),
    }


async def process_cycles() -> dict[str, object]:
    tracked: list[int] = []
    start = time.perf_counter()
    for _ in range(CYCLES):
        async with Pool({"tiny": tiny_spec("tiny")}) as pool:
            tracked.append(int((await pool.call("tiny", "spawn_child", {})).text()))
            [health] = pool.health()
            assert health.pid is not None
            tracked.append(health.pid)
            try:
                await pool.call("tiny", "crash", {})
            except ToolCallError:
                pass
            await pool.call("tiny", "echo", {"text": "restarted"})
            [health] = pool.health()
            assert health.pid is not None
            tracked.append(health.pid)
    elapsed = time.perf_counter() - start
    left = [pid for pid in tracked if alive(pid)]
    return {
        "cycles": CYCLES,
        "processes_started": len(tracked),
        "processes_left": len(left) + len(our_zombies()),
        "cycle_ms": round(elapsed / CYCLES * 1000, 1),
    }


async def run() -> dict[str, object]:
    results: dict[str, object] = {}
    results.update(await overhead())
    results.update(await crash_detection())
    results.update(await process_cycles())
    return results


def main() -> dict[str, object]:
    """Run the three measurements and return their figures."""
    # Every deliberate crash would log a warning; keep the bench output readable.
    log = logging.getLogger("executor.downstream")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        return anyio.run(run)
    finally:
        log.setLevel(level)


if __name__ == "__main__":
    for key, value in main().items():
        print(f"{key}: {value}")
