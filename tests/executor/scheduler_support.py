"""Helpers for the scheduler tests: plans, an in-process caller, the fixture server's spec."""

from __future__ import annotations

import random
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import anyio

from executor.calls import ProgressFn, ToolCaller, ToolResult
from executor.catalog import Catalog, ToolAnnotations, ToolInfo
from executor.downstream import Pool
from executor.downstream.specs import StdioServerSpec
from executor.errors import ErrorKind, ToolCallError
from executor.ids import PlanId
from executor.plan import Plan, Step
from executor.records import Event, EventKind
from executor.run import ExecutionReport, Scheduler, SchedulerConfig, Subscription
from executor.status import PlanStatus
from executor.store import SqliteStore, Store
from executor.store.postgres import PostgresStore
from executor.task_client import TaskHooks
from tests.executor.memory_store import MemoryStore

ENGINE_SERVER = Path(__file__).resolve().parents[1] / "fixtures" / "engine_server.py"
"""The fixture server the scheduler tests call over stdio."""


def engine_spec(**extra: Any) -> StdioServerSpec:
    """The stdio spec that runs the engine fixture server."""
    return StdioServerSpec(command=sys.executable, args=(str(ENGINE_SERVER),), **extra)


def confirmed(plan_id: str, steps: Sequence[Step | Mapping[str, Any]], **extra: Any) -> Plan:
    """A plan, confirmed and approved for its content."""
    built = [s if isinstance(s, Step) else Step.model_validate(s) for s in steps]
    plan = Plan(id=PlanId(plan_id), steps=tuple(built), **extra)
    return plan.model_copy(update={"status": PlanStatus.CONFIRMED, "approved_hash": plan.plan_hash})


async def save_confirmed(
    store: Store, plan_id: str, steps: Sequence[Step | Mapping[str, Any]], **extra: Any
) -> Plan:
    """Save a confirmed, approved plan and return it."""
    plan = confirmed(plan_id, steps, **extra)
    await store.save_plan(plan)
    return plan


ToolFn = Callable[[dict[str, Any], ProgressFn | None], Awaitable[Any]]
"""An in-process tool: arguments and progress callback in, result (or raise) out."""


@dataclass
class CallLog:
    """What an `InProcessCaller` saw, in order."""

    started: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    """(step tag, arguments) of every call, as it started."""
    finished: list[str] = field(default_factory=list)
    """Step tags of calls that returned, in order."""
    in_flight: int = 0
    """Calls in flight now."""
    max_in_flight: int = 0
    """Most calls in flight at once."""


class InProcessCaller:
    """A `ToolCaller` whose tools are Python coroutines: fast, for pure-logic tests.

    A tool returning a `ToolResult` returns it as is; a dict becomes structured
    content; anything else becomes a text block. `ToolCallError` raised by a
    tool passes through; a timeout becomes `ToolCallError(timeout)`.
    """

    def __init__(
        self,
        tools: Mapping[tuple[str, str], ToolFn],
        annotations: Mapping[tuple[str, str], ToolAnnotations] | None = None,
    ) -> None:
        self.tools = dict(tools)
        self.annotations = dict(annotations or {})
        self.log = CallLog()

    async def call(
        self,
        server: str,
        tool: str,
        arguments: dict[str, Any],
        *,
        timeout_s: float | None = None,
        on_progress: ProgressFn | None = None,
        task: TaskHooks | None = None,
    ) -> ToolResult:
        fn = self.tools.get((server, tool))
        if fn is None:
            raise ToolCallError(
                ErrorKind.TOOL_UNAVAILABLE, f"no tool {tool!r}", server=server, tool=tool
            )
        self.log.started.append((str(arguments.get("tag", "")), arguments))
        self.log.in_flight += 1
        self.log.max_in_flight = max(self.log.max_in_flight, self.log.in_flight)
        try:
            with anyio.fail_after(timeout_s):
                value = await fn(arguments, on_progress)
        except TimeoutError:
            raise ToolCallError(
                ErrorKind.TIMEOUT, f"no answer within {timeout_s} s", server=server, tool=tool
            ) from None
        finally:
            self.log.in_flight -= 1
        self.log.finished.append(str(arguments.get("tag", "")))
        if isinstance(value, ToolResult):
            return value
        if isinstance(value, dict):
            return ToolResult(
                content=[{"type": "text", "text": "structured"}], structured_content=value
            )
        return ToolResult(content=[{"type": "text", "text": str(value)}])

    async def catalog(self) -> Catalog:
        return Catalog(
            ToolInfo(server=s, name=t, annotations=self.annotations.get((s, t), ToolAnnotations()))
            for s, t in self.tools
        )


async def noop_tool(arguments: dict[str, Any], on_progress: ProgressFn | None) -> Any:
    """Return the arguments at once."""
    return dict(arguments)


@asynccontextmanager
async def engine_caller(**spec_extra: Any) -> AsyncIterator[Pool]:
    """The pool, reaching the engine fixture server (as `engine`) over stdio, started."""
    async with Pool({"engine": engine_spec(**spec_extra)}) as pool:
        # Start the server now, so that its start-up time counts against no step.
        catalog = await pool.catalog()
        assert ("engine", "sleep") in catalog, pool.health()
        yield pool


@dataclass
class Harness:
    """A store on disk and a scheduler over some caller."""

    store: Store
    scheduler: Scheduler
    caller: ToolCaller

    async def run(
        self, plan_id: str, steps: Sequence[Step | Mapping[str, Any]], **extra: Any
    ) -> tuple[ExecutionReport, list[Event]]:
        """Save a confirmed plan, run it to the end, and return its report and events."""
        await save_confirmed(self.store, plan_id, steps, **extra)
        run = await self.scheduler.start(plan_id)
        events = await collect(self.scheduler.subscribe(plan_id))
        return await run.wait(), events


async def collect(sub: Subscription) -> list[Event]:
    """Every event of a subscription, to its end."""
    async with sub:
        return [e async for e in sub]


StoreKind = Literal["sqlite", "memory", "postgres"]
"""Which `Store` a test runs the scheduler on: SQLite on disk, `MemoryStore`, PostgreSQL."""

PG_URL_FILE = "postgres.url"
"""The file in a test's `tmp_path` naming its PostgreSQL database (see `store_kind`)."""


@asynccontextmanager
async def open_store(tmp_path: Path, kind: StoreKind = "sqlite") -> AsyncIterator[Store]:
    """A store of this kind, its database (if any) that of `tmp_path`; one per `tmp_path`."""
    if kind == "memory":
        store = MemoryStore()
        try:
            yield store
        finally:
            await store.close()
        return
    if kind == "postgres":
        url = (tmp_path / PG_URL_FILE).read_text(encoding="utf-8")
        async with await PostgresStore.open(url) as pg:
            yield pg
        return
    async with await SqliteStore.open(tmp_path / "taskorch.db") as opened:
        yield opened


@asynccontextmanager
async def harness(
    tmp_path: Path,
    caller: ToolCaller,
    config: SchedulerConfig | None = None,
    *,
    store_kind: StoreKind = "sqlite",
) -> AsyncIterator[Harness]:
    """Open a store (on disk under `tmp_path`, or in memory) and a scheduler over `caller`."""
    async with open_store(tmp_path, store_kind) as store:
        async with Scheduler(store, caller, config, rng=random.Random(7)) as scheduler:
            yield Harness(store, scheduler, caller)


_ENDS = {
    EventKind.STEP_SUCCEEDED,
    EventKind.STEP_FAILED,
    EventKind.STEP_CANCELLED,
    EventKind.STEP_RETRYING,
}


def max_concurrency(events: Sequence[Event]) -> int:
    """Most steps in flight at once, as the events tell it."""
    running: set[str] = set()
    most = 0
    for e in events:
        if e.kind is EventKind.STEP_STARTED and e.step_id is not None:
            running.add(e.step_id)
            most = max(most, len(running))
        elif e.kind in _ENDS and e.step_id is not None:
            running.discard(e.step_id)
    return most


async def wait_until(predicate: Callable[[], bool], *, limit_s: float = 10.0) -> None:
    """Wait until `predicate()` holds (a hang guard, not a timing claim)."""
    with anyio.fail_after(limit_s):
        while True:
            if predicate():
                return
            await anyio.sleep(0.02)
