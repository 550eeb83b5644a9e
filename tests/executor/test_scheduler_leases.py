"""Runs owned by lease: engines sharing one database (as processes would) never run a plan twice."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from collections.abc import Collection
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest

from executor.calls import ProgressFn
from executor.errors import StoreError, UserError
from executor.plan import utc_now
from executor.run import FollowedRun, Run, Scheduler, SchedulerConfig
from executor.run.leases import machine_id
from executor.status import PlanStatus, StepStatus
from executor.store import RunKey, RunLease, SqliteStore, Store
from tests.executor.memory_store import MemoryStore
from tests.executor.scheduler_support import (
    InProcessCaller,
    confirmed,
    noop_tool,
    save_confirmed,
    wait_until,
)

pytestmark = pytest.mark.anyio

OTHER_HOST = "some-other-host"


def chain(tag: str, length: int = 3) -> list[dict[str, Any]]:
    """`length` steps in a chain, each call tagged `<tag>/<step>`."""
    return [
        {
            "id": f"s{i}",
            "server": "mem",
            "tool": "work",
            "arguments": {"tag": f"{tag}/s{i}"},
            "depends_on": [f"s{i - 1}"] if i else [],
        }
        for i in range(length)
    ]


def counting_caller() -> InProcessCaller:
    return InProcessCaller({("mem", "work"): noop_tool})


async def leave_executing(store: Store, plan_id: str, *, version: int = 1) -> None:
    """A confirmed plan version set `executing` with no owner (as a pre-lease row, or a
    process that stopped before writing anything more)."""
    plan = confirmed(plan_id, chain(f"{plan_id}@{version}"), version=version)
    await store.save_plan(plan)
    await store.update_plan_status(plan_id, version, PlanStatus.EXECUTING)


def dead_local_owner() -> str:
    """The owner id a scheduler in a process on this machine that has since ended had."""
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.2)"]) as child:
        started = f"{psutil.Process(child.pid).create_time():.3f}"
        child.wait()
    return f"{machine_id()}|{child.pid}|{started}|deadbeef"


def live_local_owner() -> str:
    """The owner id of a scheduler in a live process of this machine (our parent)."""
    parent = psutil.Process().parent()
    assert parent is not None
    return f"{machine_id()}|{parent.pid}|{parent.create_time():.3f}|cafe"


async def test_two_engines_resuming_at_once_take_each_plan_exactly_once(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    plans = [f"p{i}" for i in range(8)]
    async with await SqliteStore.open(db) as setup:
        for plan_id in plans:
            await leave_executing(setup, plan_id)
        # An older version left executing under a newer, merely confirmed one: found too.
        await leave_executing(setup, "old", version=1)
        await save_confirmed(setup, "old", chain("old@2"), version=2)
    callers = [counting_caller(), counting_caller()]
    resumed: list[list[Run]] = [[], []]
    async with (
        await SqliteStore.open(db) as store_a,
        await SqliteStore.open(db) as store_b,
        Scheduler(store_a, callers[0]) as engine_a,
        Scheduler(store_b, callers[1]) as engine_b,
    ):

        async def resume(index: int, engine: Scheduler) -> None:
            resumed[index] = await engine.resume()

        async with anyio.create_task_group() as tg:
            tg.start_soon(resume, 0, engine_a)
            tg.start_soon(resume, 1, engine_b)
        reports = [await run.wait() for runs in resumed for run in runs]
        final = {p: (await store_a.get_plan(p)).status for p in plans}
        old_v1 = await store_a.get_plan("old", 1)
        old_v2 = await store_a.get_plan("old", 2)

    taken = [{(r.plan_id, r.version) for r in runs} for runs in resumed]
    assert not taken[0] & taken[1], "a plan was resumed by both engines"
    assert taken[0] | taken[1] == {*((p, 1) for p in plans), ("old", 1)}
    assert all(r.status is PlanStatus.COMPLETED for r in reports)
    assert set(final.values()) == {PlanStatus.COMPLETED}
    assert old_v1.status is PlanStatus.COMPLETED
    assert old_v2.status is PlanStatus.CONFIRMED
    # Every step of every plan called exactly once, by one engine or the other.
    calls = Counter(tag for c in callers for tag, _ in c.log.started)
    expected = {f"{p}@1/s{i}" for p in [*plans, "old"] for i in range(3)}
    assert set(calls) == expected
    assert set(calls.values()) == {1}


async def test_a_fresh_lease_is_left_alone_and_an_expired_or_dead_one_is_taken(
    tmp_path: Path,
) -> None:
    async with await SqliteStore.open(tmp_path / "db") as store:
        # Each plan claimed for a pretend owner, as its process would have.
        claims = {
            "remote_fresh": RunLease(f"{OTHER_HOST}|1|0.000|a", 3600.0),
            "local_live": RunLease(live_local_owner(), 3600.0),
            "remote_expired": RunLease(f"{OTHER_HOST}|2|0.000|b", 0.05),
            "local_dead": RunLease(dead_local_owner(), 3600.0),
        }
        for plan_id, lease in claims.items():
            await leave_executing(store, plan_id)
            got = await store.claim_runs(lease)
            assert got == [(plan_id, 1)], (plan_id, got)
        leases = {str(lease.plan_id): lease for lease in await store.list_leases()}
        expiry = leases["remote_expired"].until
        assert expiry is not None
        # Wait (a hang guard, not a timing claim) until the short lease has expired.
        with anyio.fail_after(10):
            while utc_now() <= expiry:  # noqa: ASYNC110 - waiting on the clock, not an event
                await anyio.sleep(0.02)

        caller = counting_caller()
        async with Scheduler(store, caller) as engine:
            runs = await engine.resume()
            reports = {r.plan_id: await r.wait() for r in runs}
            again = await engine.resume()
        leases = {str(lease.plan_id): lease for lease in await store.list_leases()}

    assert set(reports) == {"remote_expired", "local_dead"}
    assert {r.status for r in reports.values()} == {PlanStatus.COMPLETED}
    assert again == []
    started = {tag.split("@")[0] for tag, _ in caller.log.started}
    assert started == {"remote_expired", "local_dead"}
    # The fresh ones are untouched: still executing, still their owners'.
    assert set(leases) == {"remote_fresh", "local_live"}
    assert leases["remote_fresh"].owner == claims["remote_fresh"].owner
    assert leases["local_live"].owner == claims["local_live"].owner


async def test_a_run_whose_lease_is_taken_over_stops_and_cancels_its_calls(
    tmp_path: Path,
) -> None:
    cancelled = anyio.Event()

    async def block(arguments: dict[str, Any], on_progress: ProgressFn | None) -> Any:
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()

    caller = InProcessCaller({("mem", "work"): block})
    async with await SqliteStore.open(tmp_path / "db") as store:
        await save_confirmed(store, "p", chain("p"))
        config = SchedulerConfig(lease_s=0.3)
        async with Scheduler(store, caller, config) as engine:
            run = await engine.start("p")
            [lease] = await store.list_leases()
            assert lease.owner == engine.lease.owner
            await wait_until(lambda: caller.log.in_flight == 1)
            # Another process takes the run over (as if this one's lease had expired).
            thief = RunLease(f"{OTHER_HOST}|3|0.000|c", 3600.0)
            assert await store.release_leases(engine.lease.owner) == 1
            assert await store.claim_runs(thief) == [("p", 1)]
            with anyio.fail_after(30), pytest.raises(UserError, match="took it over"):
                await run.wait()
            assert cancelled.is_set()
            assert engine.active() == []
        [lease] = await store.list_leases()
        states = await store.get_step_states("p", 1)

    assert lease.owner == thief.owner  # the loser wrote nothing more, released nothing
    assert [tag for tag, _ in caller.log.started] == ["p/s0"]
    assert states["s0"].status is StepStatus.RUNNING
    assert states["s1"].status is StepStatus.PENDING


class CutOff(MemoryStore):
    """A store whose lease renewals stop going through, as when the database is out of reach."""

    cut = False

    async def renew_leases(
        self, lease: RunLease, runs: Collection[tuple[str, int]] | None = None
    ) -> set[RunKey]:
        if self.cut:
            raise StoreError("the database cannot be reached")
        return await super().renew_leases(lease, runs)


async def test_a_process_that_cannot_renew_stops_its_runs_before_the_lease_lapses() -> None:
    cancelled = anyio.Event()

    async def block(arguments: dict[str, Any], on_progress: ProgressFn | None) -> Any:
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()

    caller = InProcessCaller({("mem", "work"): block})
    store = CutOff()
    await save_confirmed(store, "p", chain("p"))
    async with Scheduler(store, caller, SchedulerConfig(lease_s=0.6)) as engine:
        run = await engine.start("p")
        await wait_until(lambda: caller.log.in_flight == 1)
        store.cut = True
        with anyio.fail_after(30), pytest.raises(UserError, match="lease on it is gone"):
            await run.wait()
        # Stopped, its call cancelled, and let go (where the store still takes that).
        assert cancelled.is_set() and engine.active() == []
        [lease] = await store.list_leases()
        assert lease.owner is None
    assert [tag for tag, _ in caller.log.started] == ["p/s0"]


async def test_a_run_holds_its_lease_while_it_runs_and_frees_it_when_it_ends(
    tmp_path: Path,
) -> None:
    release = anyio.Event()

    async def gated(arguments: dict[str, Any], on_progress: ProgressFn | None) -> Any:
        await release.wait()
        return {}

    db = tmp_path / "db"
    # Renewed every second; long enough that no stall of a loaded machine lets it lapse.
    config = SchedulerConfig(lease_s=3.0)
    async with (
        await SqliteStore.open(db) as store_a,
        await SqliteStore.open(db) as store_b,
        Scheduler(store_a, InProcessCaller({("mem", "work"): gated}), config) as engine_a,
        Scheduler(store_b, counting_caller(), config) as engine_b,
    ):
        await save_confirmed(store_a, "p", chain("p", 1))
        run = await engine_a.start("p")
        first = (await store_a.list_leases())[0].until
        assert first is not None
        # Renewed while the step runs (no write of the run's own in between) ...
        with anyio.fail_after(30):
            while (await store_a.list_leases())[0].until == first:  # noqa: ASYNC110 - on the DB
                await anyio.sleep(0.05)
        # ... so the other engine, resuming now, does not take it.
        assert await engine_b.resume() == []
        release.set()
        report = await run.wait()
        leases = await store_b.list_leases()

    assert report.status is PlanStatus.COMPLETED
    assert leases == []  # not executing any more: no lease


async def test_leaving_the_scheduler_frees_its_leases_for_an_immediate_resume(
    tmp_path: Path,
) -> None:
    async def block(arguments: dict[str, Any], on_progress: ProgressFn | None) -> Any:
        await anyio.sleep_forever()

    db = tmp_path / "db"
    async with await SqliteStore.open(db) as store:
        await save_confirmed(store, "p", chain("p", 2))
        blocking = InProcessCaller({("mem", "work"): block})
        async with Scheduler(store, blocking) as engine:
            await engine.start("p")
            await wait_until(lambda: blocking.log.in_flight == 1)
        [lease] = await store.list_leases()
        assert lease.owner is None
        caller = counting_caller()
        async with Scheduler(store, caller) as engine:
            [run] = await engine.resume()
            report = await run.wait()

    # s0 was in flight and its tool is not known to be safe: it awaits a decision.
    assert report.status is PlanStatus.INTERRUPTED
    assert report.needs_decision == ("s0",)


async def test_start_takes_over_a_run_whose_owner_is_gone_and_follows_a_live_one(
    tmp_path: Path,
) -> None:
    async with await SqliteStore.open(tmp_path / "db") as store:
        claims = {
            "dead": RunLease(dead_local_owner(), 3600.0),
            "lapsed": RunLease(f"{OTHER_HOST}|2|0.000|b", 0.05),
            "live": RunLease(live_local_owner(), 3600.0),
        }
        for plan_id, lease in claims.items():
            await leave_executing(store, plan_id)
            assert await store.claim_runs(lease, runs=[(plan_id, 1)]) == [(plan_id, 1)]
        lapsed = await store.get_lease("lapsed", 1)
        assert lapsed is not None and lapsed.until is not None
        with anyio.fail_after(10):  # a hang guard: wait for the short lease to lapse
            while utc_now() <= lapsed.until:  # noqa: ASYNC110 - waiting on the clock
                await anyio.sleep(0.02)

        caller = counting_caller()
        async with Scheduler(store, caller) as engine:
            dead_owner = await engine.owner("dead")
            assert dead_owner is not None and dead_owner.alive is False
            assert "no longer running" in dead_owner.describe()
            reports = {p: await (await engine.start(p)).wait() for p in ("dead", "lapsed")}
            live = await engine.owner("live")
            assert live is not None and live.holds and live.alive
            parent = psutil.Process().parent()
            assert parent is not None
            # A live owner's run is followed, never started a second time.
            followed = await engine.start("live")
            assert isinstance(followed, FollowedRun) and not followed.done
            assert re.search(
                f"process {parent.pid} on .* is alive", followed.report().message or ""
            )
        [left] = await store.list_leases()

    assert {p: r.status for p, r in reports.items()} == dict.fromkeys(
        ("dead", "lapsed"), PlanStatus.COMPLETED
    )
    assert (left.plan_id, left.owner) == ("live", claims["live"].owner)  # left alone
    started = sorted(tag for tag, _ in caller.log.started)
    assert started == [f"{p}@1/s{i}" for p in ("dead", "lapsed") for i in range(3)]


async def test_start_after_a_takeover_applies_the_decision_an_interrupted_run_needs(
    tmp_path: Path,
) -> None:
    async def block(arguments: dict[str, Any], on_progress: ProgressFn | None) -> Any:
        await anyio.sleep_forever()

    db = tmp_path / "db"
    async with await SqliteStore.open(db) as store:
        await save_confirmed(store, "p", chain("p", 2))
        blocking = InProcessCaller({("mem", "work"): block})
        async with Scheduler(store, blocking) as first:
            await first.start("p")
            await wait_until(lambda: blocking.log.in_flight == 1)
        # `first` let go of the run with a call in flight of a tool not known to be safe.
        caller = counting_caller()
        async with Scheduler(store, caller) as engine:
            waiting = await (await engine.start("p")).wait()
            assert waiting.status is PlanStatus.INTERRUPTED
            assert waiting.needs_decision == ("s0",)
            report = await (await engine.start("p", on_interrupted="rerun")).wait()

    assert report.status is PlanStatus.COMPLETED
    assert [tag for tag, _ in caller.log.started] == ["p/s0", "p/s1"]


async def test_a_cancel_the_owner_has_not_acted_on_yet_says_so_and_stands(
    tmp_path: Path,
) -> None:
    async with await SqliteStore.open(tmp_path / "db") as store:
        # A live process holds the run but does not act on requests (stuck, say).
        stuck = RunLease(live_local_owner(), 3600.0)
        await leave_executing(store, "p")
        await store.claim_runs(stuck)
        caller = counting_caller()
        async with Scheduler(store, caller) as other:
            pending = await other.cancel("p", wait_s=0.1)
        assert pending.status is PlanStatus.EXECUTING
        assert pending.message is not None
        assert pending.message.startswith("cancel requested, not done yet: process ")
        assert "is alive" in pending.message

        # The request stands: whoever takes the run over next obeys it, calling nothing.
        await store.release_leases(stuck.owner)
        async with Scheduler(store, caller) as taker:
            [run] = await taker.resume()
            report = await run.wait()
        leases = await store.list_leases()

    assert report.status is PlanStatus.CANCELLED
    assert caller.log.started == []
    assert leases == []


async def test_renewal_covers_only_the_runs_named(tmp_path: Path) -> None:
    async with await SqliteStore.open(tmp_path / "db") as store:
        lease = RunLease(f"{OTHER_HOST}|4|0.000|d", 3600.0)
        for plan_id in ("kept", "dropped"):
            await leave_executing(store, plan_id)
        await store.claim_runs(lease)
        before = {str(i.plan_id): i.until for i in await store.list_leases()}
        until = before["kept"]
        assert until is not None
        # A hang guard: let the clock move past the claim, so that a renewal shows.
        with anyio.fail_after(10):
            while utc_now() <= until - timedelta(seconds=lease.lease_s):  # noqa: ASYNC110
                await anyio.sleep(0.01)
        held = await store.renew_leases(lease, [("kept", 1), ("unknown", 1)])
        after = {str(i.plan_id): i.until for i in await store.list_leases()}

    assert held == {("kept", 1)}
    assert after["dropped"] == before["dropped"]
    assert after["kept"] is not None and before["kept"] is not None
    assert after["kept"] > before["kept"]


async def test_cancel_requests_are_seen_from_any_connection_and_end_with_the_run(
    tmp_path: Path,
) -> None:
    db = tmp_path / "db"
    async with await SqliteStore.open(db) as owner, await SqliteStore.open(db) as other:
        for plan_id in ("a", "b"):
            await leave_executing(owner, plan_id)
        await save_confirmed(owner, "idle", chain("idle"))
        assert not await other.request_cancel("idle", 1)  # not executing: nothing to ask

        async def first_request(*runs: tuple[str, int]) -> set[tuple[str, int]]:
            with anyio.fail_after(30):  # a hang guard
                found = await owner.wait_cancel_requests(runs, poll_s=0.01)
            return {(str(p), v) for p, v in found}

        async def asked_while_watching(asker: Store, plan_id: str) -> set[tuple[str, int]]:
            results: list[set[tuple[str, int]]] = []

            async def watch() -> None:
                results.append(await first_request((plan_id, 1)))

            async with anyio.create_task_group() as tg:
                tg.start_soon(watch)
                await anyio.sleep(0.05)  # most likely the watcher looks once before the ask
                assert await asker.request_cancel(plan_id, 1)
            return results[0]

        assert await asked_while_watching(other, "b") == {("b", 1)}
        # Asked on the watching connection itself, whose data_version does not move.
        assert await asked_while_watching(owner, "a") == {("a", 1)}
        assert await first_request(("a", 1), ("b", 1)) == {("a", 1), ("b", 1)}
        lease = await owner.get_lease("a", 1)
        assert lease is not None and lease.cancel_requested_at is not None
        # Any status change ends the request with the run it was about.
        await owner.update_plan_status("a", 1, PlanStatus.CANCELLED)
        assert await owner.get_lease("a", 1) is None
        assert await first_request(("a", 1), ("b", 1)) == {("b", 1)}
