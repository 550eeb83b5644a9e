"""PostgreSQL's own: its schema and migrations, its URL's password, its clock, its notifications.

The protocol-level tests (round trips, atomicity, leases, concurrency) run on
PostgreSQL in `test_store.py`; these are what only PostgreSQL has. Each test
has a schema of its own on the session's throwaway server (`pg_url`).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import psycopg
import pytest

from executor.errors import (
    CorruptDatabaseError,
    InternalError,
    SchemaTooNewError,
    StoreError,
    UserError,
)
from executor.ids import PlanId
from executor.plan import Plan, Step
from executor.records import AttemptRecord, Event, EventKind, StepState
from executor.status import PlanStatus, StepStatus
from executor.store import (
    Migration,
    PlanStatusChange,
    RunLease,
    WriteBatch,
    open_store,
    pg_schema,
)
from executor.store import postgres as postgres_module
from executor.store.location import DatabaseUrl, locate
from executor.store.pg_errors import store_error
from executor.store.pg_listen import Listener
from executor.store.postgres import PostgresStore
from tests.pg import PgServer

pytestmark = pytest.mark.anyio

STARTED, FAILED = EventKind.STEP_STARTED, EventKind.STEP_FAILED


def plan(plan_id: str = "p", steps: int = 2, **extra: object) -> Plan:
    return Plan.model_validate(
        {
            "id": plan_id,
            "steps": [Step(id=f"s{i}", server="srv", tool="t") for i in range(steps)],
            **extra,
        }
    )


def sql(url: str, statement: str) -> list[tuple[object, ...]]:
    """Run one statement on the database behind the store's back."""
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement.encode())
        return cur.fetchall() if cur.description else []


@pytest.fixture
async def store(pg_url: str) -> AsyncIterator[PostgresStore]:
    async with await PostgresStore.open(pg_url) as opened:
        yield opened


async def executing(store: PostgresStore, plan_id: str) -> None:
    await store.save_plan(plan(plan_id, status=PlanStatus.CONFIRMED))
    await store.update_plan_status(plan_id, 1, PlanStatus.EXECUTING)


# --- opening, migrating, refusing ------------------------------------------------------


async def test_open_store_takes_a_url_and_migrates_an_empty_schema(pg_url: str) -> None:
    async with await open_store(pg_url) as store:
        assert isinstance(store, PostgresStore)
        await store.save_plan(plan())
    assert sql(pg_url, "SELECT version FROM taskorch_schema") == [(pg_schema.SCHEMA_VERSION,)]
    # Reopening a current database migrates nothing and keeps the data.
    async with await open_store(pg_url) as store:
        assert (await store.get_plan("p")).id == "p"


async def test_a_newer_schema_is_refused_naming_both_versions_untouched(pg_url: str) -> None:
    async with await PostgresStore.open(pg_url) as store:
        await store.save_plan(plan())
    newer = pg_schema.SCHEMA_VERSION + 3
    sql(pg_url, f"UPDATE taskorch_schema SET version = {newer}")
    with pytest.raises(SchemaTooNewError) as info:
        await PostgresStore.open(pg_url)
    message = str(info.value)
    assert f"schema version {newer}" in message
    assert f"up to {pg_schema.SCHEMA_VERSION}" in message
    assert "upgrade taskorch" in message
    assert sql(pg_url, "SELECT version FROM taskorch_schema") == [(newer,)]
    assert sql(pg_url, "SELECT count(*) FROM plans") == [(1,)]


async def test_a_schema_holding_other_tables_is_refused_untouched(pg_url: str) -> None:
    sql(pg_url, "CREATE TABLE customers (id integer PRIMARY KEY, name text)")
    with pytest.raises(CorruptDatabaseError, match="not a taskorch database") as info:
        await PostgresStore.open(pg_url)
    assert "left untouched" in str(info.value)
    tables = sql(
        pg_url,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()",
    )
    assert tables == [("customers",)]


async def test_pending_migrations_run_in_one_transaction(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with await PostgresStore.open(pg_url) as store:
        await store.save_plan(plan())
    n = len(pg_schema.MIGRATIONS)
    broken = (
        *pg_schema.MIGRATIONS,
        Migration(
            n + 1, "notes", ("CREATE TABLE notes (x text)", "INSERT INTO notes VALUES ('1')")
        ),
        Migration(
            n + 2, "broken", ("ALTER TABLE notes ADD COLUMN y text", "SELECT * FROM nowhere")
        ),
    )
    monkeypatch.setattr(pg_schema, "MIGRATIONS", broken)
    monkeypatch.setattr(pg_schema, "SCHEMA_VERSION", n + 2)
    with pytest.raises(StoreError, match="nowhere"):
        await PostgresStore.open(pg_url)
    # All or nothing: migration n + 1 is not kept when n + 2 fails.
    assert sql(pg_url, "SELECT version FROM taskorch_schema") == [(n,)]
    assert sql(pg_url, "SELECT to_regclass('notes') IS NULL") == [(True,)]

    fixed = (*broken[: n + 1], Migration(n + 2, "y", ("ALTER TABLE notes ADD COLUMN y text",)))
    monkeypatch.setattr(pg_schema, "MIGRATIONS", fixed)
    async with await PostgresStore.open(pg_url) as store:
        assert (await store.get_plan("p")).id == "p"
    assert sql(pg_url, "SELECT version FROM taskorch_schema") == [(n + 2,)]
    assert sql(pg_url, "SELECT x, y FROM notes") == [("1", None)]


def test_migrations_out_of_order_are_refused_naming_their_list() -> None:
    from executor.store.schema import check_migrations

    check_migrations(pg_schema.MIGRATIONS, "PostgreSQL MIGRATIONS")
    steps = (Migration(1, "a", ()), Migration(3, "c", ()))
    with pytest.raises(
        InternalError, match=r"^PostgreSQL MIGRATIONS\[1\] has version 3; expected 2$"
    ):
        check_migrations(steps, "PostgreSQL MIGRATIONS")


async def test_a_version_1_database_gains_mcp_tasks_and_keeps_its_attempts(pg_url: str) -> None:
    async with await PostgresStore.open(pg_url) as store:
        await store.save_plan(plan())
        attempt = AttemptRecord(
            plan_id=PlanId("p"), version=1, step_id="s0", attempt=1, started_at=datetime.now(UTC)
        )
        await store.write(WriteBatch(attempts=[attempt]))
    # As taskorch left it before migration 2.
    sql(
        pg_url,
        "ALTER TABLE attempts DROP COLUMN task_id; DROP TABLE host_tasks; "
        "DROP TABLE server_keys; UPDATE taskorch_schema SET version = 1",
    )
    async with await PostgresStore.open(pg_url) as store:
        [kept] = await store.get_attempts("p", 1)
        assert kept.task_id is None and kept.started_at == attempt.started_at
        await store.add_host_task("t1", "", "p", 1, datetime.now(UTC))
        assert (await store.get_host_task("t1")) is not None
        assert len(await store.server_key("k")) == 32
    assert sql(pg_url, "SELECT version FROM taskorch_schema") == [(pg_schema.SCHEMA_VERSION,)]
    assert pg_schema.SCHEMA_VERSION == 2


async def test_replicas_starting_together_migrate_once(pg_url: str) -> None:
    stores: list[PostgresStore] = []

    async def start() -> None:
        stores.append(await PostgresStore.open(pg_url))

    try:
        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(start)
        await stores[0].save_plan(plan())
        for each in stores:
            assert (await each.get_plan("p")).id == "p"
    finally:
        for each in stores:
            await each.close()
    assert sql(pg_url, "SELECT count(*), max(version) FROM taskorch_schema") == [
        (1, pg_schema.SCHEMA_VERSION)
    ]


# --- the password ----------------------------------------------------------------------


async def test_the_password_is_never_said(
    pg_server: PgServer, pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = pg_url.replace(pg_server.password, "Wr0ngPassw0rd")
    with pytest.raises(StoreError) as info:
        await PostgresStore.open(wrong, timeout_s=10)
    message = str(info.value)
    assert "password authentication failed" in message
    assert "taskorch:***@127.0.0.1" in message
    assert "Wr0ngPassw0rd" not in message

    async with await PostgresStore.open(pg_url) as store:
        await executing(store, "p")
        assert await store.request_cancel("p", 1)
        assert pg_server.password not in str(store.url) + repr(store.url)
        with pytest.raises(StoreError, match="is closed") as closed:
            await store.close()
            await store.get_plan("p")
        assert pg_server.password not in str(closed.value)
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert "Wr0ngPassw0rd" not in logged
    assert pg_server.password not in logged


async def test_an_unreachable_server_is_reported_without_the_password(pg_server: PgServer) -> None:
    from tests.e2e.support import free_port

    url = f"postgresql://taskorch:Secr3tPw@127.0.0.1:{free_port()}/postgres"
    with pytest.raises(StoreError) as info:
        await PostgresStore.open(url, timeout_s=5)
    message = str(info.value)
    assert "127.0.0.1" in message and "check that the server runs" in message
    assert "Secr3tPw" not in message


@pytest.mark.parametrize("param", ["password", "sslpassword", "PASSWORD"])
async def test_a_password_given_as_a_url_parameter_is_never_said(
    pg_server: PgServer, param: str
) -> None:
    # A value the driver cannot decode is quoted back in its message, as written.
    url = f"postgresql://taskorch@127.0.0.1:{pg_server.port}/postgres?{param}=se%zzcr3t"
    with pytest.raises(StoreError) as info:
        await PostgresStore.open(url, timeout_s=5)
    message = str(info.value)
    assert "zzcr3t" not in message and "***" in message


async def test_the_listen_connection_never_logs_the_password(
    store: PostgresStore,
    pg_server: PgServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    await executing(store, "p")
    # A value the driver cannot decode is quoted back in its message, as written.
    bad = f"postgresql://taskorch@127.0.0.1:{pg_server.port}/postgres?password=se%zzcr3t"
    monkeypatch.setattr(store, "url", locate(bad))
    with anyio.fail_after(30):  # a hang guard
        async with store.follow_events("p") as feed:
            assert await feed.next(timeout_s=0) == []
    assert "cannot listen for the database's notifications" in caplog.text
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert "zzcr3t" not in logged and "***" in logged


# --- the database's clock ----------------------------------------------------------------


async def test_leases_run_on_the_database_clock(
    store: PostgresStore, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await executing(store, "p")
    # This process's clock is a day off: leases must not notice.
    off = datetime.now(UTC) + timedelta(days=1)
    monkeypatch.setattr("executor.store.codecs.utc_now", lambda: off)
    [(db_now,)] = sql(pg_url, "SELECT now()")
    assert await store.claim_runs(RunLease("me", 60)) == [("p", 1)]
    lease = await store.get_lease("p", 1)
    assert lease is not None and lease.until is not None and not lease.lapsed
    assert isinstance(db_now, datetime)
    assert timedelta(seconds=59) < lease.until - db_now < timedelta(seconds=90)
    # Lapsed by the database's clock: another owner may take it at once.
    sql(pg_url, "UPDATE plans SET lease_until = now() - interval '1 second'")
    assert await store.claim_runs(RunLease("other", 60)) == [("p", 1)]


# --- notifications -------------------------------------------------------------------------


@pytest.fixture
def notified_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Waits never read the database again on their own: only a notification wakes them."""
    monkeypatch.setattr(postgres_module, "_LOOK_AGAIN_S", 3600.0)


@pytest.mark.usefixtures("notified_only")
async def test_a_cancel_request_wakes_the_owner_through_a_notification(
    store: PostgresStore, pg_url: str
) -> None:
    await executing(store, "p")
    await executing(store, "q")
    async with await PostgresStore.open(pg_url) as other:
        with anyio.fail_after(30):  # a hang guard: only the notification can end the wait
            async with anyio.create_task_group() as tg:
                found: list[set[tuple[PlanId, int]]] = []

                async def wait() -> None:
                    found.append(await store.wait_cancel_requests({("p", 1)}))

                tg.start_soon(wait)
                await anyio.sleep(0.2)
                assert await other.request_cancel("q", 1)  # not watched: no wake-up
                assert await other.request_cancel("p", 1)
    assert found == [{("p", 1)}]


@pytest.mark.usefixtures("notified_only")
async def test_a_feed_sees_another_stores_events_and_live_progress(
    store: PostgresStore, pg_url: str
) -> None:
    await executing(store, "p")
    async with (
        await PostgresStore.open(pg_url) as writer,
        store.follow_events("p") as feed,
    ):
        with anyio.fail_after(30):
            assert await feed.next(timeout_s=0) == []
            state = StepState(plan_id="p", version=1, step_id="s0", status=StepStatus.RUNNING)
            started = Event(plan_id=PlanId("p"), kind=EventKind.STEP_STARTED, step_id="s0")
            await writer.write(WriteBatch(step_states=[state], events=[started]))
            [seen] = await feed.next(timeout_s=3600)
            assert (seen.kind, seen.step_id, seen.seq > 0) == (EventKind.STEP_STARTED, "s0", True)

            progress = Event(
                plan_id=PlanId("p"),
                kind=EventKind.STEP_PROGRESS,
                step_id="s0",
                data={"progress": 1, "total": 4, "message": "x" * 20_000},
            )
            other_plan = progress.model_copy(update={"plan_id": "q"})
            await writer.publish_live([other_plan, progress])
            [live] = await feed.next(timeout_s=3600)
            # Live: not stored; its long message cut to fit a notification.
            assert (live.kind, live.seq, live.data) == (
                EventKind.STEP_PROGRESS,
                0,
                {"progress": 1, "total": 4},
            )
            assert [e.kind for e in await store.get_events("p")] == [EventKind.STEP_STARTED]


def listening_pids(pg_server: PgServer) -> set[int]:
    with psycopg.connect(pg_server.url(), autocommit=True) as conn:
        rows = conn.execute(
            b"SELECT pid FROM pg_stat_activity WHERE query LIKE 'LISTEN %'"
        ).fetchall()
    return {int(r[0]) for r in rows}


@pytest.mark.usefixtures("notified_only")
async def test_a_lost_notification_connection_is_made_again(
    store: PostgresStore, pg_server: PgServer, pg_url: str
) -> None:
    await executing(store, "p")
    async with await PostgresStore.open(pg_url) as other, store.follow_events("p") as feed:
        with anyio.fail_after(30):
            [lost] = listening_pids(pg_server)
            pg_server.execute(f"SELECT pg_terminate_backend({lost})")
            got: list[Event] = []

            async def follow() -> None:
                got.extend(await feed.next(timeout_s=3600))

            async with anyio.create_task_group() as tg:
                tg.start_soon(follow)
                # Once the feed listens again, only a notification can bring the event.
                while not listening_pids(pg_server) - {lost}:  # noqa: ASYNC110 - another process
                    await anyio.sleep(0.05)
                await other.write(WriteBatch(events=[Event(plan_id=PlanId("p"), kind=FAILED)]))
    assert [e.kind for e in got] == [FAILED]


async def test_a_listen_connection_that_never_answers_is_given_up_in_time(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as silent:
        # Accepts connections (the kernel does) and never says a word.
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        async with await PostgresStore.open(pg_url, timeout_s=1) as store:
            await executing(store, "p")
            # Only the LISTEN connection is made to the silent server.
            monkeypatch.setattr(store, "url", locate(f"postgresql://u@127.0.0.1:{port}/db"))
            with anyio.fail_after(60):  # a hang guard: unbounded, psycopg waits 130 s
                async with store.follow_events("p") as feed:
                    assert await feed.next(timeout_s=0) == []
                    assert not store._listener.connected


def store_error_of(url: str) -> Callable[[psycopg.Error | OSError], StoreError]:
    def failure(exc: psycopg.Error | OSError) -> StoreError:
        assert isinstance(exc, psycopg.Error)
        return store_error(DatabaseUrl.parse(url), exc)

    return failure


async def test_a_listener_closed_while_connecting_closes_the_new_connection(
    pg_url: str,
) -> None:
    connecting, go_on = anyio.Event(), anyio.Event()
    made: list[psycopg.AsyncConnection[Any]] = []

    async def connect() -> psycopg.AsyncConnection[Any]:
        connecting.set()
        await go_on.wait()
        conn = await psycopg.AsyncConnection.connect(pg_url, autocommit=True)
        made.append(conn)
        return conn

    listener = Listener(connect, ["c"], store_error_of(pg_url))
    with anyio.fail_after(30):  # a hang guard
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                async with listener.watch("c", lambda _: True):
                    pass

            tg.start_soon(watch)
            await connecting.wait()
            await listener.close()
            go_on.set()
    assert [conn.closed for conn in made] == [True]
    assert not listener.connected


async def test_a_listener_drops_only_the_connection_that_failed(pg_url: str) -> None:
    async def connect() -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(pg_url, autocommit=True)

    listener = Listener(connect, ["c"], store_error_of(pg_url))
    try:
        first = await listener._connection()
        assert first is not None
        await first.close()
        # Another wait connected anew before the failed one's reader dropped it.
        second = await listener._connection()
        assert second is not None and second is not first
        await listener._drop(first)
        assert listener.connected and not second.closed
    finally:
        await listener.close()


# --- what PostgreSQL's text cannot hold ----------------------------------------------------


async def test_text_postgresql_cannot_hold_is_kept_where_json_carries_it(
    store: PostgresStore,
) -> None:
    odd = plan("odd", query="a NUL \x00 and a lone \udc80 surrogate", strategy="\x00")
    await store.save_plan(odd)
    assert await store.get_plan("odd") == odd
    await store.write(
        WriteBatch(
            events=[
                Event(plan_id=PlanId("odd"), kind=EventKind.STEP_FAILED, data={"m": "\x00\udc80"})
            ]
        )
    )
    [event] = await store.get_events("odd")
    assert event.data == {"m": "\x00\udc80"}
    with pytest.raises(UserError, match="cannot store"):
        await store.save_plan(plan("bad\x00id"))
    with pytest.raises(UserError, match="cannot store"):
        await store.save_plan(plan("bad\udc80id"))


# --- one plan's events in commit order ------------------------------------------------------


def backends_waiting_on_locks(pg_server: PgServer) -> int:
    with psycopg.connect(pg_server.url(), autocommit=True) as conn:
        [(n,)] = conn.execute(
            b"SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        ).fetchall()
    return int(n)


async def test_a_reader_paging_by_seq_never_passes_over_an_uncommitted_event(
    store: PostgresStore, pg_server: PgServer, pg_url: str
) -> None:
    """An event that got its seq first but commits last must not be skipped by a reader.

    Writer A's event is held in a trigger (after it got its seq) until the test lets
    it go; writer B then appends to the same plan. Were B to commit first, a reader
    paging by seq would read B's event and never look below it again.
    """
    await executing(store, "p")
    sql(
        pg_url,
        "CREATE FUNCTION gate() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN"
        " IF NEW.data LIKE '%gated%' THEN PERFORM pg_advisory_lock(4242);"
        " PERFORM pg_advisory_unlock(4242); END IF; RETURN NEW; END$$",
    )
    sql(pg_url, "CREATE TRIGGER gate AFTER INSERT ON events FOR EACH ROW EXECUTE FUNCTION gate()")
    written: list[int] = []

    async def append(each: PostgresStore, data: dict[str, bool]) -> None:
        event = Event(plan_id=PlanId("p"), kind=EventKind.STEP_PROGRESS, data=data)
        written.extend(e.seq for e in await each.write_returning_events(WriteBatch(events=[event])))

    with psycopg.connect(pg_server.url(), autocommit=True) as gate:
        gate.execute(b"SELECT pg_advisory_lock(4242)")
        async with (
            await PostgresStore.open(pg_url) as a,
            await PostgresStore.open(pg_url) as b,
            anyio.create_task_group() as tg,
        ):
            with anyio.fail_after(30):
                tg.start_soon(append, a, {"gated": True})
                while backends_waiting_on_locks(pg_server) < 1:  # noqa: ASYNC110 - another process
                    await anyio.sleep(0.02)
                tg.start_soon(append, b, {"free": True})
                # B has either committed already, or waits for A's commit.
                while not written and backends_waiting_on_locks(pg_server) < 2:  # noqa: ASYNC110
                    await anyio.sleep(0.02)
                page = [e.seq for e in await store.get_events("p")]
                gate.execute(b"SELECT pg_advisory_unlock(4242)")
    assert len(written) == 2
    # What a reader sees is every event up to some seq, never one with a gap below it.
    assert page == sorted(written)[: len(page)]


async def test_a_status_change_batch_is_refused_whole(store: PostgresStore) -> None:
    await store.save_plan(plan("p", status=PlanStatus.CONFIRMED))
    refused = WriteBatch(
        events=[Event(plan_id=PlanId("p"), kind=EventKind.PLAN_FINISHED)],
        plan_status=PlanStatusChange("p", 1, PlanStatus.COMPLETED),
    )
    with pytest.raises(Exception, match="'confirmed' -> 'completed'"):
        await store.write(refused)
    assert await store.get_events("p") == []
