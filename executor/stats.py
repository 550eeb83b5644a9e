"""Performance figures from what the store records: per tool, per server, per run.

`collect_stats` answers "which tool is slow, which server fails": each tool's
attempts (counts by outcome, retries, failures by error kind, the last failure,
p50 / p95 / max of successful calls, all computed by the store in SQL) and each
server's calls, failures, restarts and time down (from the pool's
`ServerEvent`s). `analyse_run` answers "where did this plan spend its time":
the critical path of its latest run, each step's share of the run, and time
running versus waiting for a slot versus spent on retries.

Pure computation over records; reading them is the store's job.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from executor.errors import UserError
from executor.graph import Graph
from executor.plan import Plan, utc_now
from executor.records import AttemptRecord, ServerEvent, ServerEventKind, StepState, ToolCallStats
from executor.status import StepStatus

if TYPE_CHECKING:
    from executor.store import Store

__all__ = [
    "CRITICAL_PATH_SHOWN",
    "Availability",
    "CriticalStep",
    "RunAnalysis",
    "ServerCallStats",
    "Stats",
    "analyse_run",
    "collect_stats",
    "parse_since",
    "plan_analysis",
    "server_availability",
]

CRITICAL_PATH_SHOWN = 10
"""Steps of a critical path listed in an analysis; the rest are counted."""

# defer_build: the schema is built at first use, not at import (read commands import
# many models and validate few).
_FROZEN = ConfigDict(frozen=True, defer_build=True)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$", re.IGNORECASE)
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """Turn `30m`, `12h`, `1d`, `2w` (back from now) or an ISO-8601 time into a UTC time.

    Raises:
        UserError: The text is neither, or the duration is not positive.
    """
    now = now or utc_now()
    match = _DURATION.match(text)
    if match is not None:
        amount = float(match.group(1))
        if amount <= 0:
            raise UserError(f"since must be a positive duration, got {text!r}")
        seconds = amount * _UNIT_S[match.group(2).lower()]
        try:
            return now - timedelta(seconds=seconds)
        except OverflowError:
            raise UserError(f"since {text!r} reaches back too far: use a smaller one") from None
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UserError(
            "since must be a duration back from now (a number and s, m, h, d or w: "
            f"30m, 12h, 1d, 2w) or an ISO-8601 time such as 2025-01-31T12:00Z; got {text!r}"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# --- per tool and per server ---------------------------------------------------------------


class ServerCallStats(BaseModel):
    """What one downstream server's calls and availability add up to over a window."""

    model_config = _FROZEN

    server: str
    """The server's configured name."""
    calls: int = 0
    """Attempts made on its tools."""
    succeeded: int = 0
    """Attempts that succeeded."""
    failed: int = 0
    """Attempts that failed."""
    failure_rate: float = 0.0
    """`failed / (succeeded + failed)` (0 when none ended)."""
    restarts: int = 0
    """Sessions opened again after the first one, in the window."""
    down_s: float = 0.0
    """Seconds the server was down in the window (lost or never opened, until it was
    up again, or the pool that saw it closed)."""
    down_now: bool = False
    """Whether a pool saw it go down and has not seen it up since."""
    last_down_at: datetime | None = None
    """When it last went down, in the window."""
    last_down_reason: str | None = None
    """Why, in a line."""


class Stats(BaseModel):
    """Every tool's and server's figures over one window of time."""

    model_config = _FROZEN

    since: datetime | None
    """Start of the window (attempts started from then on); `None`: everything kept."""
    until: datetime
    """End of the window: when the figures were taken."""
    tools: list[ToolCallStats]
    """Least reliable first (highest failure rate), then slowest first (p95)."""
    servers: list[ServerCallStats]
    """Least reliable first (failure rate, then time down, then restarts)."""


@dataclass(slots=True)
class Availability:
    """One server's restarts and down time over a window (see `server_availability`)."""

    restarts: int = 0
    down_s: float = 0.0
    down_now: bool = False
    last_down_at: datetime | None = None
    last_down_reason: str | None = None


def server_availability(
    events: Sequence[ServerEvent], *, since: datetime | None, now: datetime
) -> dict[str, Availability]:
    """Restarts and time down per server, from its `ServerEvent`s (any order).

    Each process's pool reports what it saw. A stretch of down time starts at a
    pool's `down` and ends at its `closed` (that process stopped), or at an `up`
    reported by any pool: a server seen up is up, which also ends the stretch of
    a process that was killed before it could say so. A stretch nothing ended runs
    to `now` (the server is down now). Stretches seen by several processes at once
    count once (their union), clipped to the window from `since` to `now`.
    """
    found: dict[str, Availability] = {}
    stretches: dict[str, list[tuple[datetime, datetime]]] = {}
    open_by: dict[str, dict[str, datetime]] = {}
    for event in sorted(events, key=lambda e: (e.server, e.at)):
        figures = found.setdefault(event.server, Availability())
        opened = open_by.setdefault(event.server, {})
        done = stretches.setdefault(event.server, [])
        in_window = since is None or event.at >= since
        if event.kind is ServerEventKind.DOWN:
            opened.setdefault(event.owner, event.at)
            if in_window:
                figures.last_down_at, figures.last_down_reason = event.at, event.reason
        elif event.kind is ServerEventKind.CLOSED:
            start = opened.pop(event.owner, None)
            if start is not None:
                done.append((start, event.at))
        else:
            done.extend((start, event.at) for start in opened.values())
            opened.clear()
            if event.restart and in_window:
                figures.restarts += 1
    for server, figures in found.items():
        still = open_by.get(server, {})
        figures.down_now = bool(still)
        spans = stretches[server] + [(start, now) for start in still.values()]
        figures.down_s = _union_s(spans, since, now)
    return found


def _union_s(
    spans: Sequence[tuple[datetime, datetime]], since: datetime | None, now: datetime
) -> float:
    """Seconds covered by `spans`, overlaps counted once, within `since` to `now`."""
    total = 0.0
    reach: datetime | None = None
    for start, end in sorted(spans):
        if since is not None:
            start = max(start, since)
        end = min(end, now)
        if reach is not None:
            start = max(start, reach)
        if end > start:
            total += (end - start).total_seconds()
        reach = end if reach is None else max(reach, end)
    return total


def _tool_order(stats: ToolCallStats) -> tuple[float, float, str, str]:
    return (-stats.failure_rate, -(stats.p95_s or 0.0), stats.server, stats.tool)


def _server_order(stats: ServerCallStats) -> tuple[float, float, int, str]:
    return (-stats.failure_rate, -stats.down_s, -stats.restarts, stats.server)


async def collect_stats(
    store: Store,
    *,
    server: str | None = None,
    tool: str | None = None,
    since: datetime | None = None,
    now: datetime | None = None,
) -> Stats:
    """Every tool's and server's figures from the store, least reliable and slowest first.

    Args:
        store: The store.
        server: Only this server (its tools, and it among the servers).
        tool: Only tools of this name (servers then count only those tools' calls).
        since: Only attempts (and server events) from then on.
        now: The end of the window (default: now).
    """
    now = now or utc_now()
    tools = await store.tool_call_stats(server=server, tool=tool, since=since)
    events = await store.get_server_events(server=server, since=since)
    available = server_availability(events, since=since, now=now)
    calls: dict[str, list[ToolCallStats]] = {}
    for t in tools:
        calls.setdefault(t.server, []).append(t)
    names = sorted(set(calls) | (set(available) if tool is None else set()))
    servers = []
    for name in names:
        mine = calls.get(name, [])
        succeeded = sum(t.succeeded for t in mine)
        failed = sum(t.failed for t in mine)
        ended = succeeded + failed
        avail = available.get(name, Availability())
        servers.append(
            ServerCallStats(
                server=name,
                calls=sum(t.calls for t in mine),
                succeeded=succeeded,
                failed=failed,
                failure_rate=failed / ended if ended else 0.0,
                restarts=avail.restarts,
                down_s=round(avail.down_s, 6),
                down_now=avail.down_now,
                last_down_at=avail.last_down_at,
                last_down_reason=avail.last_down_reason,
            )
        )
    return Stats(
        since=since,
        until=now,
        tools=sorted(tools, key=_tool_order),
        servers=sorted(servers, key=_server_order),
    )


# --- per run -------------------------------------------------------------------------------


class CriticalStep(BaseModel):
    """One step on a run's critical path, and what its time was made of."""

    model_config = _FROZEN

    id: str
    """The step."""
    server: str
    """Its server."""
    tool: str
    """Its tool."""
    ready_at: datetime
    """When it could start: the run's start, or when its last dependency ended."""
    started_at: datetime
    """When its first attempt of this run started."""
    called_at: datetime
    """When the call of its last attempt went out (past the server's call limit)."""
    finished_at: datetime
    """When it ended (now, for a step still running)."""
    span_s: float
    """Seconds from ready to finished."""
    share: float
    """Its span over the run's duration, 0 to 1."""
    running_s: float
    """Seconds its last attempt's call took."""
    waiting_s: float
    """Seconds from ready to its first attempt (waiting for a slot under the run's
    step limit or the limit on runs at once, and the scheduler's own hand-over),
    plus its last attempt's wait for the server's call limit."""
    retry_s: float
    """Seconds spent on attempts before the last one, and between them (backoff)."""
    attempts: int
    """Attempts it made in this run."""


class RunAnalysis(BaseModel):
    """Where the latest run of a plan version spent its time."""

    model_config = _FROZEN

    started_at: datetime
    """When the run started."""
    finished_at: datetime | None
    """When it ended (`None` while it runs)."""
    duration_s: float
    """Seconds from start to end (to now while it runs)."""
    steps_run: int
    """Steps that made at least one attempt in this run."""
    attempts: int
    """Attempts made in this run."""
    retries: int
    """Attempts beyond each step's first."""
    running_s: float
    """Step-seconds spent in the calls that counted (every step's last attempt)."""
    waiting_s: float
    """Step-seconds spent waiting for a slot (steps in flight per run, runs at once,
    calls per server)."""
    retry_s: float
    """Step-seconds that retries cost: earlier attempts and the backoff between them."""
    critical_path_s: float
    """Seconds from the run's start to the end of its critical path."""
    critical_path_steps: int
    """Steps on the critical path."""
    critical_running_s: float
    """Of the critical path: seconds running."""
    critical_waiting_s: float
    """Of the critical path: seconds waiting for a slot."""
    critical_retry_s: float
    """Of the critical path: seconds spent on retries."""
    critical_path: list[CriticalStep] = Field(default_factory=list)
    """The chain of steps that decided when the run ended, first to last: each began
    when the one before it ended. At most `CRITICAL_PATH_SHOWN` are listed (those
    with the longest spans, in path order)."""
    critical_path_omitted: int = 0
    """Steps on the critical path not listed."""


@dataclass(slots=True)
class _StepTime:
    ready: datetime
    start: datetime
    call: datetime
    end: datetime
    running_s: float
    waiting_s: float
    retry_s: float
    attempts: int


def _step_time(
    tries: Sequence[AttemptRecord],
    state: StepState | None,
    ready: datetime,
    now: datetime,
) -> _StepTime:
    """Split one step's time, from ready to end, into waiting, retries and running."""
    first, last = tries[0], tries[-1]
    end = (state.finished_at if state is not None else None) or last.finished_at or now
    end = max(end, last.started_at)
    ready = min(ready, first.started_at)
    call_start = last.started_at
    if last.call_s is not None and last.finished_at is not None:
        call_start = max(last.finished_at - timedelta(seconds=last.call_s), last.started_at)
    call_start = min(call_start, end)
    return _StepTime(
        ready=ready,
        start=first.started_at,
        call=call_start,
        end=end,
        waiting_s=(first.started_at - ready).total_seconds()
        + (call_start - last.started_at).total_seconds(),
        retry_s=(last.started_at - first.started_at).total_seconds(),
        running_s=(end - call_start).total_seconds(),
        attempts=len(tries),
    )


def analyse_run(
    plan: Plan,
    states: Mapping[str, StepState],
    attempts: Sequence[AttemptRecord],
    *,
    started_at: datetime,
    finished_at: datetime | None,
    now: datetime | None = None,
    shown: int = CRITICAL_PATH_SHOWN,
) -> RunAnalysis:
    """Where the run that started at `started_at` spent its time.

    Only attempts of this run count (those started at or after `started_at`):
    steps that succeeded in an earlier run are done before it starts. A step is
    ready at the run's start or when its last dependency ended; its time from
    ready to end is split into waiting for a slot, retries, and the call that
    counted. The critical path is the chain, back from the step that ended last,
    of the dependency each step waited for last.

    Args:
        plan: The plan version.
        states: Its step states.
        attempts: Its attempts (any order, any run).
        started_at: When the run started.
        finished_at: When it ended (`None` while running).
        now: Stands for the end of what is still running (default: now).
        shown: Most critical-path steps listed.
    """
    now = now or utc_now()
    end_of_run = finished_at or now
    tries: dict[str, list[AttemptRecord]] = {}
    for a in sorted(attempts, key=lambda a: (a.step_id, a.attempt)):
        if a.started_at >= started_at:
            tries.setdefault(a.step_id, []).append(a)
    times: dict[str, _StepTime] = {}
    came_after: dict[str, str | None] = {}
    by_id = {s.id: s for s in plan.steps}
    for sid in Graph(plan.steps).order:
        step = by_id[sid]
        mine = tries.get(step.id)
        if not mine:
            continue
        ready, after = started_at, None
        for dep in step.depends_on:
            dep_time = times.get(dep)
            if dep_time is not None and dep_time.end > ready:
                ready, after = dep_time.end, dep
        times[step.id] = _step_time(mine, states.get(step.id), ready, now)
        came_after[step.id] = after
    path: list[str] = []
    if times:
        cursor: str | None = max(times, key=lambda sid: (times[sid].end, sid))
        while cursor is not None:
            path.append(cursor)
            cursor = came_after[cursor]
        path.reverse()
    duration = max((end_of_run - started_at).total_seconds(), 0.0)
    on_path = [times[sid] for sid in path]
    return RunAnalysis(
        started_at=started_at,
        finished_at=finished_at,
        duration_s=round(duration, 6),
        steps_run=len(times),
        attempts=sum(t.attempts for t in times.values()),
        retries=sum(t.attempts - 1 for t in times.values()),
        running_s=_sum(t.running_s for t in times.values()),
        waiting_s=_sum(t.waiting_s for t in times.values()),
        retry_s=_sum(t.retry_s for t in times.values()),
        critical_path_s=round((on_path[-1].end - started_at).total_seconds(), 6) if path else 0.0,
        critical_path_steps=len(path),
        critical_running_s=_sum(t.running_s for t in on_path),
        critical_waiting_s=_sum(t.waiting_s for t in on_path),
        critical_retry_s=_sum(t.retry_s for t in on_path),
        critical_path=_shown(plan, path, times, duration, shown),
        critical_path_omitted=max(len(path) - shown, 0),
    )


def _sum(values: Iterable[float]) -> float:
    return round(sum(values), 6)


def _shown(
    plan: Plan,
    path: Sequence[str],
    times: Mapping[str, _StepTime],
    duration: float,
    shown: int,
) -> list[CriticalStep]:
    keep = set(sorted(path, key=lambda sid: -(times[sid].end - times[sid].ready))[:shown])
    by_id = {s.id: s for s in plan.steps}
    listed = []
    for sid in path:
        if sid not in keep:
            continue
        t = times[sid]
        span = (t.end - t.ready).total_seconds()
        listed.append(
            CriticalStep(
                id=sid,
                server=by_id[sid].server,
                tool=by_id[sid].tool,
                ready_at=t.ready,
                started_at=t.start,
                called_at=t.call,
                finished_at=t.end,
                span_s=round(span, 6),
                share=round(span / duration, 4) if duration > 0 else 0.0,
                running_s=round(t.running_s, 6),
                waiting_s=round(t.waiting_s, 6),
                retry_s=round(t.retry_s, 6),
                attempts=t.attempts,
            )
        )
    return listed


async def plan_analysis(
    store: Store,
    plan: Plan,
    states: Mapping[str, StepState] | None = None,
    *,
    now: datetime | None = None,
) -> RunAnalysis | None:
    """Where the latest run of `plan` spent its time; `None` when it never ran.

    Raises:
        NotFoundError: The plan version is not stored.
    """
    started, finished = await store.get_run_times(plan.id, plan.version)
    if started is None:
        return None
    if states is None:
        states = await store.get_step_states(plan.id, plan.version)
    attempts = await store.get_attempts(plan.id, plan.version)
    if not any(s.status is not StepStatus.PENDING for s in states.values()) and not attempts:
        return None
    return analyse_run(plan, states, attempts, started_at=started, finished_at=finished, now=now)
