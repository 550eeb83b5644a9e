"""The engine in a process of its own, for the crash-and-resume test to kill.

`python -m tests.executor.crash_driver DB OUT`:

1. opens the store `DB` and the engine fixture server, and resumes every run
   found `executing` (as taskorch does at start). The killed driver's lease is
   taken at once, its process being gone; should that ever not be seen, the
   driver resumes again until the (short) lease has expired;
2. creates the plan `crash` the first time: a random 50-step DAG plus
   `BRANCHES` independent chains, every step appending its id to the file
   `OUT` (even steps of the DAG with a non-idempotent tool; its odd steps and
   every branch step with an idempotent one), and starts it if it is only
   confirmed;
3. a run that ends `interrupted` (it has run everything that does not depend
   on an interrupted step) is reported as `PARKED <json {step: status}>`; an
   `interrupted` plan then gets the decision a person would make, step by
   step: `skip` when the step's line is in `OUT` (it took effect), else
   `rerun`; the driver prints `INTERRUPTED <json {step: decision}>` and
   executes the plan again with those decisions;
4. prints `EVENT <kind> <step>` for every event (so the test can time its
   kills), and `DONE <status>` at the end.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

import anyio

from executor.errors import NotFoundError
from executor.run import Decision, ExecutionReport, FollowedRun, Run, Scheduler, SchedulerConfig
from executor.status import PlanStatus
from executor.store import SqliteStore
from tests.executor.scheduler_support import engine_caller, save_confirmed

PLAN_ID = "crash"
STEPS = 50
BRANCHES = 3
BRANCH_LENGTH = 4
LEASE_S = 1.0
"""Short, so that a run whose killed owner is not recognised as gone is soon free."""


def is_idempotent(step_id: str) -> bool:
    """Odd steps of the DAG, and every branch step, use the idempotent tool."""
    return step_id.startswith("b") or int(step_id[1:]) % 2 == 1


def _append(out: Path, step_id: str, depends_on: list[str]) -> dict[str, Any]:
    return {
        "id": step_id,
        "server": "engine",
        "tool": "append_line_idempotent" if is_idempotent(step_id) else "append_line",
        "arguments": {"path": str(out), "line": step_id, "delay_ms": 80},
        "depends_on": depends_on,
        "retry": {"initial_interval_s": 0.01, "maximum_interval_s": 0.05},
    }


def plan_steps(out: Path) -> list[dict[str, Any]]:
    """A random (but seeded) DAG of 50 appending steps, and independent idempotent chains."""
    rng = random.Random(50)
    steps: list[dict[str, Any]] = []
    for i in range(STEPS):
        earlier = list(range(max(0, i - 6), i))
        deps = rng.sample(earlier, k=min(len(earlier), rng.randint(0, 2)))
        steps.append(_append(out, f"s{i}", [f"s{d}" for d in sorted(deps)]))
    for b in range(BRANCHES):
        for j in range(BRANCH_LENGTH):
            steps.append(_append(out, f"b{b}_{j}", [f"b{b}_{j - 1}"] if j else []))
    return steps


def say(line: str) -> None:
    print(line, flush=True)


async def follow(scheduler: Scheduler, run: Run | FollowedRun) -> ExecutionReport:
    async with scheduler.subscribe(PLAN_ID) as events:
        async for event in events:
            say(f"EVENT {event.kind.value} {event.step_id or '-'}")
    return await run.wait()


def decide(out: Path, waiting: tuple[str, ...]) -> dict[str, Decision]:
    """Skip what took effect, rerun what did not."""
    done = set(out.read_text().splitlines()) if out.exists() else set()
    return {sid: "skip" if sid in done else "rerun" for sid in waiting}


async def main(db: Path, out: Path) -> int:
    async with await SqliteStore.open(db) as store, engine_caller() as caller:
        config = SchedulerConfig(max_parallel_steps=3, lease_s=LEASE_S)
        async with Scheduler(store, caller, config) as scheduler:
            resumed = {r.plan_id: r for r in await scheduler.resume()}
            try:
                plan = await store.get_plan(PLAN_ID)
            except NotFoundError:
                plan = await save_confirmed(store, PLAN_ID, plan_steps(out))
            with anyio.fail_after(10 * LEASE_S):
                while plan.status is PlanStatus.EXECUTING and plan.id not in resumed:
                    await anyio.sleep(LEASE_S / 4)
                    resumed.update({r.plan_id: r for r in await scheduler.resume()})
                    plan = await store.get_plan(PLAN_ID)
            run: Run | FollowedRun | None = resumed.get(plan.id)
            while True:
                if run is None:
                    plan = await store.get_plan(PLAN_ID)
                    decisions = None
                    if plan.status is PlanStatus.INTERRUPTED:
                        waiting = (await scheduler.report(PLAN_ID)).needs_decision
                        decisions = decide(out, waiting)
                        say(f"INTERRUPTED {json.dumps(decisions)}")
                    if plan.status.is_terminal:
                        say(f"DONE {plan.status.value}")
                        return 0
                    run = await scheduler.start(PLAN_ID, on_interrupted=decisions)
                report = await follow(scheduler, run)
                if report.status is not PlanStatus.INTERRUPTED:
                    say(f"DONE {report.status.value}")
                    return 0
                say(f"PARKED {json.dumps({s.id: s.status.value for s in report.steps})}")
                run = None


if __name__ == "__main__":
    sys.exit(anyio.run(main, Path(sys.argv[1]), Path(sys.argv[2])))
