"""Downstream pool: call overhead, crash detection time, processes left behind.

1. Overhead of `Pool.call` over a raw `mcp.Client.call_tool` on the SDK's own
   stdio transport, to processes of the same stdio server (the SDK fixture's
   `echo`), interleaved call by call; `CALLS` calls each.
   Targets: under 10 % and under 150 µs.
   On a small shared machine one server process can run ~60 µs faster than an
   identical one for a whole run (where the scheduler puts it), which swamps the
   difference measured. So each side talks to `SERVERS` processes round robin
   (a process's bias averages out), the order within a pair alternates, and
   besides the ratio of medians the bench reports the median of per-pair
   differences, the client's own CPU time per call (what the pool adds is CPU
   work in this process, and CPU time is blind to where the server runs), and
   `raw_process_spread_us`, the spread of the raw processes' medians: the noise
   floor of the wall-clock figures.
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
from collections.abc import Awaitable
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters

from executor.downstream import Pool
from executor.errors import ErrorKind, ToolCallError
from tests.fixtures.launch import MCP_FIXTURE, alive, fixture_spec, our_zombies, tiny_spec

CALLS = 1500
WARMUP = 60
SERVERS = 3
CRASHES = 20
CYCLES = 100


async def _timed(call: Awaitable[object]) -> tuple[int, int]:
    """Wall and CPU nanoseconds one call took."""
    wall, cpu = time.perf_counter_ns(), time.process_time_ns()
    await call
    return time.perf_counter_ns() - wall, time.process_time_ns() - cpu


def _us(ns: float) -> float:
    return round(ns / 1000, 1)


async def overhead() -> dict[str, object]:
    names = [f"fx{k}" for k in range(SERVERS)]
    raw_wall: list[int] = []
    pool_wall: list[int] = []
    raw_cpu: list[int] = []
    pool_cpu: list[int] = []
    raw_by_process: list[list[int]] = [[] for _ in names]
    args = {"text": "hello"}
    async with AsyncExitStack() as stack:
        raws: list[Client] = []
        for name in names:
            params = StdioServerParameters(
                command=sys.executable, args=[str(MCP_FIXTURE), "--name", name]
            )
            raws.append(await stack.enter_async_context(Client(params)))
        pool = await stack.enter_async_context(Pool({n: fixture_spec(n) for n in names}))
        for raw in raws:
            await raw.list_tools()
        await pool.catalog()
        for i in range(WARMUP + CALLS):
            k = i % SERVERS
            if (i // SERVERS) % 2 == 0:
                raw_t = await _timed(raws[k].call_tool("echo", args))
                pool_t = await _timed(pool.call(names[k], "echo", args))
            else:
                pool_t = await _timed(pool.call(names[k], "echo", args))
                raw_t = await _timed(raws[k].call_tool("echo", args))
            if i >= WARMUP:
                raw_wall.append(raw_t[0])
                pool_wall.append(pool_t[0])
                raw_cpu.append(raw_t[1])
                pool_cpu.append(pool_t[1])
                raw_by_process[k].append(raw_t[0])
    raw_median = statistics.median(raw_wall)
    pool_median = statistics.median(pool_wall)
    per_process = [statistics.median(times) for times in raw_by_process]
    return {
        "calls_each": CALLS,
        "server_processes_each": SERVERS,
        "raw_client_median_us": _us(raw_median),
        "pool_median_us": _us(pool_median),
        "overhead_us": _us(pool_median - raw_median),
        "overhead_ratio": round(pool_median / raw_median - 1, 4),
        "overhead_pair_median_us": _us(
            statistics.median(p - r for p, r in zip(pool_wall, raw_wall, strict=True))
        ),
        "raw_process_spread_us": _us(max(per_process) - min(per_process)),
        "raw_client_cpu_us": _us(statistics.median(raw_cpu)),
        "pool_cpu_us": _us(statistics.median(pool_cpu)),
        "overhead_cpu_us": _us(
            statistics.median(p - r for p, r in zip(pool_cpu, raw_cpu, strict=True))
        ),
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
