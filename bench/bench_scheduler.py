"""The execution engine: makespan against the lower bound, throughput, memory, speedup.

- **makespan ratio**: a random 200-step DAG of 50 ms sleep steps, 16 in flight,
  divided by the lower bound for that concurrency,
  `max(critical path, steps x 50 ms / 16)`. Measured with an in-process sleep
  tool (the engine alone) and with the real stdio fixture server through the
  pool (the engine plus MCP over stdio), 5 runs each: the median and the best
  (the machine is shared, so the load average is reported too). Target <= 1.05.
  In process, a second ratio divides by the bound of the durations the steps
  actually took in that run (`max(critical path of observed durations, observed
  work / 16)`): the sleep's own overshoot (the event loop's timer granularity) is
  then in the bound, so the figure is the scheduler's overhead alone.
- **steps/s**: a random 5,000-step DAG of in-process no-op steps through the
  full durable path (every transition committed to SQLite on disk). Target >= 1,000.
- **memory**: peak RSS growth while a 10,000-step plan executes (RSS sampled
  every 5 ms from a thread). Target < 300 MB.
- **speedup**: the same 200-step plan with 1 step in flight vs 16.
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import psutil

from executor.calls import ProgressFn, ToolCaller, ToolResult
from executor.catalog import Catalog, ToolInfo
from executor.downstream import Pool
from executor.downstream.specs import StdioServerSpec
from executor.ids import PlanId
from executor.plan import Plan, Step
from executor.run import Scheduler, SchedulerConfig
from executor.status import PlanStatus
from executor.store import SqliteStore, Store
from executor.task_client import TaskHooks
from executor.validate import checked_graph

SLEEP_S = 0.05
RUNS = 5
FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "engine_server.py"


class InProcess:
    """A `ToolCaller` whose `sleep` waits `ms` and whose `noop` returns at once.

    It notes when each call tagged with a `sid` argument starts and ends.
    """

    def __init__(self) -> None:
        self.starts: dict[str, float] = {}
        self.ends: dict[str, float] = {}

    async def call(
        self,
        server: str,
        tool: str,
        arguments: dict[str, Any],
        *,
        timeout_s: float | None = None,
        on_progress: ProgressFn | None = None,
        task: TaskHooks | None = None,
    ) -> ToolResult:
        sid = arguments.get("sid")
        if sid is not None:
            self.starts[sid] = time.perf_counter()
        if tool == "sleep":
            await anyio.sleep(float(arguments["ms"]) / 1000)
        if sid is not None:
            self.ends[sid] = time.perf_counter()
        return ToolResult(content=[{"type": "text", "text": "ok"}], structured_content={"ok": 1})

    async def catalog(self) -> Catalog:
        return Catalog([ToolInfo(server="mem", name="sleep"), ToolInfo(server="mem", name="noop")])


def random_dag(
    plan_id: str,
    n: int,
    server: str,
    tool: str,
    arguments: dict[str, Any],
    seed: int = 200,
    *,
    tag: bool = False,
) -> Plan:
    """A seeded random DAG: each step depends on up to 3 of the 15 steps before it.

    With `tag`, each step's arguments also carry its id as `sid`.
    """
    rng = random.Random(seed)
    steps = []
    for i in range(n):
        window = list(range(max(0, i - 15), i))
        deps = rng.sample(window, k=min(len(window), rng.randint(0, 3)))
        steps.append(
            Step(
                id=f"s{i}",
                server=server,
                tool=tool,
                arguments={**arguments, "sid": f"s{i}"} if tag else arguments,
                depends_on=tuple(f"s{d}" for d in sorted(deps)),
            )
        )
    plan = Plan(id=PlanId(plan_id), steps=tuple(steps))
    return plan.model_copy(update={"status": PlanStatus.CONFIRMED, "approved_hash": plan.plan_hash})


def lower_bound_s(plan: Plan, concurrency: int, seconds: float) -> float:
    """No schedule can beat the critical path, nor the work spread over the slots."""
    height = max(checked_graph(plan.steps).height.values())
    return max(height * seconds, len(plan.steps) * seconds / concurrency)


def observed_lower_bound_s(plan: Plan, concurrency: int, durations: dict[str, float]) -> float:
    """The same bound with each step's duration as observed rather than nominal.

    `plan.steps` lists every step after its dependencies (as `random_dag` builds them).
    """
    finish: dict[str, float] = {}
    for step in plan.steps:
        ready = max((finish[d] for d in step.depends_on), default=0.0)
        finish[step.id] = ready + durations[step.id]
    return max(max(finish.values()), sum(durations.values()) / concurrency)


async def timed_run(store: Store, scheduler: Scheduler, plan: Plan) -> float:
    await store.save_plan(plan)
    start = time.perf_counter()
    report = await scheduler.execute(plan.id)
    elapsed = time.perf_counter() - start
    if report.status is not PlanStatus.COMPLETED:
        raise RuntimeError(f"bench plan {plan.id} ended {report.status}: {report.message}")
    return elapsed


@dataclass
class Runs:
    """What `repeated` measured."""

    times: list[float] = field(default_factory=list)
    """The makespan of each run."""
    hops: list[float] = field(default_factory=list)
    """In process: every hop, from the end of a step's last dependency to its call's start."""
    observed_ratios: list[float] = field(default_factory=list)
    """In process: each run's makespan over the lower bound of its observed durations."""
    durations: list[float] = field(default_factory=list)
    """In process: every step's observed duration."""


async def repeated(
    store: Store, caller: ToolCaller, config: SchedulerConfig, name: str, server: str
) -> Runs:
    """Makespans of `RUNS` runs of the bench DAG (fresh plan ids, same shape)."""
    runs = Runs()
    tag = isinstance(caller, InProcess)
    limit = config.max_parallel_steps
    async with Scheduler(store, caller, config) as sch:
        for i in range(RUNS):
            args = {"ms": int(SLEEP_S * 1000)}
            dag = random_dag(f"{name}{i}", 200, server, "sleep", args, tag=tag)
            elapsed = await timed_run(store, sch, dag)
            runs.times.append(elapsed)
            if isinstance(caller, InProcess):
                runs.hops += [
                    caller.starts[s.id] - max(caller.ends[d] for d in s.depends_on)
                    for s in dag.steps
                    if s.depends_on
                ]
                took = {s.id: caller.ends[s.id] - caller.starts[s.id] for s in dag.steps}
                runs.durations += took.values()
                runs.observed_ratios.append(elapsed / observed_lower_bound_s(dag, limit, took))
    return runs


async def makespans(db: Path) -> dict[str, object]:
    figures: dict[str, object] = {"load_average_1min": round(os.getloadavg()[0], 2)}
    async with await SqliteStore.open(db) as store:
        shape = random_dag("shape", 200, "mem", "sleep", {})
        bound = lower_bound_s(shape, 16, SLEEP_S)
        figures["dag_critical_path_steps"] = max(checked_graph(shape.steps).height.values())
        figures["lower_bound_s_16"] = round(bound, 3)
        # One server here, so its call limit must not be the tighter one.
        config = SchedulerConfig(max_parallel_steps=16, max_calls_per_server=16)
        runs = await repeated(store, InProcess(), config, "mk", "mem")
        par = runs.times
        figures["makespan_s_in_process_16_median"] = round(statistics.median(par), 3)
        figures["makespan_ratio_in_process_median"] = round(statistics.median(par) / bound, 4)
        figures["makespan_ratio_in_process_best"] = round(min(par) / bound, 4)
        # The bound of what the sleeps actually took: the scheduler's own overhead.
        observed = runs.observed_ratios
        figures["makespan_ratio_observed_median"] = round(statistics.median(observed), 4)
        figures["makespan_ratio_observed_best"] = round(min(observed), 4)
        overshoot = statistics.median(runs.durations) - SLEEP_S
        figures["sleep_overshoot_ms_median"] = round(1000 * overshoot, 3)
        # Waiting for a free slot counts too, so the median tells the engine's own cost.
        figures["hop_latency_ms_median"] = round(1000 * statistics.median(runs.hops), 2)

        async with Scheduler(store, InProcess(), SchedulerConfig(max_parallel_steps=1)) as sch:
            seq = await timed_run(store, sch, random_dag("seq", 200, "mem", "sleep", {"ms": 50}))
        figures["makespan_s_sequential_1"] = round(seq, 3)
        figures["speedup_16_vs_1"] = round(seq / statistics.median(par), 2)

        spec = StdioServerSpec(command=sys.executable, args=(str(FIXTURE),), max_concurrency=16)
        async with Pool({"engine": spec}) as pool:
            await pool.catalog()  # start the server before the clock starts
            stdio = (await repeated(store, pool, config, "stdio", "engine")).times
        figures["makespan_s_stdio_16_median"] = round(statistics.median(stdio), 3)
        figures["makespan_ratio_stdio_median"] = round(statistics.median(stdio) / bound, 4)
        figures["makespan_ratio_stdio_best"] = round(min(stdio) / bound, 4)
    return figures


async def throughput(db: Path) -> dict[str, object]:
    figures: dict[str, object] = {}
    async with await SqliteStore.open(db) as store:
        for limit in (16, 64):
            plan = random_dag(f"tp{limit}", 5_000, "mem", "noop", {"x": 1})
            config = SchedulerConfig(max_parallel_steps=limit, max_calls_per_server=limit)
            async with Scheduler(store, InProcess(), config) as sch:
                elapsed = await timed_run(store, sch, plan)
            figures[f"steps_per_s_noop_{limit}_in_flight"] = round(len(plan.steps) / elapsed)
    return figures


class PeakRss:
    """Samples this process's RSS from a thread, so a busy event loop cannot hide a peak."""

    def __init__(self) -> None:
        self._proc = psutil.Process()
        self.baseline = self._proc.memory_info().rss
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


async def memory(db: Path) -> dict[str, object]:
    async with await SqliteStore.open(db) as store:
        plan = random_dag("mem10k", 10_000, "mem", "noop", {"x": 1})
        await store.save_plan(plan)
        config = SchedulerConfig(max_parallel_steps=16, max_calls_per_server=16)
        async with Scheduler(store, InProcess(), config) as sch:
            with PeakRss() as rss:
                start = time.perf_counter()
                report = await sch.execute(plan.id)
                elapsed = time.perf_counter() - start
    if report.status is not PlanStatus.COMPLETED:
        raise RuntimeError(f"the 10,000-step plan ended {report.status}")
    return {
        "rss_growth_mb_10k_steps": round((rss.peak - rss.baseline) / 2**20, 1),
        "rss_peak_mb_10k_steps": round(rss.peak / 2**20, 1),
        "seconds_10k_steps": round(elapsed, 2),
    }


def main() -> dict[str, object]:
    figures: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="bench-scheduler-") as tmp:
        figures.update(anyio.run(makespans, Path(tmp) / "makespan.db"))
        figures.update(anyio.run(throughput, Path(tmp) / "throughput.db"))
        figures.update(anyio.run(memory, Path(tmp) / "memory.db"))
    return figures


if __name__ == "__main__":
    for key, value in main().items():
        print(f"{key}: {value}")
