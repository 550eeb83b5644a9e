"""Store throughput: commits/s of scheduler-shaped batches, rows/s of large batches.

A scheduler-shaped batch is what the scheduler commits when a step finishes: one
step state (with a small MCP result), one attempt record and one event. Measured
with one writer and with 8 concurrent writers sharing one `Store`, with
`synchronous=NORMAL` (the default: survives a crash of taskorch) and `FULL`
(survives a power loss too). The await round trip of aiosqlite (`SELECT 1`) is
measured in the same run as the baseline a transaction's cost is made of.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import anyio

from executor.calls import ToolResult
from executor.ids import PlanId
from executor.plan import Plan, Step, utc_now
from executor.records import AttemptRecord, Event, EventKind, StepState
from executor.status import StepStatus
from executor.store import SqliteStore, WriteBatch

COMMITS = 2_000
WRITERS = 8
BIG_BATCH = 1_000
BIG_RUNS = 5
PING_RUNS = 2_000


def make_plan(plan_id: str, steps: int) -> Plan:
    """A plan of `steps` independent steps."""
    return Plan(
        id=PlanId(plan_id),
        query="bench",
        steps=tuple(
            Step(id=f"s{i}", server="srv", tool="echo", arguments={"i": i}) for i in range(steps)
        ),
    )


def step_batch(plan: Plan, index: int) -> WriteBatch:
    """What the scheduler commits when step number `index` of `plan` succeeds."""
    step = plan.steps[index % len(plan.steps)]
    started = utc_now()
    finished = started + timedelta(milliseconds=12)
    result = ToolResult(
        content=[{"type": "text", "text": f'{{"value": {index}, "note": "{"x" * 120}"}}'}],
    )
    return WriteBatch(
        step_states=[
            StepState(
                plan_id=plan.id,
                version=plan.version,
                step_id=step.id,
                status=StepStatus.SUCCEEDED,
                attempts=1,
                output=result.output(),
                result=result,
                started_at=started,
                finished_at=finished,
            )
        ],
        attempts=[
            AttemptRecord(
                plan_id=plan.id,
                version=plan.version,
                step_id=step.id,
                attempt=1,
                started_at=started,
                finished_at=finished,
                status=StepStatus.SUCCEEDED,
            )
        ],
        events=[
            Event(
                plan_id=plan.id,
                kind=EventKind.STEP_SUCCEEDED,
                step_id=step.id,
                data={"duration_s": 0.012},
            )
        ],
        durations=[("srv", "echo", 0.012)],
    )


async def _commits_per_s(path: Path, synchronous: str, writers: int) -> float:
    async with await SqliteStore.open(path, synchronous=synchronous) as store:
        plans = [make_plan(f"{path.stem}-w{w}", 200) for w in range(writers)]
        for plan in plans:
            await store.save_plan(plan)
        per_writer = COMMITS // writers
        batches = [[step_batch(plan, i) for i in range(per_writer)] for plan in plans]

        async def run(mine: list[WriteBatch]) -> None:
            for batch in mine:
                await store.write(batch)

        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for mine in batches:
                tg.start_soon(run, mine)
        elapsed = time.perf_counter() - start
        return per_writer * writers / elapsed


async def _big_batches(path: Path) -> dict[str, float]:
    async with await SqliteStore.open(path) as store:
        plan = make_plan("big", BIG_BATCH)
        await store.save_plan(plan)
        batch = WriteBatch(
            step_states=[s for i in range(BIG_BATCH) for s in step_batch(plan, i).step_states]
        )
        times: list[float] = []
        for _ in range(BIG_RUNS):
            start = time.perf_counter()
            await store.write(batch)
            times.append(time.perf_counter() - start)
        read_times: list[float] = []
        for _ in range(BIG_RUNS):
            start = time.perf_counter()
            states = await store.get_step_states(plan.id, plan.version)
            read_times.append(time.perf_counter() - start)
        assert len(states) == BIG_BATCH
        return {
            "big_batch_rows_per_s": round(BIG_BATCH / statistics.median(times)),
            "big_batch_ms": round(statistics.median(times) * 1e3, 2),
            "read_1000_states_ms": round(statistics.median(read_times) * 1e3, 2),
        }


async def _ping_us(path: Path) -> float:
    async with await SqliteStore.open(path) as store:
        start = time.perf_counter()
        for _ in range(PING_RUNS):
            await store.plan_versions("none")
        return (time.perf_counter() - start) / PING_RUNS * 1e6


async def _run(root: Path) -> dict[str, object]:
    figures: dict[str, object] = {
        "read_roundtrip_us": round(await _ping_us(root / "ping.db"), 1),
    }
    for sync in ("NORMAL", "FULL"):
        for writers in (1, WRITERS):
            rate = await _commits_per_s(root / f"c-{sync}-{writers}.db", sync, writers)
            label = "1_writer" if writers == 1 else f"{writers}_writers"
            figures[f"commits_per_s_{sync.lower()}_{label}"] = round(rate)
    figures.update(await _big_batches(root / "big.db"))
    return figures


def main() -> dict[str, object]:
    """Run every measurement in a fresh temporary directory and return the figures."""
    with tempfile.TemporaryDirectory(prefix="taskorch-bench-store-") as tmp:
        return anyio.run(_run, Path(tmp))


if __name__ == "__main__":
    for name, value in main().items():
        print(f"{name}: {value}")
