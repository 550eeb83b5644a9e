"""Control across processes, through the CLI: take over a dead run, cancel a live one, decline.

Each test runs `taskorch` commands as child processes on one database, the way
a user with two terminals (or an IDE and a shell) would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from executor.status import PlanStatus
from executor.store import SqliteStore, Store
from tests.e2e.support import ROOT, clean_env, run_cli, write_config
from tests.fixtures.launch import TINY_SERVER

TINY = {"command": sys.executable, "args": [str(TINY_SERVER), "--name", "tiny"]}


def _plan_file(tmp_path: Path, steps: list[dict[str, Any]]) -> Path:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"query": "control test", "steps": steps}), encoding="utf-8")
    return path


@asynccontextmanager
async def _taskorch(*args: str) -> AsyncIterator[anyio.abc.Process]:
    """`taskorch ARGS` as a child in its own process group; killed if still running at exit."""
    proc = await anyio.open_process(
        [sys.executable, "-m", "server.cli", *args],
        cwd=ROOT,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGKILL)
        with anyio.fail_after(30):
            await proc.wait()
        await proc.aclose()


async def _output(proc: anyio.abc.Process) -> tuple[str, str]:
    """Everything a finished child wrote (stdout, stderr)."""
    assert proc.stdout is not None and proc.stderr is not None
    out = b"".join([chunk async for chunk in proc.stdout])
    err = b"".join([chunk async for chunk in proc.stderr])
    return out.decode(errors="replace"), err.decode(errors="replace")


async def _wait_for(db: Path, check: Callable[[Store], Any]) -> Any:
    """Poll the database (as another process would) until `check` gives a truthy value."""
    async with await SqliteStore.open(db) as store:
        with anyio.fail_after(60):  # a hang guard, not a timing claim
            while True:
                found = await check(store)
                if found:
                    return found
                await anyio.sleep(0.05)


async def _running_plan(store: Store, step: str) -> str | None:
    """The id of the executing plan whose step `step` is in flight, if any."""
    for plan in await store.list_plans(statuses=[PlanStatus.EXECUTING]):
        states = await store.get_step_states(plan.id, plan.version)
        if step in states and states[step].status.value == "running":
            return plan.id
    return None


@pytest.mark.anyio
async def test_a_run_whose_process_was_killed_is_taken_over_by_run_and_seen_by_watch(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, servers=("stats",))
    db = tmp_path / "t.db"
    common = ["--config", str(config), "--db", str(db)]
    plan_file = _plan_file(
        tmp_path,
        [
            {
                "id": "slow",
                "server": "stats",
                "tool": "running_total",
                "arguments": {"values": list(range(20)), "delay_s": 0.1},
            },
            {
                "id": "after",
                "server": "stats",
                "tool": "evaluate",
                "arguments": {"expression": "${slow.total} + 1"},
            },
        ],
    )
    async with _taskorch("run", str(plan_file), "--yes", *common) as first:
        plan_id = await _wait_for(db, lambda s: _running_plan(s, "slow"))
        os.killpg(first.pid, signal.SIGKILL)
        await first.wait()
    dead_pid = first.pid

    # `watch` says who owned the run and that it is gone, instead of waiting forever.
    watched = await anyio.to_thread.run_sync(
        lambda: run_cli("watch", plan_id, *common, env=clean_env(), timeout=60)
    )
    assert watched.returncode == 1, watched.stdout + watched.stderr
    said = " ".join((watched.stdout + watched.stderr).split())
    assert f"process {dead_pid}" in said
    assert "no longer running" in said
    assert f"taskorch run {plan_id}" in said

    # `run ID` takes the run over and finishes it, with progress.
    resumed = await anyio.to_thread.run_sync(
        lambda: run_cli("run", plan_id, *common, env=clean_env(), timeout=90)
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "taking the run over" in resumed.stdout
    assert "All 2 steps succeeded" in resumed.stdout
    async with await SqliteStore.open(db) as store:
        plan = await store.get_plan(plan_id)
        states = await store.get_step_states(plan_id, 1)
        leases = await store.list_leases()
    assert plan.status is PlanStatus.COMPLETED
    # `running_total` is read-only: the call in flight when the owner died ran again.
    assert states["slow"].attempts == 2
    assert states["after"].attempts == 1
    assert states["after"].output["value"] == sum(range(20)) + 1
    assert leases == []


async def _events(db: Path, plan_id: str) -> list[tuple[str, str | None]]:
    async with await SqliteStore.open(db) as store:
        return [(e.kind.value, e.step_id) for e in await store.get_events(plan_id)]


@pytest.mark.anyio
async def test_cancel_from_another_process_stops_the_owner_before_it_answers(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, servers=("text",), extra_servers={"tiny": TINY})
    db = tmp_path / "t.db"
    common = ["--config", str(config), "--db", str(db)]
    marker = tmp_path / "long.marker"
    plan_file = _plan_file(
        tmp_path,
        [
            # Far longer than this test may take: only a cancel ends it.
            {
                "id": "long",
                "server": "tiny",
                "tool": "sleep",
                "arguments": {"seconds": 3600, "marker": str(marker)},
            },
            {"id": "after", "server": "tiny", "tool": "echo", "arguments": {"text": "${long}"}},
        ],
    )
    async with _taskorch("run", str(plan_file), "--yes", *common) as owner:
        plan_id = await _wait_for(db, lambda s: _running_plan(s, "long"))

        # Another process does not start it twice: it says who runs it, and follows it.
        async with _taskorch("run", plan_id, *common) as again:
            assert again.stdout is not None
            followed = ""
            with anyio.fail_after(60):
                async for chunk in again.stdout:
                    followed += chunk.decode(errors="replace")
                    if "following it" in followed:
                        break
            cancelled = await anyio.to_thread.run_sync(
                lambda: run_cli("cancel", plan_id, *common, env=clean_env(), timeout=90)
            )
            assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
            assert "cancelled" in cancelled.stdout
            with anyio.fail_after(60):
                await again.wait()
            rest, _ = await _output(again)
        said = " ".join((followed + rest).split())
        assert f"process {owner.pid}" in said and "alive" in said and "following it" in said
        assert again.returncode == 1 and "cancelled" in said  # it ended with the run
        # By the time `cancel` answered, the owner itself had stopped the step in
        # flight and ended the run: its own events say so.
        events = await _events(db, plan_id)
        assert ("step_cancelled", "long") in events
        assert events[-1] == ("plan_finished", None)
        with anyio.fail_after(60):
            await owner.wait()
        out, err = await _output(owner)
    assert owner.returncode == 1, out + err  # the run ended cancelled, not on an error
    assert "cancelled" in out
    # The downstream server was told to stop the call (it would have run for an hour).
    with anyio.fail_after(30):
        while marker.read_text() != "cancelled":  # noqa: ASYNC110 - a file, not an event
            await anyio.sleep(0.05)
    async with await SqliteStore.open(db) as store:
        plan = await store.get_plan(plan_id)
        states = await store.get_step_states(plan_id, 1)
    assert plan.status is PlanStatus.CANCELLED
    assert states["long"].status.value == "cancelled"
    assert states["after"].status.value == "cancelled"


async def _status(db: Path, plan_id: str) -> PlanStatus:
    async with await SqliteStore.open(db) as store:
        return (await store.get_plan(plan_id)).status


def test_declining_at_the_prompt_leaves_the_plan_awaiting_and_rejection_is_told_one_way(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, servers=("text",))
    db = tmp_path / "t.db"
    common = ["--config", str(config), "--db", str(db)]
    steps = [{"id": "a", "server": "text", "tool": "slugify", "arguments": {"text": "A B"}}]
    plan_file = _plan_file(tmp_path, steps)
    declined = subprocess.run(
        [sys.executable, "-m", "server.cli", "run", str(plan_file), *common],
        cwd=ROOT,
        env=clean_env(),
        input="n\n",
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert declined.returncode == 1, declined.stdout + declined.stderr
    plan_id = declined.stdout.split("plan ", 1)[1].split()[0]
    said = " ".join(declined.stderr.split())
    assert "still awaits confirmation" in said
    assert f"`taskorch confirm {plan_id} --reject` rejects it" in said
    assert anyio.run(_status, db, plan_id) is PlanStatus.AWAITING_CONFIRMATION

    rejected = run_cli("confirm", plan_id, "--reject", *common, env=clean_env())
    assert rejected.returncode == 0, rejected.stderr
    assert "rejected" in rejected.stdout
    # The plan says what it now is, and whatever one tries next gets the same answer.
    assert "was rejected and never runs; create a new plan" in " ".join(rejected.stdout.split())
    for attempt in (("run", plan_id, "--yes"), ("confirm", plan_id)):
        answer = run_cli(*attempt, *common, env=clean_env())
        assert answer.returncode == 2, answer.stdout + answer.stderr
        text = " ".join(answer.stderr.split())
        assert "was rejected: a rejected plan never runs and cannot be approved again" in text
        assert "create a new plan to run it" in text
