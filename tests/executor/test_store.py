"""The stores: round trips, atomicity and concurrency on every backend; SQLite's files.

Tests that take `store` (or `opener`) speak the `Store` protocol only and run on
each backend: SQLite, and PostgreSQL on the session's server. The rest are
SQLite's own (its files, migrations and worker thread); PostgreSQL's own are in
`test_store_postgres.py`.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import statistics
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import pytest

from executor.calls import ToolResult
from executor.errors import (
    ConfigError,
    CorruptDatabaseError,
    ErrorKind,
    InternalError,
    NotFoundError,
    SchemaTooNewError,
    StoreError,
    TransitionError,
    UserError,
)
from executor.ids import PlanId
from executor.outputs import summarize
from executor.plan import OnError, Plan, RetryPolicy, Step, StepError
from executor.policy import AgentConfig, AgentLimits, AutoApprove, ToolPolicy
from executor.records import AttemptRecord, Event, EventKind, PlannerAttempt, StepState
from executor.status import PlanStatus, SkipReason, StepStatus
from executor.store import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    ExpectedPlanStatus,
    Migration,
    OpenStore,
    PlanStatusChange,
    RunLease,
    SqliteStore,
    Store,
    WriteBatch,
    codecs,
    results,
)
from executor.store import schema as schema_module
from tests.executor.store_backends import BACKENDS, Backend, Opener, opener_for, raw_sql

pytestmark = pytest.mark.anyio

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


# --- helpers ---------------------------------------------------------------------------


def make_plan(
    plan_id: str = "p1",
    *,
    version: int = 1,
    steps: int = 3,
    session_id: str | None = None,
    created_at: datetime = T0,
    status: PlanStatus = PlanStatus.DRAFT,
) -> Plan:
    made = [
        Step(
            id=f"s{i}",
            server="srv",
            tool=f"tool{i % 2}",
            arguments={"n": i, "text": f"from ${{s{i - 1}.value}}"} if i else {"n": 0},
            description=f"step {i}",
        )
        for i in range(steps)
    ]
    return Plan(
        id=PlanId(plan_id),
        version=version,
        query=f"query of {plan_id} v{version}",
        steps=tuple(made),
        session_id=session_id,
        created_at=created_at,
        status=status,
    )


def state(plan: Plan, step_id: str, status: StepStatus, **kwargs: Any) -> StepState:
    return StepState(
        plan_id=plan.id, version=plan.version, step_id=step_id, status=status, **kwargs
    )


def event(plan_id: str, kind: EventKind, **data: Any) -> Event:
    return Event(plan_id=PlanId(plan_id), kind=kind, data=data)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Backend:
    kind: Backend = request.param
    return kind


@pytest.fixture
def opener(backend: Backend, request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens a store on the test's one database (call it again for another store on it)."""
    return opener_for(backend, request, tmp_path)


@pytest.fixture
async def store(opener: Opener) -> AsyncIterator[OpenStore]:
    async with await opener() as opened:
        yield opened


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with await SqliteStore.open(tmp_path / "taskorch.db") as opened:
        yield opened


def stored_planner_attempts(store: Store, plan_id: str) -> list[PlannerAttempt]:
    """A plan's planning-model calls as the database holds them, oldest first."""
    rows = raw_sql(
        store,
        "SELECT plan_id, attempt, model, prompt_tokens, completion_tokens, latency_s, errors, at"
        " FROM planner_attempts WHERE plan_id = ? ORDER BY id",
        (plan_id,),
    )
    return [
        PlannerAttempt(
            plan_id=PlanId(r[0]),
            attempt=r[1],
            model=r[2],
            prompt_tokens=r[3],
            completion_tokens=r[4],
            latency_s=r[5],
            errors=tuple(json.loads(r[6])),
            at=codecs.parse_ts(r[7]),
        )
        for r in rows
    ]


def add_failing_trigger(store: Store, table: str, message: str) -> None:
    """Make every insert into `table` fail inside the database, with `message`."""
    if isinstance(store, SqliteStore):
        raw_sql(
            store,
            f"CREATE TRIGGER fail_{table} BEFORE INSERT ON {table}"
            f" BEGIN SELECT RAISE(ABORT, '{message}'); END;",
        )
        return
    raw_sql(
        store,
        f"CREATE FUNCTION fail_{table}() RETURNS trigger LANGUAGE plpgsql AS"
        f" $$BEGIN RAISE EXCEPTION '{message}'; END$$",
    )
    raw_sql(
        store,
        f"CREATE TRIGGER fail_{table} BEFORE INSERT ON {table}"
        f" FOR EACH ROW EXECUTE FUNCTION fail_{table}()",
    )


def drop_failing_trigger(store: Store, table: str) -> None:
    on = "" if isinstance(store, SqliteStore) else f" ON {table}"
    raw_sql(store, f"DROP TRIGGER fail_{table}{on}")


def count_rows(store: Store, table: str) -> int:
    [(count,)] = raw_sql(store, f"SELECT count(*) FROM {table}")
    return int(count)


def raw_query(path: Path, sql: str) -> list[Any]:
    """Read the file with the plain sqlite3 module, bypassing the store."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def raw_script(path: Path, sql: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.executescript(sql)
    finally:
        conn.close()


def read_bytes(path: Path) -> bytes:
    return path.read_bytes()


def write_bytes(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def listing(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


# --- plans -----------------------------------------------------------------------------


async def test_plan_versions_round_trip(store: Store) -> None:
    v1 = make_plan(steps=2)
    v2 = Plan(
        id=v1.id,
        version=2,
        query="revised",
        strategy="fetch, then summarise",
        agent="researcher",
        session_id="sess-1",
        steps=(
            Step(
                id="fetch",
                server="web",
                tool="get",
                arguments={"url": "https://example.com", "nested": {"a": [1, 2.5, None]}},
                timeout_s=30,
                retry=RetryPolicy(maximum_attempts=5, non_retryable=frozenset()),
                on_error=OnError.CONTINUE,
            ),
            Step(id="sum", server="llm", tool="summarise", arguments={"text": "${fetch}"}),
        ),
        deadline_s=120.0,
        considered_tools=("web__get", "llm__summarise"),
        created_at=T0 + timedelta(minutes=5),
    )
    await store.save_plan(v1, events=[event("p1", EventKind.PLAN_CREATED, version=1)])
    await store.save_plan(v2)

    assert await store.get_plan("p1") == v2
    assert await store.get_plan("p1", 1) == v1
    assert await store.get_plan("p1", 2) == v2
    assert (await store.get_plan("p1", 2)).plan_hash == v2.plan_hash
    assert await store.plan_versions("p1") == [1, 2]
    assert await store.plan_versions("nope") == []

    with pytest.raises(NotFoundError, match="no plan with id 'nope'"):
        await store.get_plan("nope")
    with pytest.raises(NotFoundError, match="has no version 3; its versions are 1, 2"):
        await store.get_plan("p1", 3)


async def test_save_plan_refuses_an_existing_version(store: Store) -> None:
    await store.save_plan(make_plan())
    with pytest.raises(UserError, match="version 1 already exists"):
        await store.save_plan(make_plan(steps=5), events=[event("p1", EventKind.PLAN_CREATED)])
    assert len((await store.get_plan("p1")).steps) == 3
    assert await store.get_events("p1") == []


async def test_save_plan_refuses_duplicate_step_ids(store: Store) -> None:
    step = Step(id="a", server="s", tool="t")
    with pytest.raises(UserError, match=r"duplicate step ids \['a'\]"):
        await store.save_plan(Plan(id=PlanId("dup"), steps=(step, step)))
    assert await store.plan_versions("dup") == []


async def test_save_plan_adds_a_pending_state_per_step(store: Store) -> None:
    plan = make_plan(steps=4)
    await store.save_plan(plan)
    states = await store.get_step_states("p1", 1)
    assert list(states) == ["s0", "s1", "s2", "s3"]
    assert all(s.status is StepStatus.PENDING and s.attempts == 0 for s in states.values())
    assert await store.get_step_states("p1", 2) == {}


async def test_plan_without_steps_round_trips(store: Store) -> None:
    plan = Plan(id=PlanId("empty"), steps=())
    await store.save_plan(plan)
    assert await store.get_plan("empty") == plan
    assert await store.list_plans() == [plan]


async def test_list_plans_latest_version_newest_first_with_filters(store: Store) -> None:
    a1 = make_plan("a", session_id="s1", created_at=T0)
    b1 = make_plan("b", session_id="s2", created_at=T0 + timedelta(seconds=1))
    c1 = make_plan("c", session_id="s1", created_at=T0 + timedelta(seconds=2))
    a2 = make_plan("a", version=2, session_id="s1", created_at=T0 + timedelta(seconds=3))
    for plan in (a1, b1, c1, a2):
        await store.save_plan(plan)
    await store.update_plan_status("a", 1, PlanStatus.REJECTED)
    await store.update_plan_status("b", 1, PlanStatus.CONFIRMED)

    assert await store.list_plans() == [a2, c1, b1.model_copy(update={"status": "confirmed"})]
    assert [p.id for p in await store.list_plans(session_id="s1")] == ["a", "c"]
    assert [p.id for p in await store.list_plans(limit=2)] == ["a", "c"]
    # The status filter looks at the latest version only: a@1 is rejected, a@2 is not.
    assert await store.list_plans(statuses={PlanStatus.REJECTED}) == []
    drafts = await store.list_plans(statuses=[PlanStatus.DRAFT, PlanStatus.CONFIRMED])
    assert [(p.id, p.version) for p in drafts] == [("a", 2), ("c", 1), ("b", 1)]
    assert [p.id for p in await store.list_plans(statuses=[PlanStatus.CONFIRMED])] == ["b"]
    assert await store.list_plans(statuses=[]) == []
    assert await store.list_plans(session_id="none") == []
    with pytest.raises(UserError, match="limit must be at least 1"):
        await store.list_plans(limit=0)


async def test_update_plan_status_checks_and_records(store: Store) -> None:
    plan = make_plan()
    await store.save_plan(plan)
    updated = await store.update_plan_status(
        "p1",
        1,
        PlanStatus.CONFIRMED,
        approved_hash=plan.plan_hash,
        events=[event("p1", EventKind.PLAN_CONFIRMED)],
    )
    assert updated.status is PlanStatus.CONFIRMED
    assert updated.is_approved
    assert await store.get_plan("p1") == updated
    assert [e.kind for e in await store.get_events("p1")] == [EventKind.PLAN_CONFIRMED]

    with pytest.raises(NotFoundError, match="no plan 'p1' version 9"):
        await store.update_plan_status("p1", 9, PlanStatus.CONFIRMED)


async def test_illegal_plan_transition_writes_nothing(store: Store) -> None:
    await store.save_plan(make_plan())
    with pytest.raises(TransitionError, match="'draft' -> 'completed'"):
        await store.update_plan_status(
            "p1",
            1,
            PlanStatus.COMPLETED,
            approved_hash="v1:forged",
            events=[event("p1", EventKind.PLAN_FINISHED)],
        )
    plan = await store.get_plan("p1")
    assert plan.status is PlanStatus.DRAFT
    assert plan.approved_hash is None
    assert await store.get_events("p1") == []


async def test_batch_with_illegal_transition_writes_nothing(store: Store) -> None:
    plan = make_plan()
    await store.save_plan(plan)
    batch = WriteBatch(
        step_states=[state(plan, "s0", StepStatus.RUNNING, attempts=1, started_at=T0)],
        attempts=[
            AttemptRecord(plan_id=plan.id, version=1, step_id="s0", attempt=1, started_at=T0)
        ],
        events=[event("p1", EventKind.EXECUTION_STARTED)],
        durations=[("srv", "tool0", 1.0)],
        plan_status=PlanStatusChange("p1", 1, PlanStatus.EXECUTING, started_at=T0),
    )
    with pytest.raises(TransitionError, match="'draft' -> 'executing'"):
        await store.write(batch)
    assert (await store.get_step_states("p1", 1))["s0"].status is StepStatus.PENDING
    assert await store.get_attempts("p1", 1) == []
    assert await store.get_events("p1") == []
    assert await store.tool_stats() == {}
    assert (await store.get_plan("p1")).status is PlanStatus.DRAFT
    assert await store.get_run_times("p1", 1) == (None, None)


async def test_a_write_naming_an_unstored_step_says_which_and_writes_nothing(
    store: Store,
) -> None:
    plan = make_plan()
    await store.save_plan(plan)
    batch = WriteBatch(
        attempts=[
            AttemptRecord(plan_id=plan.id, version=1, step_id="ghost", attempt=1, started_at=T0)
        ],
        events=[event("p1", EventKind.EXECUTION_STARTED)],
    )
    with pytest.raises(NotFoundError, match=r"not stored \(.+\); the batch names p1@1/ghost:"):
        await store.write(batch)
    assert await store.get_attempts("p1", 1) == []
    assert await store.get_events("p1") == []


async def test_run_times_follow_status_changes(store: Store) -> None:
    await store.save_plan(make_plan(status=PlanStatus.CONFIRMED))
    t1, t2, t3 = T0, T0 + timedelta(seconds=10), T0 + timedelta(seconds=60)
    await store.write(
        WriteBatch(plan_status=PlanStatusChange("p1", 1, PlanStatus.EXECUTING, started_at=t1))
    )
    assert await store.get_run_times("p1", 1) == (t1, None)
    await store.write(
        WriteBatch(plan_status=PlanStatusChange("p1", 1, PlanStatus.FAILED, finished_at=t2))
    )
    assert await store.get_run_times("p1", 1) == (t1, t2)
    # A new run of the failed plan starts afresh: the old end no longer applies.
    await store.write(
        WriteBatch(plan_status=PlanStatusChange("p1", 1, PlanStatus.EXECUTING, started_at=t3))
    )
    assert await store.get_run_times("p1", 1) == (t3, None)
    assert (await store.get_plan("p1")).status is PlanStatus.EXECUTING
    with pytest.raises(NotFoundError):
        await store.get_run_times("p1", 2)
    with pytest.raises(NotFoundError, match="no plan 'zz' version 1"):
        await store.write(WriteBatch(plan_status=PlanStatusChange("zz", 1, PlanStatus.FAILED)))


# --- step states, attempts, events, stats ----------------------------------------------


async def test_step_states_keep_the_full_result(store: Store) -> None:
    plan = make_plan()
    await store.save_plan(plan)
    result = ToolResult(
        content=[
            {"type": "text", "text": "héllo ✓ 😀 and a lone \udc80 surrogate"},
            {"type": "image", "data": "iVBORw0KGgo=", "mimeType": "image/png"},
            {
                "type": "resource",
                "resource": {"uri": "file:///x.txt", "mimeType": "text/plain", "text": "x"},
                "_meta": {"k": [1, {"deep": True}]},
            },
        ],
        structured_content={"value": 3, "items": [1.5, None, "x"], "big": 2**70},
        is_error=False,
    )
    succeeded = state(
        plan,
        "s0",
        StepStatus.SUCCEEDED,
        attempts=2,
        output=result.output(),
        result=result,
        started_at=T0,
        finished_at=T0 + timedelta(seconds=1.5),
    )
    failed_result = ToolResult(content=[{"type": "text", "text": "boom"}], is_error=True)
    failed = state(
        plan,
        "s1",
        StepStatus.FAILED,
        attempts=1,
        result=failed_result,
        error=StepError(kind=ErrorKind.TOOL_ERROR, message="boom"),
        started_at=T0,
        finished_at=T0 + timedelta(seconds=2),
    )
    text_output = state(plan, "s2", StepStatus.SUCCEEDED, attempts=1, output="plain text")
    await store.write(WriteBatch(step_states=[succeeded, failed, text_output]))

    # States come back without their results, which are read one at a time.
    states = await store.get_step_states("p1", 1)
    light = {"result": None}
    assert states == {
        "s0": succeeded.model_copy(update=light),
        "s1": failed.model_copy(update=light),
        "s2": text_output,
    }
    assert await store.get_step_result("p1", 1, "s0") == result
    assert await store.get_step_result("p1", 1, "s1") == failed_result
    assert await store.get_step_result("p1", 1, "s2") is None
    assert states["s0"].duration_s == 1.5

    # Upserted whole: a step reset to pending loses its result too.
    rerun = state(plan, "s1", StepStatus.PENDING)
    await store.write(WriteBatch(step_states=[rerun]))
    assert (await store.get_step_states("p1", 1))["s1"] == rerun
    assert await store.get_step_result("p1", 1, "s1") is None


async def test_a_long_result_is_stored_once_and_rebuilt_exactly(store: Store) -> None:
    plan = make_plan()
    await store.save_plan(plan)
    text = "é日\udc80x" * 300_000 + "end"
    other = "y" * 5000
    result = ToolResult(
        content=[{"type": "text", "text": text}, {"type": "text", "text": other}],
        structured_content={"content": text, "list": [other, "short"], "n": 1},
    )
    summary = summarize(result)
    assert not summary.inline and summary.kind == "json"
    done = state(
        plan, "s0", StepStatus.SUCCEEDED, attempts=1, output=result.output(), result=result
    ).model_copy(update={"summary": summary})
    size_before = _db_size(store)
    await store.write(WriteBatch(step_states=[done]))
    # Each long string once: the text is both a block and the structured content.
    if isinstance(store, SqliteStore):
        grown = _db_size(store) - size_before
        payload = len(text.encode("utf-8", "surrogatepass")) + len(other)
        assert grown < payload * 1.2, (grown, payload)
    else:
        assert count_rows(store, "result_parts") == 2

    again = await store.get_step_result("p1", 1, "s0")
    assert again == result
    assert again is not None and again.output() == result.output()
    stored = (await store.get_step_states("p1", 1))["s0"]
    assert stored.output is None and stored.summary == summary


async def test_a_new_result_replaces_the_last_one_whole(store: Store) -> None:
    plan = make_plan()
    await store.save_plan(plan)
    long, short = {"type": "text", "text": "a" * 5000}, {"type": "text", "text": "b"}
    first = ToolResult(content=[long, short])
    second = ToolResult(content=[{"type": "text", "text": "c" * 3000}], structured_content={"n": 2})
    for result in (first, second):
        # A failed attempt's result, then the retry's: one batch each.
        await store.write(
            WriteBatch(step_states=[state(plan, "s0", StepStatus.RUNNING, result=result)])
        )
    assert await store.get_step_result("p1", 1, "s0") == second


def _db_size(store: Store) -> int:
    if not isinstance(store, SqliteStore):
        return 0  # PostgreSQL compresses long values: rows are counted instead
    return sum(p.stat().st_size for p in store.path.parent.glob(store.path.name + "*"))


def _pydantic_json(model: Any, name: str) -> str | None:
    """How a field was encoded before the fast path: pydantic's JSON mode, then compact."""
    value = model.model_dump(mode="json", include={name})[name]
    return None if value is None and getattr(model, name) is None else codecs.dumps(value)


@pytest.mark.parametrize(
    "value",
    [
        None,
        "plain",
        "héllo ✓ 😀 and a lone \udc80 surrogate",
        {"a": [1, 2.5, None, True, "x"], "big": 2**70, "nested": {"k": []}},
        [1, (2, 3), {"t": (4,)}],
        StepStatus.RUNNING,
        b"raw bytes",
        {"when": T0, "blob": b"\x00\x01"},
        float("nan"),
        [float("inf"), -float("inf")],
        {1: "an int key"},
        ToolResult(content=[{"type": "text", "text": "a model as an output"}]),
    ],
)
def test_rows_are_encoded_as_pydantic_would(value: Any) -> None:
    # The store encodes rows without pydantic when the value is plain JSON; whatever
    # the value, the text stored must be what pydantic's JSON mode gives.
    result = ToolResult(
        content=[{"type": "text", "text": "x", "extra": value}],
        structured_content={"v": value},
        is_error=True,
    )
    error = StepError(kind=ErrorKind.TOOL_ERROR, message="boom \udc80 ✓")
    st = StepState(
        plan_id=PlanId("p"),
        version=1,
        step_id="s",
        status=StepStatus.FAILED,
        output=value,
        result=result,
        error=error,
        started_at=T0,
        finished_at=T0.astimezone(timezone(timedelta(hours=2))),
    )
    row = codecs.state_row(st, "now")
    assert row[5] == codecs.dumps(st.model_dump(mode="json", include={"output"})["output"])
    assert row[6] is None  # results are kept in their own table
    rows = results.result_rows(st)
    assert rows is not None and rows.skeleton == _pydantic_json(st, "result")
    assert row[7] == _pydantic_json(st, "error")
    assert row[8:10] == ("2025-03-01T12:00:00.123456+00:00",) * 2

    record = AttemptRecord(
        plan_id=PlanId("p"), version=1, step_id="s", attempt=1, started_at=T0, error=error
    )
    assert codecs.attempt_row(record)[7] == _pydantic_json(record, "error")
    bare = record.model_copy(update={"error": None})
    assert codecs.attempt_row(bare)[7] is None

    event = Event(plan_id=PlanId("p"), kind=EventKind.STEP_FAILED, data={"v": value, "n": 1})
    assert codecs.event_row(event)[4] == _pydantic_json(event, "data")


async def test_timestamps_are_stored_as_utc_iso_text(sqlite_store: SqliteStore) -> None:
    plan = make_plan()
    await sqlite_store.save_plan(plan)
    plus_two = timezone(timedelta(hours=2))
    await sqlite_store.write(
        WriteBatch(
            step_states=[
                state(
                    plan,
                    "s0",
                    StepStatus.RUNNING,
                    started_at=datetime(2025, 3, 1, 14, 0, tzinfo=plus_two),
                    finished_at=datetime(2025, 3, 1, 12, 30),  # naive: taken as UTC
                )
            ]
        )
    )
    rows = raw_query(
        sqlite_store.path, "SELECT started_at, finished_at FROM step_states WHERE step_id='s0'"
    )
    assert rows == [("2025-03-01T12:00:00.000000+00:00", "2025-03-01T12:30:00.000000+00:00")]
    got = (await sqlite_store.get_step_states("p1", 1))["s0"]
    assert got.started_at == datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    assert got.finished_at == datetime(2025, 3, 1, 12, 30, tzinfo=UTC)


async def test_attempts_round_trip_and_upsert(store: Store) -> None:
    plan = make_plan()
    await store.save_plan(plan)

    def attempt(step: str, n: int, **kwargs: Any) -> AttemptRecord:
        return AttemptRecord(
            plan_id=plan.id, version=1, step_id=step, attempt=n, started_at=T0, **kwargs
        )

    first = attempt(
        "s1",
        1,
        status=StepStatus.FAILED,
        finished_at=T0 + timedelta(seconds=1),
        error=StepError(kind=ErrorKind.TIMEOUT, message="took too long"),
    )
    in_flight = attempt("s1", 2)
    other = attempt("s0", 1, status=StepStatus.SUCCEEDED, finished_at=T0)
    await store.write(WriteBatch(attempts=[first, in_flight, other]))
    assert await store.get_attempts("p1", 1) == [other, first, in_flight]
    assert await store.get_attempts("p1", 1, "s1") == [first, in_flight]

    done = attempt("s1", 2, status=StepStatus.SUCCEEDED, finished_at=T0 + timedelta(seconds=3))
    await store.write(WriteBatch(attempts=[done]))
    assert await store.get_attempts("p1", 1, "s1") == [first, done]
    assert await store.get_attempts("p1", 2) == []


async def test_write_naming_an_unknown_step_writes_nothing(store: Store) -> None:
    plan = make_plan()
    await store.save_plan(plan)
    batch = WriteBatch(
        step_states=[
            state(plan, "s0", StepStatus.RUNNING),
            state(plan, "ghost", StepStatus.RUNNING),
        ],
        events=[event("p1", EventKind.STEP_STARTED)],
    )
    with pytest.raises(NotFoundError, match="p1@1/ghost"):
        await store.write(batch)
    assert (await store.get_step_states("p1", 1))["s0"].status is StepStatus.PENDING
    assert await store.get_events("p1") == []


async def test_events_are_ordered_and_paged(store: Store) -> None:
    for plan_id in ("a", "b"):
        await store.save_plan(make_plan(plan_id))
    returned: list[Event] = []
    for i in range(25):
        returned += await store.write_returning_events(
            WriteBatch(
                events=[
                    Event(
                        plan_id=PlanId("a"),
                        kind=EventKind.STEP_PROGRESS,
                        step_id="s0",
                        data={"i": i},
                    ),
                    event("b", EventKind.STEP_PROGRESS, i=i),
                    event("a", EventKind.STEP_PROGRESS, i=i, second=True),
                ]
            )
        )
    all_a = await store.get_events("a")
    assert [e.data["i"] for e in all_a] == [i for i in range(25) for _ in (0, 1)]
    seqs = [e.seq for e in all_a]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs) and seqs[0] >= 1
    # The seqs handed back are the stored ones.
    assert [e for e in returned if e.plan_id == "a"] == all_a
    assert all_a[0].step_id == "s0"

    paged: list[Event] = []
    after = 0
    while page := await store.get_events("a", after_seq=after, limit=7):
        assert len(page) <= 7
        paged += page
        after = page[-1].seq
    assert paged == all_a
    assert await store.get_events("a", after_seq=seqs[-1]) == []
    assert await store.write_returning_events(WriteBatch()) == []
    with pytest.raises(UserError, match="limit"):
        await store.get_events("a", limit=0)


async def test_tool_stats_fold_durations_with_welford(store: Store) -> None:
    rng = random.Random(4)
    seen: dict[tuple[str, str], list[float]] = {}
    for _ in range(12):
        durations = []
        for _ in range(rng.randint(1, 6)):
            key = rng.choice([("srv", "fast"), ("srv", "slow"), ("other", "fast")])
            seconds = rng.uniform(0, 5) if key[1] == "fast" else rng.uniform(50, 500)
            durations.append((key[0], key[1], seconds))
            seen.setdefault(key, []).append(seconds)
        await store.write(WriteBatch(durations=durations))

    stats = await store.tool_stats()
    assert set(stats) == set(seen)
    for key, values in seen.items():
        got = stats[key]
        assert (got.server, got.tool) == key
        assert got.count == len(values)
        assert got.mean_s == pytest.approx(statistics.fmean(values), rel=1e-12)
        assert got.m2 / got.count == pytest.approx(statistics.pvariance(values), rel=1e-9)
        assert got.last_s == values[-1]


async def test_bad_durations_are_refused(store: Store) -> None:
    for bad in (float("nan"), -1.0, float("inf")):
        with pytest.raises(InternalError, match="finite number of seconds"):
            await store.write(WriteBatch(durations=[("s", "t", bad)]))
    assert await store.tool_stats() == {}


# --- agents and planner attempts -------------------------------------------------------


async def test_agents_upsert_by_name(store: Store) -> None:
    with pytest.raises(NotFoundError, match="known agents: none"):
        await store.get_agent("writer")
    writer = AgentConfig(
        name="writer",
        personality="terse",
        model="openai/gpt-4o-mini",
        api_key_env="OPENAI_API_KEY",
        tool_policy=ToolPolicy(allow=("fs.*",), deny=("fs.delete",)),
        limits=AgentLimits(max_steps=10, plan_deadline_s=60),
        retry=RetryPolicy(maximum_attempts=2),
        auto_approve=AutoApprove.READ_ONLY,
    )
    reader = AgentConfig(name="reader")
    await store.save_agent(writer)
    await store.save_agent(reader)
    assert await store.get_agent("writer") == writer
    changed = writer.model_copy(update={"personality": "chatty"})
    await store.save_agent(changed)
    assert await store.get_agent("writer") == changed
    assert await store.list_agents() == [reader, changed]
    with pytest.raises(NotFoundError, match="known agents: 'reader', 'writer'"):
        await store.get_agent("critic")


async def test_planner_attempts_round_trip(store: Store) -> None:
    attempts = [
        PlannerAttempt(
            plan_id=PlanId("p1"),
            attempt=1,
            model="m",
            prompt_tokens=1200,
            completion_tokens=300,
            latency_s=2.5,
            errors=("step 's2': unknown tool", "cycle"),
            at=T0,
        ),
        PlannerAttempt(plan_id=PlanId("p1"), attempt=2, model="m", latency_s=1.0, at=T0),
        PlannerAttempt(plan_id=None, attempt=1, model="m", at=T0),
        PlannerAttempt(plan_id=PlanId("p2"), attempt=1, at=T0),
    ]
    for attempt in attempts:
        await store.record_planner_attempt(attempt)
    assert stored_planner_attempts(store, "p1") == attempts[:2]
    assert stored_planner_attempts(store, "p2") == attempts[3:]
    assert stored_planner_attempts(store, "p3") == []


# --- atomicity under failure -----------------------------------------------------------


async def test_save_plan_leaves_nothing_behind_on_failure(store: Store) -> None:
    # A trigger makes the last insert of save_plan (its events) fail inside the database.
    add_failing_trigger(store, "events", "no events")
    with pytest.raises(StoreError, match="no events"):
        await store.save_plan(make_plan(), events=[event("p1", EventKind.PLAN_CREATED)])
    for table in ("plans", "steps", "step_states", "events"):
        assert count_rows(store, table) == 0
    # The connection is usable afterwards, and nothing of the failed attempt blocks a retry.
    await store.save_plan(make_plan())
    assert len(await store.get_step_states("p1", 1)) == 3


async def test_write_is_atomic_on_failure(store: Store) -> None:
    plan = make_plan()
    await store.save_plan(plan, events=[event("p1", EventKind.PLAN_CREATED)])
    await store.update_plan_status("p1", 1, PlanStatus.CONFIRMED)
    add_failing_trigger(store, "tool_stats", "nope")
    batch = WriteBatch(
        step_states=[state(plan, "s0", StepStatus.SUCCEEDED, attempts=1)],
        attempts=[
            AttemptRecord(plan_id=plan.id, version=1, step_id="s0", attempt=1, started_at=T0)
        ],
        events=[event("p1", EventKind.STEP_SUCCEEDED)],
        durations=[("srv", "tool0", 0.5)],
        plan_status=PlanStatusChange("p1", 1, PlanStatus.EXECUTING, started_at=T0),
    )
    with pytest.raises(StoreError, match="nope"):
        await store.write(batch)
    assert (await store.get_step_states("p1", 1))["s0"].status is StepStatus.PENDING
    assert await store.get_attempts("p1", 1) == []
    assert [e.kind for e in await store.get_events("p1")] == [EventKind.PLAN_CREATED]
    assert (await store.get_plan("p1")).status is PlanStatus.CONFIRMED
    drop_failing_trigger(store, "tool_stats")
    await store.write(batch)
    assert (await store.get_plan("p1")).status is PlanStatus.EXECUTING


# --- MCP tasks and kept keys ----------------------------------------------------------


async def test_an_attempt_keeps_its_downstream_task_id_to_its_end(store: Store) -> None:
    plan = make_plan()
    await store.save_plan(plan)
    started = AttemptRecord(
        plan_id=plan.id, version=1, step_id="s0", attempt=1, started_at=T0, task_id="task-7"
    )
    await store.write(WriteBatch(attempts=[started]))
    assert await store.get_attempts("p1", 1, "s0") == [started]
    # The attempt's end is written without the id (the coordinator forgets it then);
    # the stored id stays, for whoever reads the attempt back after a crash.
    ended = started.model_copy(
        update={"status": StepStatus.SUCCEEDED, "finished_at": T0, "task_id": None}
    )
    await store.write(WriteBatch(attempts=[ended]))
    [got] = await store.get_attempts("p1", 1, "s0")
    assert got.task_id == "task-7" and got.status is StepStatus.SUCCEEDED
    plain = AttemptRecord(plan_id=plan.id, version=1, step_id="s1", attempt=1, started_at=T0)
    await store.write(WriteBatch(attempts=[plain]))
    assert (await store.get_attempts("p1", 1, "s1"))[0].task_id is None


async def test_host_tasks_round_trip_and_name_a_stored_plan(store: Store) -> None:
    plan = make_plan(status=PlanStatus.CONFIRMED)
    await store.save_plan(plan)
    created = datetime(2025, 3, 1, 12, 0, 0, 250000, tzinfo=timezone(timedelta(hours=2)))
    await store.add_host_task("t-abc", "owner-hash", plan.id, 1, created)
    await store.add_host_task("t-local", "", plan.id, 1, T0)
    task = await store.get_host_task("t-abc")
    assert task is not None
    assert (task.task_id, task.owner, task.plan_id, task.version) == (
        "t-abc",
        "owner-hash",
        "p1",
        1,
    )
    assert task.created_at == created and task.created_at.utcoffset() == timedelta(0)
    local = await store.get_host_task("t-local")
    assert local is not None and local.owner == ""
    assert await store.get_host_task("t-nope") is None
    for plan_id, version in (("ghost", 1), ("p1", 2)):
        with pytest.raises(NotFoundError, match=f"no plan {plan_id!r} version {version}"):
            await store.add_host_task("t-new", "", plan_id, version, T0)
    assert await store.get_host_task("t-new") is None


async def test_a_server_key_is_made_once_and_the_same_for_every_store(opener: Opener) -> None:
    stores = [await opener() for _ in range(3)]
    try:
        keys: list[bytes] = []

        async def ask(each: Store) -> None:
            keys.append(await each.server_key("request_state"))

        # Several processes starting at once on an empty database: one key for all.
        async with anyio.create_task_group() as tg:
            for each in stores:
                tg.start_soon(ask, each)
        assert len(keys) == 3 and len(set(keys)) == 1 and len(keys[0]) == 32
        other = await stores[0].server_key("other", 16)
        assert len(other) == 16 and other != keys[0]
        # Asked again (another size is not a new key): the kept one.
        assert await stores[2].server_key("request_state", 64) == keys[0]
        assert count_rows(stores[0], "server_keys") == 2
    finally:
        for each in stores:
            await each.close()
    async with await opener() as reopened:
        assert await reopened.server_key("request_state") == keys[0]


# --- opening, migrating, refusing ------------------------------------------------------


async def test_migrates_an_empty_file_and_creates_parents(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    write_bytes(empty, b"")
    nested = tmp_path / "a" / "b" / "c.db"
    for path in (empty, nested):
        async with await SqliteStore.open(path) as store:
            await store.save_plan(make_plan())
            assert store.path == path
        assert raw_query(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
        assert raw_query(path, "PRAGMA application_id") == [(APPLICATION_ID,)]
        assert raw_query(path, "PRAGMA journal_mode") == [("wal",)]
        # Reopening a current file migrates nothing and keeps the data.
        async with await SqliteStore.open(path) as store:
            assert (await store.get_plan("p1")).id == "p1"


async def test_pending_migrations_run_in_order_in_one_transaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "db.sqlite"
    async with await SqliteStore.open(path) as store:
        await store.save_plan(make_plan())

    n = len(schema_module.MIGRATIONS)
    broken = (
        *schema_module.MIGRATIONS,
        Migration(
            n + 1, "add notes", ("CREATE TABLE notes (x TEXT)", "INSERT INTO notes VALUES (1)")
        ),
        Migration(
            n + 2, "broken", ("ALTER TABLE notes ADD COLUMN y TEXT", "SELECT * FROM nowhere")
        ),
    )
    monkeypatch.setattr(schema_module, "MIGRATIONS", broken)
    monkeypatch.setattr(schema_module, "SCHEMA_VERSION", n + 2)
    with pytest.raises(StoreError, match="no such table: nowhere"):
        await SqliteStore.open(path)
    # All or nothing: migration n + 1 is not kept when n + 2 fails.
    assert raw_query(path, "PRAGMA user_version") == [(n,)]
    assert raw_query(path, "SELECT name FROM sqlite_master WHERE name = 'notes'") == []

    fixed = (*broken[: n + 1], Migration(n + 2, "add y", ("ALTER TABLE notes ADD COLUMN y TEXT",)))
    monkeypatch.setattr(schema_module, "MIGRATIONS", fixed)
    async with await SqliteStore.open(path) as store:
        assert (await store.get_plan("p1")).id == "p1"
    assert raw_query(path, "PRAGMA user_version") == [(n + 2,)]
    assert raw_query(path, "SELECT x, y FROM notes") == [("1", None)]


async def test_a_newer_schema_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    async with await SqliteStore.open(path) as store:
        await store.save_plan(make_plan())
    raw_script(path, f"PRAGMA user_version = {SCHEMA_VERSION + 4};")
    before = read_bytes(path)
    files = listing(tmp_path)
    with pytest.raises(SchemaTooNewError) as info:
        await SqliteStore.open(path)
    message = str(info.value)
    assert str(path) in message
    assert f"schema version {SCHEMA_VERSION + 4}" in message
    assert f"up to {SCHEMA_VERSION}" in message
    assert "upgrade taskorch" in message
    assert read_bytes(path) == before
    assert listing(tmp_path) == files


def _damaged_sqlite(path: Path) -> None:
    """A real database whose pages after the header are overwritten with garbage."""
    conn = sqlite3.connect(path)
    conn.executescript(
        "PRAGMA page_size = 1024; CREATE TABLE t (x); "
        "INSERT INTO t SELECT randomblob(500) FROM (SELECT 1 UNION SELECT 2 UNION SELECT 3);"
    )
    conn.close()
    data = bytearray(path.read_bytes())
    data[100:] = random.Random(1).randbytes(len(data) - 100)
    path.write_bytes(bytes(data))


def _foreign_sqlite(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.executescript("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT);")
    conn.close()


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("random", "file is not a database"),
        ("text", "file is not a database"),
        ("damaged", "malformed"),
        ("foreign", "not a taskorch one"),
    ],
)
async def test_a_bad_file_is_reported_and_left_untouched(
    tmp_path: Path, kind: str, expected: str
) -> None:
    path = tmp_path / f"{kind}.db"
    if kind == "random":
        write_bytes(path, random.Random(0).randbytes(8192))
    elif kind == "text":
        write_bytes(path, b"these are my notes, not a database\n" * 50)
    elif kind == "damaged":
        _damaged_sqlite(path)
    else:
        _foreign_sqlite(path)
    before = read_bytes(path)
    files = listing(tmp_path)
    with pytest.raises(CorruptDatabaseError) as info:
        await SqliteStore.open(path)
    assert str(path) in str(info.value)
    assert expected in str(info.value)
    assert "left untouched" in str(info.value)
    assert read_bytes(path) == before
    assert listing(tmp_path) == files


async def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="is a directory: give the path of a file") as info:
        await SqliteStore.open(tmp_path)
    assert str(tmp_path) in str(info.value)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permissions")
async def test_an_unreadable_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    async with await SqliteStore.open(path):
        pass
    path.chmod(0)
    try:
        with pytest.raises(StoreError, match="unable to open") as info:
            await SqliteStore.open(path)
        assert str(path) in str(info.value)
    finally:
        path.chmod(0o600)


async def test_an_uncreatable_parent_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    write_bytes(blocker, b"x")
    with pytest.raises(StoreError, match="cannot create the directory") as info:
        await SqliteStore.open(blocker / "sub" / "db.sqlite")
    assert str(blocker / "sub") in str(info.value)


async def test_bad_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="synchronous must be one of OFF, NORMAL, FULL, EXTRA"):
        await SqliteStore.open(tmp_path / "x.db", synchronous="sometimes")
    with pytest.raises(ConfigError, match="busy_timeout_s"):
        await SqliteStore.open(tmp_path / "x.db", busy_timeout_s=-1)
    async with await SqliteStore.open(tmp_path / "x.db", synchronous="full") as store:
        await store.save_plan(make_plan())


async def test_a_closed_store_says_so(opener: Opener) -> None:
    store = await opener()
    await store.close()
    await store.close()
    with pytest.raises(StoreError, match="is closed"):
        await store.get_plan("p1")
    with pytest.raises(StoreError, match="is closed"):
        await store.save_plan(make_plan())


# --- concurrency -----------------------------------------------------------------------


async def _writer(store: Store, plan: Plan, rounds: int) -> None:
    """Write one batch per step per round, reading back after each commit."""
    for r in range(rounds):
        for step in plan.steps:
            tag = f"{plan.id}/{step.id}/{r}"
            await store.write(
                WriteBatch(
                    step_states=[
                        state(plan, step.id, StepStatus.RUNNING, attempts=r + 1, output=tag)
                    ],
                    attempts=[
                        AttemptRecord(
                            plan_id=plan.id,
                            version=1,
                            step_id=step.id,
                            attempt=r + 1,
                            started_at=T0,
                        )
                    ],
                    events=[
                        Event(
                            plan_id=plan.id,
                            kind=EventKind.STEP_STARTED,
                            step_id=step.id,
                            data={"tag": tag},
                        )
                    ],
                    durations=[("shared", "tool", 1.0)],
                )
            )
            mine = await store.get_step_states(plan.id, 1)
            assert mine[step.id].output == tag
        # A refused write in the mix must roll back its own work only.
        with pytest.raises(TransitionError):
            await store.write(
                WriteBatch(
                    events=[event(plan.id, EventKind.PLAN_FINISHED, bogus=True)],
                    plan_status=PlanStatusChange(plan.id, 1, PlanStatus.COMPLETED),
                )
            )


async def _check_writers(store: Store, plans: list[Plan], rounds: int) -> None:
    all_seqs: list[int] = []
    for plan in plans:
        states = await store.get_step_states(plan.id, 1)
        assert {k: s.output for k, s in states.items()} == {
            s.id: f"{plan.id}/{s.id}/{rounds - 1}" for s in plan.steps
        }
        events = await store.get_events(plan.id, limit=100_000)
        assert [e.data["tag"] for e in events] == [
            f"{plan.id}/{s.id}/{r}" for r in range(rounds) for s in plan.steps
        ]
        all_seqs += [e.seq for e in events]
        attempts = await store.get_attempts(plan.id, 1)
        assert len(attempts) == rounds * len(plan.steps)
    assert len(set(all_seqs)) == len(all_seqs)
    stats = await store.tool_stats()
    assert stats["shared", "tool"].count == rounds * sum(len(p.steps) for p in plans)


async def test_concurrent_writers_never_lose_or_mix_writes(store: Store) -> None:
    plans = [make_plan(f"w{i}", steps=4, status=PlanStatus.CONFIRMED) for i in range(12)]
    for plan in plans:
        await store.save_plan(plan)
    async with anyio.create_task_group() as tg:
        for plan in plans:
            tg.start_soon(_writer, store, plan, 5)
    await _check_writers(store, plans, 5)


async def test_several_stores_share_one_database(opener: Opener) -> None:
    stores = [await opener() for _ in range(3)]
    try:
        first, second, third = stores
        await first.save_plan(make_plan("seen", status=PlanStatus.CONFIRMED))
        assert (await second.get_plan("seen")).id == "seen"
        await second.update_plan_status("seen", 1, PlanStatus.EXECUTING)
        assert (await third.get_plan("seen")).status is PlanStatus.EXECUTING
        await third.write(WriteBatch(events=[event("seen", EventKind.EXECUTION_STARTED)]))
        assert [e.kind for e in await first.get_events("seen")] == [EventKind.EXECUTION_STARTED]

        plans = [make_plan(f"x{i}", steps=3, status=PlanStatus.CONFIRMED) for i in range(6)]
        for plan in plans:
            await first.save_plan(plan)
        async with anyio.create_task_group() as tg:
            for i, plan in enumerate(plans):
                tg.start_soon(_writer, stores[i % 3], plan, 4)
        for each in stores:
            await _check_writers(each, plans, 4)
    finally:
        for each in stores:
            await each.close()


async def test_cancelled_writers_leave_whole_batches_only(store: Store) -> None:
    plans = [make_plan(f"c{i}", steps=50, status=PlanStatus.CONFIRMED) for i in range(4)]
    for plan in plans:
        await store.save_plan(plan)

    async def write_all(plan: Plan) -> None:
        for step in plan.steps:
            await store.write(
                WriteBatch(
                    step_states=[state(plan, step.id, StepStatus.SUCCEEDED, output=step.id)],
                    events=[Event(plan_id=plan.id, kind=EventKind.STEP_SUCCEEDED, step_id=step.id)],
                )
            )

    with anyio.move_on_after(0.05):
        async with anyio.create_task_group() as tg:
            for plan in plans:
                tg.start_soon(write_all, plan)
    # Wherever the cancellation landed, each batch is all there or not there at all.
    for plan in plans:
        states = await store.get_step_states(plan.id, 1)
        done = [k for k, s in states.items() if s.status is StepStatus.SUCCEEDED]
        events = await store.get_events(plan.id)
        assert [e.step_id for e in events] == done
    # And the shared connection is not left inside a transaction.
    await store.save_plan(make_plan("after"))
    assert (await store.get_plan("after")).id == "after"


# --- one worker-thread call per transaction ------------------------------------------------


async def test_the_private_aiosqlite_api_the_store_uses_exists(sqlite_store: SqliteStore) -> None:
    """The store runs whole transactions through aiosqlite's private `_execute` and `_conn`.

    If aiosqlite renames or changes them, this fails first, and loudly: pin aiosqlite
    or adapt `executor.store.connection.on_worker_thread`.
    """
    import aiosqlite

    assert callable(getattr(aiosqlite.Connection, "_execute", None)), (
        "aiosqlite.Connection._execute is gone: executor.store.connection.on_worker_thread needs it"
    )
    assert isinstance(getattr(aiosqlite.Connection, "_conn", None), property), (
        "aiosqlite.Connection._conn is gone: executor.store.connection.on_worker_thread needs it"
    )
    db = sqlite_store._db
    assert db is not None
    assert isinstance(db._conn, sqlite3.Connection)
    # `_execute(fn, *args)` runs fn(*args) on the connection's own thread, returning its result.
    here = threading.get_ident()
    there = await db._execute(threading.get_ident)  # type: ignore[no-untyped-call]
    assert isinstance(there, int) and there != here
    same = await db._execute(lambda conn, x: (conn is db._conn, x), db._conn, 7)  # type: ignore[no-untyped-call]
    assert same == (True, 7)


async def test_a_write_is_one_call_on_the_worker_thread(
    sqlite_store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = make_plan("one", steps=2, status=PlanStatus.CONFIRMED)
    await sqlite_store.save_plan(plan)
    db = sqlite_store._db
    assert db is not None
    calls: list[str] = []
    real: Any = db._execute

    async def counting(fn: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(getattr(fn, "__name__", repr(fn)))
        return await real(fn, *args, **kwargs)

    monkeypatch.setattr(db, "_execute", counting)
    batch = WriteBatch(
        step_states=[state(plan, "s0", StepStatus.RUNNING, attempts=1)],
        attempts=[
            AttemptRecord(plan_id=plan.id, version=1, step_id="s0", attempt=1, started_at=T0)
        ],
        events=[event("one", EventKind.STEP_STARTED)],
        durations=[("srv", "tool0", 0.5)],
        plan_status=PlanStatusChange("one", 1, PlanStatus.EXECUTING, T0),
        expect=ExpectedPlanStatus("one", 1, PlanStatus.CONFIRMED),
    )
    stored = await sqlite_store.write_returning_events(batch)
    assert calls == ["in_transaction"]
    assert stored[0].seq == (await sqlite_store.get_events("one"))[-1].seq
    # A failing one is rolled back in that same call, then re-raised.
    calls.clear()
    bad = WriteBatch(
        step_states=[state(plan, "s1", StepStatus.RUNNING, attempts=1)],
        events=[event("one", EventKind.STEP_STARTED)],
        plan_status=PlanStatusChange("one", 1, PlanStatus.DRAFT),
    )
    with pytest.raises(TransitionError):
        await sqlite_store.write(bad)
    assert calls == ["in_transaction"]
    monkeypatch.undo()
    assert (await sqlite_store.get_step_states("one", 1))["s1"].status is StepStatus.PENDING
    assert len(await sqlite_store.get_events("one")) == 1
    assert db._conn.in_transaction is False


# --- run leases ----------------------------------------------------------------------------


async def executing(store: Store, plan_id: str, *, version: int = 1) -> None:
    await store.save_plan(make_plan(plan_id, version=version, status=PlanStatus.CONFIRMED))
    await store.update_plan_status(plan_id, version, PlanStatus.EXECUTING)


async def test_a_schema_1_file_migrates_and_its_executing_runs_are_claimable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "old.db"
    with monkeypatch.context() as old:
        old.setattr(schema_module, "MIGRATIONS", schema_module.MIGRATIONS[:1])
        old.setattr(schema_module, "SCHEMA_VERSION", 1)
        async with await SqliteStore.open(path) as store:
            # No steps: today's code writes step states in today's columns.
            await store.save_plan(make_plan("legacy", steps=0, status=PlanStatus.CONFIRMED))
    # As a taskorch of schema 1 left it when it crashed mid-run.
    raw_script(path, "UPDATE plans SET status = 'executing' WHERE plan_id = 'legacy';")
    assert raw_query(path, "PRAGMA user_version") == [(1,)]
    async with await SqliteStore.open(path) as store:
        assert raw_query(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
        [lease] = await store.list_leases()
        assert (lease.plan_id, lease.owner, lease.until) == ("legacy", None, None)
        assert await store.claim_runs(RunLease("me", 30)) == [("legacy", 1)]
        assert (await store.get_plan("legacy")).status is PlanStatus.EXECUTING


async def test_leases_are_claimed_once_renewed_and_released(opener: Opener) -> None:
    stores = [await opener() for _ in range(4)]
    try:
        first = stores[0]
        for i in range(10):
            await executing(first, f"r{i}")
        await executing(first, "r0", version=2)  # an older version is executing too
        await first.save_plan(make_plan("idle", status=PlanStatus.CONFIRMED))
        got: dict[str, list[tuple[PlanId, int]]] = {}

        async def claim(owner: str, each: Store) -> None:
            got[owner] = await each.claim_runs(RunLease(owner, 3600))

        async with anyio.create_task_group() as tg:
            for i, each in enumerate(stores):
                tg.start_soon(claim, f"o{i}", each)
        everything = sorted(k for taken in got.values() for k in taken)
        # Each executing version claimed by exactly one owner; nothing else.
        assert everything == sorted([*((PlanId(f"r{i}"), 1) for i in range(10)), ("r0", 2)])
        owner = next(o for o, taken in got.items() if taken)
        assert await first.claim_runs(RunLease("late", 3600)) == []

        before = {(x.plan_id, x.version): x.until for x in await first.list_leases()}
        assert await stores[1].renew_leases(RunLease(owner, 7200)) == set(got[owner])
        after = {(x.plan_id, x.version): x for x in await first.list_leases()}
        for key in got[owner]:
            renewed, previous = after[key].until, before[key]
            assert after[key].owner == owner
            assert renewed is not None and previous is not None
            assert renewed > previous
        assert await first.renew_leases(RunLease("nobody", 60)) == set()

        # Releasing one, then the rest; released ones are claimable at once.
        one = got[owner][0]
        assert await first.release_leases(owner, [one]) == 1
        assert await first.claim_runs(RunLease("next", 60)) == [one]
        assert await first.release_leases(owner) == len(got[owner]) - 1
        # Leaving `executing` releases the lease whoever held it.
        await first.update_plan_status(one[0], one[1], PlanStatus.CANCELLED)
        assert one not in {(x.plan_id, x.version) for x in await first.list_leases()}
    finally:
        for each in stores:
            await each.close()


async def test_an_expired_or_gone_lease_is_claimable_and_a_write_checks_the_owner(
    store: Store,
) -> None:
    await executing(store, "e")
    assert await store.claim_runs(RunLease("short", 0.001)) == [("e", 1)]
    [lease] = await store.list_leases()
    assert lease.until is not None
    with anyio.fail_after(10):
        while datetime.now(UTC) <= lease.until:  # noqa: ASYNC110 - waiting on the clock
            await anyio.sleep(0.01)
    assert await store.claim_runs(RunLease("taker", 3600)) == [("e", 1)]
    assert await store.claim_runs(RunLease("other", 3600)) == []
    assert await store.claim_runs(RunLease("other", 3600), gone_owners=["taker"]) == [("e", 1)]

    plan = await store.get_plan("e")
    batch = WriteBatch(
        step_states=[state(plan, "s0", StepStatus.RUNNING, attempts=1)],
        expect=ExpectedPlanStatus("e", 1, PlanStatus.EXECUTING, lease=RunLease("taker", 60)),
    )
    with pytest.raises(TransitionError, match="another process took it over"):
        await store.write(batch)
    assert (await store.get_step_states("e", 1))["s0"].status is StepStatus.PENDING
    ours = WriteBatch(
        step_states=batch.step_states,
        expect=ExpectedPlanStatus("e", 1, PlanStatus.EXECUTING, lease=RunLease("other", 60)),
    )
    await store.write(ours)
    assert (await store.get_step_states("e", 1))["s0"].status is StepStatus.RUNNING


async def test_bad_leases_are_refused() -> None:
    with pytest.raises(InternalError, match="non-empty owner"):
        RunLease("", 1)
    with pytest.raises(InternalError, match="lease_s must be > 0"):
        RunLease("x", 0)


async def test_a_result_stored_with_its_state_before_migration_4_is_still_read(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    async with await SqliteStore.open(path) as store:
        await store.save_plan(make_plan())
    # As schema 2 kept it: the whole result and the output with the step state.
    old = (
        '{"content":[{"type":"text","text":"{\\"v\\": 1}"}],'
        '"structured_content":null,"is_error":false}'
    )
    raw_script(
        path,
        "UPDATE step_states SET status = 'succeeded', attempts = 1, output = '{\"v\":1}', "
        f"result = '{old}' WHERE step_id = 's0';",
    )
    async with await SqliteStore.open(path) as store:
        state = (await store.get_step_states("p1", 1))["s0"]
        assert state.output == {"v": 1} and state.summary is None
        result = await store.get_step_result("p1", 1, "s0")
        assert result is not None and result.output() == {"v": 1}


async def test_a_skip_by_decision_stored_before_migration_9_keeps_its_meaning(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    async with await SqliteStore.open(path) as store:
        await store.save_plan(make_plan())
    # As schema 8 kept them: a skip by decision was told by its error's kind alone.
    decided = '{"kind":"interrupted","message":"skipped by decision after an interruption"}'
    blocked = '{"kind":"cancelled","message":"not run: a dependency did not succeed"}'
    raw_script(
        path,
        "ALTER TABLE step_states DROP COLUMN skip_reason; ALTER TABLE attempts DROP COLUMN "
        "task_id; DROP TABLE host_tasks; DROP TABLE server_keys; PRAGMA user_version = 8; "
        f"UPDATE step_states SET status = 'skipped', error = '{decided}' WHERE step_id = 's0';"
        f"UPDATE step_states SET status = 'skipped', error = '{blocked}' WHERE step_id = 's1';",
    )
    async with await SqliteStore.open(path) as store:
        states = await store.get_step_states("p1", 1)
    assert raw_query(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert states["s0"].skip_reason is SkipReason.DECISION
    assert states["s0"].satisfies_dependents
    assert states["s1"].skip_reason is None and not states["s1"].satisfies_dependents
    assert states["s2"].skip_reason is None


async def test_skip_reasons_round_trip(store: Store) -> None:
    plan = make_plan()
    await store.save_plan(plan)
    reasons = dict(zip(("s0", "s1", "s2"), SkipReason, strict=True))
    await store.write(
        WriteBatch(
            step_states=[
                state(plan, sid, StepStatus.SKIPPED, skip_reason=reason)
                for sid, reason in reasons.items()
            ]
        )
    )
    states = await store.get_step_states(plan.id, plan.version)
    assert {sid: s.skip_reason for sid, s in states.items()} == reasons
