"""Statistics over 100,000 attempts: `get_stats`' figures against reading the same table.

Seeds a store through its own write path with about 100,000 attempts (plans of
893 steps over 40 tools on 5 servers; every 10th step retried once, every 50th
twice; started over 30 days), then times `collect_stats` — counts, failures by
kind, last failures and p50 / p95 / max per tool in SQL, plus the servers'
availability — for everything, for the last day and for one server. Baselines
measured in the same run on the same file: `SELECT count(*)` over the attempts,
and reading every attempt row into Python. The measurements take turns, round
after round; times are medians, and each ratio is the median of its per-round
ratios: the ratios are what to compare between machines.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio

from executor.errors import ErrorKind
from executor.ids import PlanId
from executor.plan import Plan, Step, StepError, utc_now
from executor.records import AttemptRecord, ServerEvent, ServerEventKind
from executor.stats import collect_stats
from executor.status import StepStatus
from executor.store import SqliteStore, Store, WriteBatch

PLANS = 100
STEPS = 893
SERVERS = 5
TOOLS_PER_SERVER = 8
DAYS = 30
RUNS = 7
_KINDS = (ErrorKind.TIMEOUT, ErrorKind.TOOL_ERROR, ErrorKind.TOOL_UNAVAILABLE)


def _tool(i: int) -> tuple[str, str]:
    n = i % (SERVERS * TOOLS_PER_SERVER)
    return f"srv{n // TOOLS_PER_SERVER}", f"tool{n % TOOLS_PER_SERVER}"


async def _seed(store: Store, rng: random.Random) -> int:
    now = utc_now()
    total = 0
    for p in range(PLANS):
        steps = []
        for i in range(STEPS):
            server, tool = _tool(i + p)
            steps.append(Step(id=f"s{i}", server=server, tool=tool, arguments={"i": i}))
        plan = Plan(id=PlanId(f"p{p:03d}"), query="bench", steps=tuple(steps))
        await store.save_plan(plan)
        batch = WriteBatch()
        for i, step in enumerate(plan.steps):
            tries = 1 + (i % 10 == 0) + (i % 50 == 0)
            start = now - timedelta(seconds=rng.uniform(0, DAYS * 86_400))
            for attempt in range(1, tries + 1):
                call_s = rng.lognormvariate(-3 + (i % 8) * 0.3, 0.6)
                last = attempt == tries
                batch.attempts.append(
                    AttemptRecord(
                        plan_id=plan.id,
                        version=plan.version,
                        step_id=step.id,
                        attempt=attempt,
                        started_at=start,
                        finished_at=start + timedelta(seconds=call_s),
                        status=StepStatus.SUCCEEDED if last else StepStatus.FAILED,
                        error=None
                        if last
                        else StepError(kind=_KINDS[(i + attempt) % 3], message=f"failed {i}"),
                        call_s=call_s,
                    )
                )
                start += timedelta(seconds=call_s + 1)
            total += tries
        await store.write(batch)
    for n in range(SERVERS):
        at = now - timedelta(days=2)
        for _ in range(20):
            at += timedelta(minutes=rng.uniform(1, 60))
            await store.record_server_event(
                ServerEvent(owner="bench", server=f"srv{n}", kind=ServerEventKind.DOWN, at=at)
            )
            at += timedelta(seconds=rng.uniform(1, 30))
            await store.record_server_event(
                ServerEvent(
                    owner="bench", server=f"srv{n}", kind=ServerEventKind.UP, at=at, restart=True
                )
            )
    return total


async def _run(root: Path) -> dict[str, object]:
    rng = random.Random(16)
    async with await SqliteStore.open(root / "stats.db") as store:
        seeded_at = time.perf_counter()
        attempts = await _seed(store, rng)
        seed_s = time.perf_counter() - seeded_at
        day = utc_now() - timedelta(days=1)

        async def count() -> Any:
            return await store._read("SELECT count(*) FROM attempts")

        async def read_rows() -> Any:
            return await store._read("SELECT * FROM attempts")

        async def everything() -> Any:
            return await collect_stats(store)

        async def last_day() -> Any:
            return await collect_stats(store, since=day)

        async def one_server() -> Any:
            return await collect_stats(store, server="srv1")

        measures: dict[str, Callable[[], Awaitable[Any]]] = {
            "count": count,
            "read": read_rows,
            "all": everything,
            "day": last_day,
            "server": one_server,
        }
        for fn in measures.values():
            await fn()  # warm the page caches, open the read connection
        # Round-robin, so that a change in the machine's load hits every figure alike;
        # each ratio is the median of its per-round ratios.
        times: dict[str, list[float]] = {name: [] for name in measures}
        for _ in range(RUNS):
            for name, fn in measures.items():
                start = time.perf_counter()
                await fn()
                times[name].append(time.perf_counter() - start)
        stats = await everything()
        assert sum(t.calls for t in stats.tools) == attempts

    def ms(name: str) -> float:
        return statistics.median(times[name]) * 1e3

    def ratio(name: str, base: str) -> float:
        return statistics.median(a / b for a, b in zip(times[name], times[base], strict=True))

    return {
        "attempts": attempts,
        "tools": len(stats.tools),
        "seed_s": round(seed_s, 2),
        "count_star_ms": round(ms("count"), 2),
        "read_all_rows_ms": round(ms("read"), 1),
        "stats_all_ms": round(ms("all"), 1),
        "stats_last_day_ms": round(ms("day"), 2),
        "stats_one_server_ms": round(ms("server"), 1),
        "stats_all_over_read_rows": round(ratio("all", "read"), 2),
        "stats_all_over_count_star": round(ratio("all", "count"), 1),
        "stats_one_server_over_read_rows": round(ratio("server", "read"), 2),
        "stats_last_day_over_read_rows": round(ratio("day", "read"), 3),
    }


def main() -> dict[str, object]:
    """Seed a fresh store in a temporary directory, time the statistics, return the figures."""
    with tempfile.TemporaryDirectory(prefix="taskorch-bench-stats-") as tmp:
        return anyio.run(_run, Path(tmp))


if __name__ == "__main__":
    for name, value in main().items():
        print(f"{name}: {value}")
