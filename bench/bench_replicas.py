"""PostgreSQL next to SQLite, and several replicas against one, in the same run.

A throwaway PostgreSQL server is started for the bench (`tests/pg.py`) with its
crash-safety settings kept (fsync and synchronous commit on); SQLite runs with
taskorch's default (`synchronous=NORMAL`, WAL). Both on this machine's disk.

- **durable steps/s**: a random 5,000-step DAG of in-process no-op steps, 16 in
  flight, every transition committed to the store: SQLite, PostgreSQL (each
  commit flushed to disk), PostgreSQL with `synchronous_commit=off` (SQLite's
  guarantee at `synchronous=NORMAL`), and the ratios to SQLite.
- **makespan ratio**: a random 200-step DAG of 50 ms sleep steps, 16 in flight,
  over the lower bound `max(critical path, steps x 50 ms / 16)`, median of 5
  runs on each store.
- **replicas**: small plans (5 steps each, 2 in flight) run through 1 replica
  process, then split round-robin (as a load balancer would) over 3 replica
  processes on one PostgreSQL; plans per second and the ratio 3 / 1. Each
  replica runs 4 plans at a time (taskorch's default). Two shapes: `waiting`
  (60 plans of 200 ms steps: the time is the tools', as with real downstream
  servers, and more replicas run more plans at once) and `busy` (120 plans of
  5 ms steps: the time is taskorch's own CPU, which the machine's cores bound
  whatever the number of processes).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

from bench.bench_scheduler import SLEEP_S, InProcess, lower_bound_s, random_dag, timed_run
from executor.plan import Plan, Step
from executor.run import Scheduler, SchedulerConfig
from executor.status import PlanStatus
from executor.store import SqliteStore, Store
from executor.store.postgres import PostgresStore
from tests.executor.scheduler_support import confirmed
from tests.pg import running_server

RUNS = 5
PLAN_STEPS = 5
SHAPES = {"waiting": (60, 200), "busy": (120, 5)}
"""Plans of `PLAN_STEPS` steps: (how many plans, each step's ms) per shape."""
ROOT = Path(__file__).resolve().parents[1]


async def steps_per_s(store: Store) -> float:
    plan = random_dag("tp", 5_000, "mem", "noop", {"x": 1})
    config = SchedulerConfig(max_parallel_steps=16, max_calls_per_server=16)
    async with Scheduler(store, InProcess(), config) as sch:
        elapsed = await timed_run(store, sch, plan)
    return len(plan.steps) / elapsed


async def makespan_ratio(store: Store) -> float:
    bound = lower_bound_s(random_dag("shape", 200, "mem", "sleep", {}), 16, SLEEP_S)
    config = SchedulerConfig(max_parallel_steps=16, max_calls_per_server=16)
    times = []
    async with Scheduler(store, InProcess(), config) as sch:
        for i in range(RUNS):
            dag = random_dag(f"mk{i}", 200, "mem", "sleep", {"ms": int(SLEEP_S * 1000)})
            times.append(await timed_run(store, sch, dag))
    return statistics.median(times) / bound


async def both_stores(sqlite_path: Path, pg_url: str, pg_async_url: str) -> dict[str, object]:
    figures: dict[str, object] = {"load_average_1min": round(os.getloadavg()[0], 2)}
    stores: dict[str, Callable[[], Awaitable[Any]]] = {
        "sqlite": lambda: SqliteStore.open(sqlite_path),
        "postgres": lambda: PostgresStore.open(pg_url),
        # SQLite's guarantee at `synchronous=NORMAL`: a crash of taskorch or of the
        # database loses nothing; a power cut may lose the last commits.
        "postgres_async_commit": lambda: PostgresStore.open(pg_async_url),
    }
    rates: dict[str, float] = {}
    for name, opener in stores.items():
        async with await opener() as store:
            rates[name] = await steps_per_s(store)
            figures[f"makespan_ratio_{name}_median"] = round(await makespan_ratio(store), 4)
        figures[f"steps_per_s_{name}_16_in_flight"] = round(rates[name])
    for name in ("postgres", "postgres_async_commit"):
        figures[f"steps_per_s_ratio_{name}_vs_sqlite"] = round(rates[name] / rates["sqlite"], 3)
    return figures


def small_plan(i: int, step_ms: int) -> Plan:
    steps = [
        Step(
            id=f"s{k}",
            server="mem",
            tool="sleep",
            arguments={"ms": step_ms},
            depends_on=(f"s{k - 2}",) if k >= 2 else (),
        )
        for k in range(PLAN_STEPS)
    ]
    return confirmed(f"small{i}", steps)


async def save_small_plans(url: str, plans: int, step_ms: int) -> list[str]:
    async with await PostgresStore.open(url) as store:
        ids: list[str] = []
        for i in range(plans):
            plan = small_plan(i, step_ms)
            await store.save_plan(plan)
            ids.append(plan.id)
    return ids


async def replica(url: str, plan_ids: list[str]) -> None:
    """One replica: open the store, say it is ready, run its plans when told to go."""
    async with await PostgresStore.open(url) as store:
        config = SchedulerConfig(max_parallel_steps=2)
        async with Scheduler(store, InProcess(), config) as sch:
            print("ready", flush=True)
            await anyio.to_thread.run_sync(sys.stdin.readline)
            runs = [await sch.start(p) for p in plan_ids]
            for run in runs:
                report = await run.wait()
                if report.status is not PlanStatus.COMPLETED:
                    raise RuntimeError(f"{report.plan_id} ended {report.status}")
    print("done", flush=True)


def plans_per_s(url: str, plan_ids: list[str], replicas: int) -> float:
    """Run the plans split over `replicas` processes; plans per second from go to done."""
    shares = [plan_ids[i::replicas] for i in range(replicas)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.bench_replicas", "replica", url, *share],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for share in shares
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError("a replica did not start")
        start = time.perf_counter()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "done":
                raise RuntimeError("a replica failed")
        elapsed = time.perf_counter() - start
    finally:
        for proc in procs:
            proc.wait(timeout=120)
    return len(plan_ids) / elapsed


def main() -> dict[str, object]:
    figures: dict[str, object] = {}
    with running_server(durable=True) as server, tempfile.TemporaryDirectory() as tmp:
        server.execute("CREATE SCHEMA stores")
        server.execute("CREATE SCHEMA stores_async")
        stores_url = f"{server.url()}?options=-csearch_path%3Dstores"
        async_url = (
            f"{server.url()}?options=-csearch_path%3Dstores_async%20-csynchronous_commit%3Doff"
        )
        figures.update(anyio.run(both_stores, Path(tmp) / "bench.db", stores_url, async_url))
        for shape, (plans, step_ms) in SHAPES.items():
            rates = {}
            for n in (1, 3):
                schema = f"replicas_{shape}_{n}"
                server.execute(f"CREATE SCHEMA {schema}")
                url = f"{server.url()}?options=-csearch_path%3D{schema}"
                ids = anyio.run(save_small_plans, url, plans, step_ms)
                rates[n] = plans_per_s(url, ids, n)
                figures[f"plans_per_s_{shape}_{n}_replica{'s' if n > 1 else ''}"] = round(
                    rates[n], 1
                )
            figures[f"plans_per_s_{shape}_ratio_3_vs_1"] = round(rates[3] / rates[1], 2)
            figures[f"plan_shape_{shape}"] = f"{plans} plans x {PLAN_STEPS} steps of {step_ms} ms"
    return figures


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "replica":
        anyio.run(replica, sys.argv[2], sys.argv[3:])
    else:
        for key, value in main().items():
            print(f"{key}: {value}")
