"""The SQLite store's statistics: what each tool's attempts add up to, and server events.

The rows of server events, and a last failure, are built here for both stores.

Per-tool figures take one pass over the attempts and one sort: the attempts of
the window are copied, sorted by tool and duration, into a temporary table, so
that a percentile is a row looked up by its position. These reads run on a
connection of their own (see `SqliteStore`), never holding up a run's commits.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from typing import Any, Final

from executor.ids import PlanId
from executor.plan import utc_now
from executor.records import LastFailure, ServerEvent, ToolCallStats
from executor.store.codecs import Row, parse_ts, ts

__all__ = [
    "INSERT_SERVER_EVENT",
    "last_failure",
    "server_event_from_row",
    "server_event_row",
    "server_events_query",
    "tool_call_stats",
    "tool_figures",
]

_FAILURE_MESSAGE_CHARS: Final = 300

INSERT_SERVER_EVENT: Final = (
    "INSERT INTO server_events (owner, server, kind, at, restart, reason) VALUES (?, ?, ?, ?, ?, ?)"
)


def server_event_row(event: ServerEvent) -> tuple[Any, ...]:
    """A server event's row, in the column order of `INSERT_SERVER_EVENT`."""
    return (
        event.owner,
        event.server,
        event.kind.value,
        ts(event.at),
        int(event.restart),
        event.reason,
    )


def server_event_from_row(row: Row) -> ServerEvent:
    """A server event from its row."""
    return ServerEvent(
        owner=row["owner"],
        server=row["server"],
        kind=row["kind"],
        at=parse_ts(row["at"]) or utc_now(),
        restart=bool(row["restart"]),
        reason=row["reason"],
    )


def server_events_query(server: str | None, since: datetime | None) -> tuple[str, dict[str, Any]]:
    """The query (and its parameters) of `Store.get_server_events`."""
    params: dict[str, Any] = {"server": server, "since": ts(since)}
    where = "(:server IS NULL OR server = :server)"
    if since is not None:
        where += (
            " AND (at >= :since OR id IN (SELECT max(id) FROM server_events"
            " WHERE at < :since GROUP BY owner, server))"
        )
    return f"SELECT * FROM server_events WHERE {where} ORDER BY server, at, id", params


# CROSS JOIN keeps attempts the outer loop (read in table order, or by start time for
# a window, each step looked up by its key): the planner's default, steps by tool then
# attempts at random, is several times slower, even for one server's tools.
#
# The attempts of the chosen window with their tools, sorted by tool and duration: a
# tool's rows are consecutive, its attempts without a duration (those that did not
# succeed) first, so its k-th fastest successful call is at id first + (n_all - n_ok)
# + k - 1. A successful attempt's duration is its own call time; rows from before
# `call_s` existed fall back to the attempt's span. Failure details are kept for failed
# attempts only.
_DROP_TOOL_ATTEMPTS: Final = "DROP TABLE IF EXISTS temp.stats_tool_attempts"

_CREATE_TOOL_ATTEMPTS: Final = """
CREATE TEMP TABLE stats_tool_attempts (
    id INTEGER PRIMARY KEY,
    server TEXT NOT NULL,
    tool TEXT NOT NULL,
    status TEXT NOT NULL,
    retry INTEGER NOT NULL,
    dur REAL,
    kind TEXT,
    failed_at TEXT,
    plan_id TEXT,
    step_id TEXT,
    error TEXT
)
"""

_FILL_TOOL_ATTEMPTS: Final = """
INSERT INTO temp.stats_tool_attempts
    (server, tool, status, retry, dur, kind, failed_at, plan_id, step_id, error)
SELECT s.server, s.tool, a.status, a.attempt > 1,
       CASE WHEN a.status = 'succeeded' THEN COALESCE(
           a.call_s, (julianday(a.finished_at) - julianday(a.started_at)) * 86400.0)
       END AS dur,
       CASE WHEN a.status = 'failed' THEN json_extract(a.error, '$.kind') END,
       CASE WHEN a.status = 'failed' THEN a.finished_at END,
       CASE WHEN a.status = 'failed' THEN a.plan_id END,
       CASE WHEN a.status = 'failed' THEN a.step_id END,
       CASE WHEN a.status = 'failed' THEN a.error END
FROM attempts AS a
CROSS JOIN steps AS s
    ON s.plan_id = a.plan_id AND s.version = a.version AND s.step_id = a.step_id
WHERE {where}
ORDER BY s.server, s.tool, dur
"""

_TOOL_TOTALS: Final = """
SELECT server, tool, min(id) AS first, count(*) AS calls, count(dur) AS n_ok,
       sum(status = 'succeeded') AS succeeded, sum(status = 'failed') AS failed,
       sum(status = 'cancelled') AS cancelled, sum(status = 'interrupted') AS interrupted,
       sum(status = 'running') AS running, sum(retry) AS retries, max(dur) AS max_s
FROM temp.stats_tool_attempts
GROUP BY server, tool
ORDER BY server, tool
"""

_TOOL_FAILURE_KINDS: Final = """
SELECT server, tool, kind, count(*) AS n
FROM temp.stats_tool_attempts WHERE status = 'failed'
GROUP BY server, tool, kind
"""

_TOOL_LAST_FAILURES: Final = """
SELECT server, tool, failed_at, plan_id, step_id, error FROM (
    SELECT *, row_number() OVER (
        PARTITION BY server, tool ORDER BY failed_at DESC, plan_id, step_id
    ) AS rn
    FROM temp.stats_tool_attempts WHERE status = 'failed'
) WHERE rn = 1
"""

_DURATION_AT: Final = "SELECT dur FROM temp.stats_tool_attempts WHERE id = ?"


def tool_call_stats(
    conn: sqlite3.Connection,
    *,
    server: str | None,
    tool: str | None,
    since: datetime | None,
) -> list[ToolCallStats]:
    """Each tool's figures over the attempts of the window (run on the worker thread)."""
    clauses = ["1"]
    params: dict[str, Any] = {}
    if since is not None:
        clauses.append("a.started_at >= :since")
        params["since"] = ts(since)
    if server is not None:
        clauses.append("s.server = :server")
        params["server"] = server
    if tool is not None:
        clauses.append("s.tool = :tool")
        params["tool"] = tool
    conn.execute(_DROP_TOOL_ATTEMPTS)
    conn.execute(_CREATE_TOOL_ATTEMPTS)
    try:
        conn.execute(_FILL_TOOL_ATTEMPTS.format(where=" AND ".join(clauses)), params)
        return _from_filled(conn)
    finally:
        conn.execute(_DROP_TOOL_ATTEMPTS)


def _from_filled(conn: sqlite3.Connection) -> list[ToolCallStats]:
    """Build each tool's figures from the filled `stats_tool_attempts`."""
    kinds: dict[tuple[str, str], dict[str, int]] = {}
    for server, tool, kind, n in conn.execute(_TOOL_FAILURE_KINDS):
        kinds.setdefault((server, tool), {})[kind or "unknown"] = n
    last = {
        (server, tool): last_failure(failed_at, plan_id, step_id, error_text)
        for server, tool, failed_at, plan_id, step_id, error_text in conn.execute(
            _TOOL_LAST_FAILURES
        )
    }

    def nth_fastest(first_ok: int, k: int) -> float | None:
        row = conn.execute(_DURATION_AT, (first_ok + k - 1,)).fetchone()
        return None if row is None else float(row[0])

    stats: list[ToolCallStats] = []
    for r in conn.execute(_TOOL_TOTALS).fetchall():
        n_ok = int(r["n_ok"])
        first_ok = int(r["first"]) + int(r["calls"]) - n_ok
        stats.append(
            tool_figures(
                r,
                kinds,
                last,
                # Nearest rank: the p-th percentile is the ceil(p * n)-th fastest.
                p50_s=nth_fastest(first_ok, (n_ok + 1) // 2) if n_ok else None,
                p95_s=nth_fastest(first_ok, (95 * n_ok + 99) // 100) if n_ok else None,
            )
        )
    return stats


def tool_figures(
    totals: Row,
    kinds: dict[tuple[str, str], dict[str, int]],
    last: dict[tuple[str, str], LastFailure],
    *,
    p50_s: float | None,
    p95_s: float | None,
) -> ToolCallStats:
    """A tool's figures from its row of totals, its failures by kind, its last failure.

    The row has `server`, `tool`, `calls`, `succeeded`, `failed`, `cancelled`,
    `interrupted`, `running`, `retries` and `max_s`; each store computes the
    percentiles its own way.
    """
    key = (totals["server"], totals["tool"])
    succeeded, failed = int(totals["succeeded"]), int(totals["failed"])
    ended = succeeded + failed
    return ToolCallStats(
        server=totals["server"],
        tool=totals["tool"],
        calls=int(totals["calls"]),
        succeeded=succeeded,
        failed=failed,
        cancelled=int(totals["cancelled"]),
        interrupted=int(totals["interrupted"]),
        running=int(totals["running"]),
        retries=int(totals["retries"]),
        failure_rate=failed / ended if ended else 0.0,
        failed_by_kind=dict(sorted(kinds.get(key, {}).items())),
        p50_s=p50_s,
        p95_s=p95_s,
        max_s=totals["max_s"],
        last_failure=last.get(key),
    )


def last_failure(
    failed_at: str | datetime | None, plan_id: str, step_id: str, error_text: str | None
) -> LastFailure:
    """A tool's last failure, from the row of its failed attempt."""
    error = json.loads(error_text) if error_text else {}
    return LastFailure(
        at=parse_ts(failed_at),
        kind=str(error.get("kind") or "unknown"),
        message=_cut(str(error.get("message") or ""), _FAILURE_MESSAGE_CHARS),
        plan_id=PlanId(plan_id),
        step_id=step_id,
    )


def _cut(text: str, limit: int) -> str:
    # The first line says what happened; what follows (a server's stderr) stays with
    # the step's error in the plan.
    flat = " ".join(text.strip().split("\n", 1)[0].split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
