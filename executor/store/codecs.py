"""Rows to models and back, for both stores (SQLite's and PostgreSQL's).

Timestamps are ISO-8601 text in UTC with microseconds, so they sort as text;
structured values are compact JSON. A step's result is not encoded here: it is
stored apart, once (`executor.store.results`).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final, NamedTuple, Protocol

from executor.errors import InternalError, UserError
from executor.ids import PlanId
from executor.plan import Plan, StepError, utc_now
from executor.policy import AgentConfig
from executor.records import AttemptRecord, Event, PlannerAttempt, StepState, ToolStats
from executor.status import PlanStatus
from executor.store.base import LeaseInfo

__all__ = [
    "NewPlanRows",
    "Row",
    "agent_row",
    "attempt_from_row",
    "attempt_row",
    "dumps",
    "duration_row",
    "error_json",
    "event_from_row",
    "event_row",
    "lease_from_row",
    "lease_until",
    "new_plan_rows",
    "now_text",
    "parse_ts",
    "plan_row",
    "planner_attempt_row",
    "plans_from_rows",
    "state_from_row",
    "state_row",
    "tool_stats_from_row",
    "ts",
    "with_status",
]

# ensure_ascii (the default) keeps lone surrogates, which a tool's JSON may carry,
# from failing the UTF-8 encoding sqlite3 applies to text. Encoders are made once:
# `json.dumps` with any option builds a new one per call, which costs microseconds.
_ENCODER: Final = json.JSONEncoder(separators=(",", ":"))
_STRICT_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


class Row(Protocol):
    """A row whose columns are read by name: an `sqlite3.Row`, or a dict from psycopg."""

    def __getitem__(self, key: str, /) -> Any:
        """The column's value."""
        ...


def dumps(value: Any) -> str:
    """Compact JSON."""
    return _ENCODER.encode(value)


def ts(value: datetime | None) -> str | None:
    """Encode a time as sortable ISO-8601 UTC text; a naive time is taken as UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    elif value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat(timespec="microseconds")


def parse_ts(value: str | datetime | None) -> datetime | None:
    """Decode a time encoded by `ts` (or read as a time by the driver), in UTC."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime.fromisoformat(value)


def now_text() -> str:
    """Now, encoded by `ts`: the store's clock."""
    stamp = ts(utc_now())
    assert stamp is not None
    return stamp


def plan_row(plan: Plan, now: str) -> dict[str, Any]:
    """A plan version's row (its steps are rows of their own)."""
    content = plan.model_dump(mode="json", exclude={"steps", "status", "approved_hash"})
    return {
        "plan_id": plan.id,
        "version": plan.version,
        "query": plan.query,
        "strategy": plan.strategy,
        "agent": plan.agent,
        "session_id": plan.session_id,
        "deadline_s": plan.deadline_s,
        "status": plan.status.value,
        "approved_hash": plan.approved_hash,
        "plan_hash": plan.plan_hash,
        "considered_tools": dumps(list(plan.considered_tools)),
        "content": dumps(content),
        "created_at": ts(plan.created_at),
        "updated_at": now,
    }


class NewPlanRows(NamedTuple):
    """What saving a new plan version writes (see `new_plan_rows`)."""

    plan: dict[str, Any]
    """The version's row, as `plan_row` makes it."""
    steps: list[tuple[Any, ...]]
    """A row per step, in the column order of `INSERT_STEP`."""
    states: list[tuple[Any, ...]]
    """A pending state per step, in the column order of `UPSERT_STATE`."""


def new_plan_rows(plan: Plan, now: str) -> NewPlanRows:
    """The rows of a new plan version: the version, its steps and their pending states.

    Raises:
        UserError: Two steps share an id.
    """
    duplicates = sorted(i for i, n in Counter(s.id for s in plan.steps).items() if n > 1)
    if duplicates:
        raise UserError(
            f"plan {plan.id!r} has duplicate step ids {duplicates}: give each step its own id"
        )
    steps = [
        (plan.id, plan.version, s.id, i, s.server, s.tool, dumps(s.model_dump(mode="json")))
        for i, s in enumerate(plan.steps)
    ]
    states = [
        state_row(StepState(plan_id=plan.id, version=plan.version, step_id=s.id), now)
        for s in plan.steps
    ]
    return NewPlanRows(plan_row(plan, now), steps, states)


def with_status(plan: Plan, status: PlanStatus, approved_hash: str | None) -> Plan:
    """The stored `plan` as a status change left it (an approval records its hash)."""
    update: dict[str, Any] = {"status": status}
    if approved_hash is not None:
        update["approved_hash"] = approved_hash
    return plan.model_copy(update=update)


def agent_row(agent: AgentConfig, now: str) -> tuple[Any, ...]:
    """An agent's row: name, content, created and updated (an upsert keeps the first)."""
    return (agent.name, dumps(agent.model_dump(mode="json")), now, now)


def planner_attempt_row(attempt: PlannerAttempt) -> tuple[Any, ...]:
    """A planning-model call's row, in the column order of `planner_attempts`."""
    return (
        attempt.plan_id,
        attempt.attempt,
        attempt.model,
        attempt.prompt_tokens,
        attempt.completion_tokens,
        attempt.latency_s,
        dumps(list(attempt.errors)),
        ts(attempt.at),
    )


def tool_stats_from_row(row: Row) -> ToolStats:
    """A tool's duration statistics from its `tool_stats` row."""
    return ToolStats(
        server=row["server"],
        tool=row["tool"],
        count=row["count"],
        mean_s=row["mean_s"],
        m2=row["m2"],
        last_s=row["last_s"],
    )


def _fast_json(value: Any) -> str | None:
    """`value` as compact JSON when it is plain JSON already, else `None`.

    On the hot path (every transition of every step) this skips pydantic's
    `model_dump(mode="json")`, which costs several times more. Anything plain JSON
    cannot say as pydantic would (bytes, datetimes, models, NaN or infinities) makes
    the caller fall back to pydantic, so what is stored is the same either way.
    """
    try:
        return _STRICT_ENCODER.encode(value)
    except (TypeError, ValueError):
        return None


def error_json(error: StepError | None) -> str | None:
    """A step's or an attempt's error as JSON, or `None`."""
    if error is None:
        return None
    # Both fields are plain text (the kind a str enum): no fallback is needed.
    return dumps({"kind": error.kind.value, "message": error.message})


def _output_json(state: StepState) -> str:
    if state.summary is not None and not state.summary.inline:
        return "null"  # kept once, in the result table
    fast = _fast_json(state.output)
    if fast is not None:
        return fast
    return dumps(state.model_dump(mode="json", include={"output"})["output"])


def state_row(state: StepState, now: str) -> tuple[Any, ...]:
    """A step state's row, in the column order of `sql.UPSERT_STATE`."""
    return (
        state.plan_id,
        state.version,
        state.step_id,
        state.status.value,
        state.attempts,
        _output_json(state),
        None,  # the result goes to step_results (`results.result_rows`)
        error_json(state.error),
        ts(state.started_at),
        ts(state.finished_at),
        now,
        None if state.summary is None else dumps(state.summary.model_dump(mode="json")),
        None if state.skip_reason is None else state.skip_reason.value,
    )


def attempt_row(record: AttemptRecord) -> tuple[Any, ...]:
    """An attempt's row, in the column order of `sql.UPSERT_ATTEMPT`."""
    return (
        record.plan_id,
        record.version,
        record.step_id,
        record.attempt,
        record.status.value,
        ts(record.started_at),
        ts(record.finished_at),
        error_json(record.error),
        record.call_s,
        record.task_id,
    )


def event_row(event: Event) -> tuple[Any, ...]:
    """An event's row, in the column order of `sql.INSERT_EVENT` (its seq is the store's)."""
    data = _fast_json(event.data)
    if data is None:
        data = dumps(event.model_dump(mode="json", include={"data"})["data"])
    return (event.plan_id, event.kind.value, event.step_id, ts(event.at), data)


def duration_row(server: str, tool: str, seconds: float, now: str) -> tuple[Any, ...]:
    """A successful call's duration, as `sql.FOLD_DURATION` folds it into the tool's stats."""
    if not (isinstance(seconds, int | float) and math.isfinite(seconds) and seconds >= 0):
        raise InternalError(
            f"duration of {server}.{tool} must be a finite number of seconds >= 0, got {seconds!r}"
        )
    return (server, tool, float(seconds), now)


def state_from_row(row: Row) -> StepState:
    """A step state from its row (without its result, kept apart)."""
    return StepState.model_validate(
        {
            "plan_id": row["plan_id"],
            "version": row["version"],
            "step_id": row["step_id"],
            "status": row["status"],
            "attempts": row["attempts"],
            "output": json.loads(row["output"]),
            "result": None if row["result"] is None else json.loads(row["result"]),
            "summary": None if row["summary"] is None else json.loads(row["summary"]),
            "error": None if row["error"] is None else json.loads(row["error"]),
            "skip_reason": row["skip_reason"],
            "started_at": parse_ts(row["started_at"]),
            "finished_at": parse_ts(row["finished_at"]),
        }
    )


def attempt_from_row(row: Row) -> AttemptRecord:
    """An attempt from its row."""
    return AttemptRecord.model_validate(
        {
            "plan_id": row["plan_id"],
            "version": row["version"],
            "step_id": row["step_id"],
            "attempt": row["attempt"],
            "status": row["status"],
            "started_at": parse_ts(row["started_at"]),
            "finished_at": parse_ts(row["finished_at"]),
            "error": None if row["error"] is None else json.loads(row["error"]),
            "call_s": row["call_s"],
            "task_id": row["task_id"],
        }
    )


def event_from_row(row: Row) -> Event:
    """An event from its row."""
    return Event.model_validate(
        {
            "seq": row["seq"],
            "plan_id": row["plan_id"],
            "kind": row["kind"],
            "step_id": row["step_id"],
            "at": parse_ts(row["at"]),
            "data": json.loads(row["data"]),
        }
    )


def lease_from_row(row: Row, now: datetime) -> LeaseInfo:
    """A plan version's lease from its row, lapsed or not at `now`."""
    until = parse_ts(row["lease_until"])
    return LeaseInfo(
        plan_id=PlanId(row["plan_id"]),
        version=int(row["version"]),
        owner=row["lease_owner"],
        until=until,
        cancel_requested_at=parse_ts(row["cancel_requested_at"]),
        lapsed=until is None or until <= now,
    )


def plans_from_rows(rows: Sequence[Row]) -> list[Plan]:
    """Rebuild plans from rows of `sql.PLAN_SELECT`: one row per step, grouped by plan."""
    plans: list[Plan] = []
    key: tuple[str, int] | None = None
    head: Row | None = None
    steps: list[Any] = []

    def flush() -> None:
        if head is None:
            return
        content = json.loads(head["content"])
        content["steps"] = steps
        content["status"] = head["status"]
        content["approved_hash"] = head["approved_hash"]
        plans.append(Plan.model_validate(content))

    for row in rows:
        row_key = (row["plan_id"], row["version"])
        if row_key != key:
            flush()
            key, head, steps = row_key, row, []
        if row["step_content"] is not None:
            steps.append(json.loads(row["step_content"]))
    flush()
    return plans


def lease_until(now: str, lease_s: float) -> str:
    """When a lease taken or renewed at `now` (text of `ts`) expires, as text."""
    until = ts(datetime.fromisoformat(now) + timedelta(seconds=lease_s))
    assert until is not None
    return until
