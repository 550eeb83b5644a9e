"""Statistics from what real runs against fixture servers recorded: per tool, per server, per run.

Two engine fixture servers over stdio: `slow` (sleeps as long as asked) and
`flaky` (fails a set number of calls, and can crash). Every count is exact;
durations are checked against what the fixtures were asked to do (a call that
slept 300 ms took at least 300 ms) and against each other, never against a
wall-clock budget.
"""

from __future__ import annotations

import random
import sqlite3
import threading
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from executor.downstream import Pool
from executor.errors import UserError
from executor.ids import PlanId
from executor.plan import Plan, Step, utc_now
from executor.records import AttemptRecord, ServerEvent, ServerEventKind
from executor.run import ExecutionReport, Scheduler, SchedulerConfig
from executor.stats import analyse_run, collect_stats, parse_since, plan_analysis
from executor.status import PlanStatus, StepStatus
from executor.store import SqliteStore, Store, WriteBatch
from executor.store import schema as schema_module
from tests.executor.scheduler_support import StoreKind, engine_spec, open_store, save_confirmed
from tests.fixtures.helpers import HANG_GUARD_S

RETRY = {"initial_interval_s": 0.01, "maximum_interval_s": 0.02, "maximum_attempts": 3}


@dataclass
class Setup:
    store: Store
    pool: Pool
    scheduler: Scheduler

    async def run(
        self, plan_id: str, steps: Sequence[Mapping[str, Any]], **extra: Any
    ) -> ExecutionReport:
        await save_confirmed(self.store, plan_id, steps, **extra)
        run = await self.scheduler.start(plan_id)
        return await run.wait()


@asynccontextmanager
async def servers(tmp_path: Path, config: SchedulerConfig | None = None) -> AsyncIterator[Setup]:
    """A store, a pool over `slow` and `flaky` (both started) recording into it, a scheduler."""
    async with await SqliteStore.open(tmp_path / "stats.db") as store:
        specs = {"slow": engine_spec(), "flaky": engine_spec()}
        async with Pool(specs, on_server_event=store.record_server_event) as pool:
            catalog = await pool.catalog()
            assert ("flaky", "flaky") in catalog and ("slow", "sleep") in catalog
            async with Scheduler(store, pool, config, rng=random.Random(3)) as scheduler:
                yield Setup(store, pool, scheduler)


def sleep(step_id: str, ms: int, **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "server": "slow", "tool": "sleep", "arguments": {"ms": ms}, **extra}


def flaky(step_id: str, key: str, n: int, state: Path, **extra: Any) -> dict[str, Any]:
    arguments = {"key": key, "n": n, "state_dir": str(state)}
    return {"id": step_id, "server": "flaky", "tool": "flaky", "arguments": arguments, **extra}


@pytest.mark.anyio
async def test_get_stats_counts_what_plans_did_on_a_slow_and_a_flaky_server(
    tmp_path: Path,
) -> None:
    async with servers(tmp_path) as s:
        slow = await s.run("slowplan", [sleep("a", 50), sleep("b", 100), sleep("c", 300)])
        assert slow.status is PlanStatus.COMPLETED
        # Two failures then a success; then (after it) three failures: the step fails.
        flaky_plan = [
            flaky("f1", "one", 2, tmp_path, retry=RETRY),
            flaky("f2", "two", 5, tmp_path, retry=RETRY, depends_on=["f1"], on_error="continue"),
        ]
        assert (await s.run("flakyplan", flaky_plan)).status is PlanStatus.FAILED
        crash = {"id": "boom", "server": "flaky", "tool": "crash", "retry": {"maximum_attempts": 1}}
        crashed = await s.run("crashplan", [crash])
        assert crashed.steps[0].error is not None
        assert crashed.steps[0].error.kind.value == "tool_unavailable"
        echo = {"id": "e", "server": "flaky", "tool": "echo", "arguments": {"value": 1}}
        assert (await s.run("afterplan", [echo])).status is PlanStatus.COMPLETED
        crash_try = (await s.store.get_attempts("crashplan", 1))[0]
        echo_try = (await s.store.get_attempts("afterplan", 1))[0]
        stats = await collect_stats(s.store)

    tools = {(t.server, t.tool): t for t in stats.tools}
    assert set(tools) == {
        ("slow", "sleep"),
        ("flaky", "flaky"),
        ("flaky", "crash"),
        ("flaky", "echo"),
    }

    sleeps = tools[("slow", "sleep")]
    assert (sleeps.calls, sleeps.succeeded, sleeps.failed, sleeps.retries) == (3, 3, 0, 0)
    assert sleeps.failed_by_kind == {} and sleeps.last_failure is None
    assert sleeps.p50_s is not None and sleeps.p95_s is not None and sleeps.max_s is not None
    # Nearest rank over 3 calls: p50 is the 2nd fastest (the 100 ms sleep at the
    # earliest), p95 the 3rd, which is the slowest: the 300 ms one.
    assert 0.1 <= sleeps.p50_s <= sleeps.p95_s == sleeps.max_s
    assert sleeps.max_s >= 0.3

    flakies = tools[("flaky", "flaky")]
    assert (flakies.calls, flakies.succeeded, flakies.failed) == (6, 1, 5)
    assert flakies.retries == 4  # attempts 2 and 3 of f1 and of f2
    assert flakies.failed_by_kind == {"tool_error": 5}
    assert flakies.failure_rate == pytest.approx(5 / 6)
    last = flakies.last_failure
    assert last is not None and last.kind == "tool_error"
    assert (last.plan_id, last.step_id) == ("flakyplan", "f2")
    assert "flaky failure 3 of 5" in last.message

    crashes = tools[("flaky", "crash")]
    assert (crashes.calls, crashes.failed, crashes.failed_by_kind) == (
        1,
        1,
        {"tool_unavailable": 1},
    )
    assert crashes.p50_s is None and crashes.max_s is None
    assert tools[("flaky", "echo")].succeeded == 1

    # Least reliable first: crash (all failed), flaky; then the reliable ones, slowest
    # first (the echo's call includes restarting its server, so it may be the slower).
    order = [(t.server, t.tool) for t in stats.tools]
    assert order[:2] == [("flaky", "crash"), ("flaky", "flaky")]
    reliable = stats.tools[2:]
    assert {(t.server, t.tool) for t in reliable} == {("slow", "sleep"), ("flaky", "echo")}
    assert reliable[0].p95_s is not None and reliable[1].p95_s is not None
    assert reliable[0].p95_s >= reliable[1].p95_s

    by_server = {x.server: x for x in stats.servers}
    assert [x.server for x in stats.servers] == ["flaky", "slow"]
    flaky_server = by_server["flaky"]
    assert (flaky_server.calls, flaky_server.succeeded, flaky_server.failed) == (8, 2, 6)
    assert flaky_server.restarts == 1 and not flaky_server.down_now
    # Down from the crash (during its call) until the restart (before the echo ended).
    assert echo_try.finished_at is not None
    assert 0 < flaky_server.down_s <= (echo_try.finished_at - crash_try.started_at).total_seconds()
    # The reason as first noticed (the pipe closing, or the exit code), never stderr.
    reason = flaky_server.last_down_reason
    assert reason is not None and ("closed" in reason or "exited with code 3" in reason)
    assert "stderr" not in reason
    slow_server = by_server["slow"]
    assert (slow_server.calls, slow_server.failed, slow_server.restarts) == (3, 0, 0)
    assert slow_server.down_s == 0 and slow_server.last_down_at is None


@pytest.mark.anyio
async def test_filters_narrow_the_figures_to_a_server_a_tool_and_a_window(tmp_path: Path) -> None:
    async with servers(tmp_path) as s:
        await s.run("old", [sleep("a", 1), flaky("f", "k", 1, tmp_path, retry=RETRY)])
        between = utc_now()
        await s.run("new", [sleep("a", 1), sleep("b", 1)])
        only_slow = await collect_stats(s.store, server="slow")
        only_flaky_tool = await collect_stats(s.store, tool="flaky")
        recent = await collect_stats(s.store, since=between)

    assert [(t.server, t.tool, t.calls) for t in only_slow.tools] == [("slow", "sleep", 3)]
    assert [x.server for x in only_slow.servers] == ["slow"]
    assert [(t.server, t.tool, t.calls, t.retries) for t in only_flaky_tool.tools] == [
        ("flaky", "flaky", 2, 1)
    ]
    assert [x.server for x in only_flaky_tool.servers] == ["flaky"]
    assert [(t.tool, t.calls) for t in recent.tools] == [("sleep", 2)]
    assert recent.since == between


def test_since_reads_durations_and_times_and_says_what_it_takes() -> None:
    now = utc_now()
    assert parse_since("1d", now=now) == now - timedelta(days=1)
    assert parse_since("30m", now=now) == now - timedelta(minutes=30)
    assert parse_since("2W", now=now) == now - timedelta(weeks=2)
    assert parse_since("1.5h", now=now) == now - timedelta(minutes=90)
    assert parse_since("2025-01-31T12:00Z").isoformat() == "2025-01-31T12:00:00+00:00"
    assert parse_since("2025-01-31").isoformat() == "2025-01-31T00:00:00+00:00"
    for bad, words in (
        ("yesterday", "a duration back from now"),
        ("0d", "positive"),
        ("-1d", "a duration back from now"),
        ("99999999999w", "too far"),
    ):
        with pytest.raises(UserError, match=words):
            parse_since(bad, now=now)


@pytest.mark.anyio
async def test_a_run_shows_its_critical_path_and_time_waiting_for_a_slot(tmp_path: Path) -> None:
    # One step at a time: `a` then `b` (a chain), and `c` (independent) waits for both.
    config = SchedulerConfig(max_parallel_steps=1)
    steps = [sleep("a", 200), sleep("b", 100, depends_on=["a"]), sleep("c", 50)]
    async with servers(tmp_path, config) as s:
        report = await s.run("limited", steps)
        plan = await s.store.get_plan("limited")
        timing = await plan_analysis(s.store, plan)
        attempts = {a.step_id: a for a in await s.store.get_attempts("limited", 1)}

    assert report.status is PlanStatus.COMPLETED
    assert timing is not None
    assert (timing.steps_run, timing.attempts, timing.retries) == (3, 3, 0)
    # The longest chain by height runs first; `c` ends last, so the path is `c` alone,
    # and `c` spent its time waiting for the one slot.
    assert [x.id for x in timing.critical_path] == ["c"]
    (c,) = timing.critical_path
    assert c.ready_at == timing.started_at
    b_end = attempts["b"].finished_at
    assert b_end is not None and c.started_at >= b_end
    assert c.waiting_s >= (b_end - timing.started_at).total_seconds() >= 0.3
    assert c.running_s >= 0.05 and c.retry_s == 0
    assert c.waiting_s + c.retry_s + c.running_s == pytest.approx(c.span_s, abs=1e-5)
    assert 0 < c.share <= 1
    assert timing.waiting_s >= c.waiting_s
    assert timing.running_s >= 0.2 + 0.1 + 0.05
    assert timing.critical_path_steps == 1 and timing.critical_path_omitted == 0
    assert timing.critical_path_s <= timing.duration_s


@pytest.mark.anyio
async def test_retries_and_their_cost_are_on_the_critical_path(tmp_path: Path) -> None:
    retry = {**RETRY, "initial_interval_s": 0.2, "maximum_interval_s": 0.2, "jitter": 0}
    steps = [
        flaky("f", "once", 1, tmp_path, retry=retry),
        sleep("after", 100, depends_on=["f"]),
        sleep("aside", 1),
    ]
    async with servers(tmp_path) as s:
        await s.run("retried", steps)
        timing = await plan_analysis(s.store, await s.store.get_plan("retried"))

    assert timing is not None
    assert (timing.attempts, timing.retries) == (4, 1)
    assert [x.id for x in timing.critical_path] == ["f", "after"]
    f, after = timing.critical_path
    assert f.attempts == 2 and f.retry_s >= 0.2  # the backoff, at the least
    assert after.ready_at == f.finished_at and after.retry_s == 0
    assert timing.critical_retry_s == pytest.approx(f.retry_s, abs=1e-5)
    assert timing.retry_s == pytest.approx(f.retry_s, abs=1e-5)
    for step in (f, after):
        assert step.waiting_s + step.retry_s + step.running_s == pytest.approx(
            step.span_s, abs=1e-5
        )
    assert f.share + after.share <= 1


def test_a_long_critical_path_is_listed_within_bounds() -> None:
    start = utc_now()
    n = 50
    plan = Plan(
        id=PlanId("chain"),
        query="q",
        steps=tuple(
            Step(id=f"s{i}", server="x", tool="t", depends_on=[f"s{i - 1}"] if i else [])
            for i in range(n)
        ),
    )
    attempts = []
    at = start
    for i in range(n):
        took = timedelta(milliseconds=10 + i)  # later steps are longer
        attempts.append(
            AttemptRecord(
                plan_id=plan.id,
                version=1,
                step_id=f"s{i}",
                attempt=1,
                started_at=at,
                finished_at=at + took,
                status=StepStatus.SUCCEEDED,
                call_s=took.total_seconds(),
            )
        )
        at += took
    timing = analyse_run(plan, {}, attempts, started_at=start, finished_at=at, shown=5)
    assert timing.critical_path_steps == n and timing.critical_path_omitted == n - 5
    # The five longest, in path order.
    assert [x.id for x in timing.critical_path] == [f"s{i}" for i in range(n - 5, n)]
    assert timing.critical_path_s == pytest.approx((at - start).total_seconds())
    assert timing.waiting_s == 0 and timing.retry_s == 0


@pytest.mark.anyio
async def test_down_time_is_clipped_counted_once_and_ended_by_any_up(
    tmp_path: Path, store_kind: StoreKind
) -> None:
    t0 = utc_now() - timedelta(hours=3)

    def event(
        kind: ServerEventKind, minutes: int, owner: str = "p1", server: str = "s", **extra: Any
    ) -> ServerEvent:
        return ServerEvent(
            owner=owner, server=server, kind=kind, at=t0 + timedelta(minutes=minutes), **extra
        )

    events = [
        event(ServerEventKind.UP, 0),
        event(ServerEventKind.DOWN, 10, reason="first"),
        event(ServerEventKind.UP, 40, restart=True),  # 30 min down
        event(ServerEventKind.DOWN, 100, reason="second"),
        event(ServerEventKind.CLOSED, 110),  # 10 min down
        # Another process saw it too, and still sees it down.
        event(ServerEventKind.UP, 150, owner="p2"),
        event(ServerEventKind.DOWN, 170, owner="p2", reason="third"),
        # Server `t`: p3 saw it go down and was killed before it saw more; p4 saw it
        # down too (overlapping: counted once), then up: that ends p3's stretch too.
        event(ServerEventKind.DOWN, 0, owner="p3", server="t"),
        event(ServerEventKind.DOWN, 5, owner="p4", server="t"),
        event(ServerEventKind.UP, 20, owner="p4", server="t"),
    ]
    async with open_store(tmp_path, store_kind) as store:
        for e in events:
            await store.record_server_event(e)
        now = t0 + timedelta(minutes=180)
        everything = await collect_stats(store, now=now)
        window = await collect_stats(store, since=t0 + timedelta(minutes=30), now=now)
        later = await collect_stats(store, since=t0 + timedelta(minutes=105), now=now)

    s, t = sorted(everything.servers, key=lambda x: x.server)
    assert (t.server, t.restarts, t.down_now) == ("t", 0, False)
    assert t.down_s == pytest.approx(20 * 60)
    assert (s.restarts, s.down_now) == (1, True)
    assert s.down_s == pytest.approx((30 + 10 + 10) * 60)
    assert s.last_down_reason == "third"
    w = next(x for x in window.servers if x.server == "s")
    assert w.restarts == 1 and w.down_s == pytest.approx((10 + 10 + 10) * 60)
    late = next(x for x in later.servers if x.server == "s")
    assert late.restarts == 0 and late.down_s == pytest.approx((5 + 10) * 60)
    assert late.last_down_reason == "third"


def _attempt(step: str, n: int, status: StepStatus, **extra: Any) -> AttemptRecord:
    start = utc_now() - timedelta(minutes=5)
    return AttemptRecord(
        plan_id=PlanId("p"),
        version=1,
        step_id=step,
        attempt=n,
        started_at=start,
        finished_at=start + timedelta(seconds=1),
        status=status,
        **extra,
    )


@pytest.mark.anyio
async def test_percentiles_are_the_nearest_ranks_of_the_successful_calls(
    tmp_path: Path, store_kind: StoreKind
) -> None:
    # Tool `t` on server `x`: 20 successes of 1..20 s given in a shuffled order, and
    # 7 failures (no duration); tool `one`: a single success.
    steps = [Step(id=f"s{i}", server="x", tool="t") for i in range(27)]
    steps.append(Step(id="solo", server="x", tool="one"))
    plan = Plan(id=PlanId("p"), query="q", steps=tuple(steps))
    seconds = list(range(1, 21))
    random.Random(5).shuffle(seconds)
    batch = [
        _attempt(f"s{i}", 1, StepStatus.SUCCEEDED, call_s=float(sec))
        for i, sec in enumerate(seconds)
    ]
    batch += [
        _attempt(f"s{i}", 1, StepStatus.FAILED, error={"kind": "timeout", "message": "slow"})
        for i in range(20, 27)
    ]
    batch.append(_attempt("solo", 1, StepStatus.SUCCEEDED, call_s=0.5))
    async with open_store(tmp_path, store_kind) as store:
        await store.save_plan(plan)
        await store.write(WriteBatch(attempts=batch))
        stats = {t.tool: t for t in await store.tool_call_stats()}
    t = stats["t"]
    assert (t.calls, t.succeeded, t.failed, t.failed_by_kind) == (27, 20, 7, {"timeout": 7})
    assert (t.p50_s, t.p95_s, t.max_s) == (10.0, 19.0, 20.0)  # ranks ceil(.5*20), ceil(.95*20)
    one = stats["one"]
    assert (one.calls, one.p50_s, one.p95_s, one.max_s) == (1, 0.5, 0.5, 0.5)


@pytest.mark.anyio
async def test_a_file_from_before_statistics_migrates_and_its_attempts_still_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "old.db"
    with monkeypatch.context() as old:
        # The schema just before statistics (migration 8) came.
        old.setattr(schema_module, "MIGRATIONS", schema_module.MIGRATIONS[:7])
        old.setattr(schema_module, "SCHEMA_VERSION", 7)
        async with await SqliteStore.open(path) as store:
            # No steps: today's code writes step states in today's columns.
            await store.save_plan(Plan(id=PlanId("p"), query="q", steps=()))
    # A step and its attempt as a taskorch of schema 7 wrote them: no call time, a
    # 250 ms span.
    with sqlite3.connect(path) as raw:
        raw.execute(
            "INSERT INTO steps (plan_id, version, step_id, position, server, tool, content)"
            " VALUES ('p', 1, 's0', 0, 'x', 't', '{}')"
        )
        raw.execute(
            "INSERT INTO attempts (plan_id, version, step_id, attempt, status, started_at,"
            " finished_at, error) VALUES ('p', 1, 's0', 1, 'succeeded',"
            " '2025-03-01T12:00:00.000000+00:00', '2025-03-01T12:00:00.250000+00:00', NULL)"
        )
    raw.close()
    async with await SqliteStore.open(path) as store:
        (t,) = await store.tool_call_stats()
        (attempt,) = await store.get_attempts("p", 1)
    assert attempt.call_s is None
    assert (t.calls, t.succeeded) == (1, 1)
    assert t.p50_s == pytest.approx(0.25, abs=2e-3)  # julianday keeps milliseconds


@pytest.mark.anyio
async def test_a_long_statistics_read_never_holds_up_a_run_s_writes(tmp_path: Path) -> None:
    plan = Plan(id=PlanId("p"), query="q", steps=(Step(id="s0", server="x", tool="t"),))
    reading = threading.Event()
    release = threading.Event()

    def long_read(conn: sqlite3.Connection) -> int:
        # Stands for a sort over many attempts: holds its connection until released.
        count = int(conn.execute("SELECT count(*) FROM attempts").fetchone()[0])
        reading.set()
        release.wait(HANG_GUARD_S)
        return count

    async with await SqliteStore.open(tmp_path / "t.db") as store:
        await store.save_plan(plan)
        async with anyio.create_task_group() as tg:
            results: list[int] = []

            async def read() -> None:
                results.append(await store._read_apart(long_read))

            tg.start_soon(read)
            await anyio.to_thread.run_sync(reading.wait, HANG_GUARD_S)
            with anyio.fail_after(HANG_GUARD_S):  # a hang guard: the write must not wait
                await store.write(WriteBatch(attempts=[_attempt("s0", 1, StepStatus.RUNNING)]))
                assert len(await store.get_attempts("p", 1)) == 1
            assert not results  # the read is still going on
            release.set()
        assert results == [0]  # what it counted before the write
