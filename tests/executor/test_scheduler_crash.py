"""Crash and resume: the engine in a child process, killed with SIGKILL again and again."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import anyio
import psutil
import pytest
from anyio.abc import Process
from anyio.streams.text import TextReceiveStream

from executor.status import PlanStatus, SkipReason, StepStatus
from executor.store import SqliteStore
from tests.executor.crash_driver import PLAN_ID, is_idempotent, plan_steps

ROOT = Path(__file__).resolve().parents[2]
KILLS = 10


def kill_tree(proc: Process) -> None:
    """SIGKILL the driver and its downstream server at once: a machine-level crash."""
    try:
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in family:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass


def lines(out: Path) -> Counter[str]:
    return Counter(out.read_text().splitlines()) if out.exists() else Counter()


def step_ids(out: Path) -> list[str]:
    return [s["id"] for s in plan_steps(out)]


def ancestors(out: Path) -> dict[str, set[str]]:
    """Every step's transitive dependencies."""
    found: dict[str, set[str]] = {}
    for step in plan_steps(out):  # in dependency order
        found[step["id"]] = set(step["depends_on"]).union(*(found[d] for d in step["depends_on"]))
    return found


def check_parked(out: Path, statuses: dict[str, str]) -> None:
    """A run waits for a decision only once everything independent of it has run."""
    waiting = {sid for sid, status in statuses.items() if status == "interrupted"}
    assert waiting, statuses
    for sid, above in ancestors(out).items():
        if sid in waiting:
            assert not is_idempotent(sid), f"{sid} is safe to repeat, yet waits for a decision"
        elif above & waiting:
            assert statuses[sid] == "pending", (sid, statuses[sid])
        else:
            assert statuses[sid] in ("succeeded", "skipped"), (sid, statuses[sid])


async def check_invariants(db: Path, out: Path) -> dict[str, StepStatus]:
    """Nothing done twice that may not be, nothing recorded done that did not happen."""
    seen = lines(out)
    async with await SqliteStore.open(db) as store:
        states = await store.get_step_states(PLAN_ID, 1)
    for sid in step_ids(out):
        assert seen[sid] <= 1, f"{sid} took effect {seen[sid]} times"
        if sid in states and states[sid].status is StepStatus.SUCCEEDED:
            assert seen[sid] == 1, f"{sid} is recorded succeeded but its line is missing"
    return {k: v.status for k, v in states.items()}


async def drive(
    db: Path, out: Path, kill_after: int | None, rng: random.Random
) -> tuple[str, dict[str, str], int]:
    """Run the driver; kill it after `kill_after` step events (plus a random pause).

    Returns the outcome (`killed` or `DONE <status>`), the decisions the driver
    made on interrupted steps, and how many runs it saw wait for one (each
    checked by `check_parked`).
    """
    args = [sys.executable, "-m", "tests.executor.crash_driver", str(db), str(out)]
    decisions: dict[str, str] = {}
    parked = 0
    async with await anyio.open_process(
        args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=dict(os.environ)
    ) as proc:
        assert proc.stdout is not None
        seen_steps = 0
        buffer = ""
        try:
            with anyio.fail_after(90):
                async for chunk in TextReceiveStream(proc.stdout):
                    buffer += chunk
                    *complete, buffer = buffer.split("\n")
                    for line in complete:
                        if line.startswith("PARKED "):
                            check_parked(out, json.loads(line.split(" ", 1)[1]))
                            parked += 1
                        if line.startswith("INTERRUPTED "):
                            decisions.update(json.loads(line.split(" ", 1)[1]))
                        if line.startswith("DONE "):
                            await proc.wait()
                            return line, decisions, parked
                        if line.startswith("EVENT step_"):
                            seen_steps += 1
                    if kill_after is not None and seen_steps >= kill_after:
                        await anyio.sleep(rng.uniform(0, 0.15))
                        kill_tree(proc)
                        await proc.wait()
                        # Decisions it printed before it died may not have been read yet:
                        # they were applied all the same.
                        async for chunk in TextReceiveStream(proc.stdout):
                            buffer += chunk
                        *complete, _ = buffer.split("\n")
                        for line in complete:
                            if line.startswith("INTERRUPTED "):
                                decisions.update(json.loads(line.split(" ", 1)[1]))
                        return "killed", decisions, parked
        finally:
            if proc.returncode is None:
                kill_tree(proc)
                await proc.wait()
    return f"exited {proc.returncode}", decisions, parked


@pytest.mark.anyio
@pytest.mark.timeout(300)
async def test_kill_9_at_random_moments_never_repeats_or_loses_an_effect(tmp_path: Path) -> None:
    db, out = tmp_path / "crash.db", tmp_path / "out.txt"
    rng = random.Random(2024)
    kills = parked = 0
    decided: dict[str, str] = {}
    outcome = ""
    for _ in range(40):
        kill_after = rng.randint(1, 6) if kills < KILLS else None
        outcome, decisions, waited = await drive(db, out, kill_after, rng)
        # The driver decides as a person would: skip what took effect, rerun the rest.
        decided.update(decisions)
        parked += waited
        await check_invariants(db, out)
        if outcome == "killed":
            kills += 1
        elif outcome.startswith("DONE"):
            break
        else:
            pytest.fail(f"the driver ended unexpectedly: {outcome}")
    assert outcome == "DONE completed", outcome
    assert kills >= KILLS
    # Some kill cut a non-idempotent step off mid-call; each time, the run went on with
    # everything independent of it (idempotent branches included) before it waited.
    assert parked >= 1 and decided

    statuses = await check_invariants(db, out)
    seen = lines(out)
    async with await SqliteStore.open(db) as store:
        states = await store.get_step_states(PLAN_ID, 1)
    for sid in step_ids(out):
        # Every effect happened exactly once, in the end.
        assert seen[sid] == 1, (sid, seen[sid])
        if is_idempotent(sid):
            # Safe to repeat, so never left waiting for a decision.
            assert statuses[sid] is StepStatus.SUCCEEDED and sid not in decided
        else:
            state = states[sid]
            by_decision = (
                state.status is StepStatus.SKIPPED
                and decided.get(sid) == "skip"
                and state.skip_reason is SkipReason.DECISION
            )
            assert state.status is StepStatus.SUCCEEDED or by_decision, (sid, state.status)
    async with await SqliteStore.open(db) as store:
        assert (await store.get_plan(PLAN_ID)).status is PlanStatus.COMPLETED
