"""The PostgreSQL store's statistics: what each tool's attempts add up to, and server events.

The figures are SQLite's (`executor.store.statistics`), taken in SQL over one
snapshot: counts by status, failures by kind, the last failure, and the p50
and p95 of successful calls by nearest rank (the ceil(p x n)-th fastest, by
integer arithmetic), each call timed by its `call_s`, else its span.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

from executor.records import LastFailure, ServerEvent, ToolCallStats
from executor.store.statistics import last_failure, tool_figures

__all__ = [
    "FAILURE_KINDS",
    "INSERT_SERVER_EVENT",
    "LAST_FAILURES",
    "PERCENTILES",
    "TOTALS",
    "figures",
    "server_event_row",
    "server_events_query",
    "window",
]

INSERT_SERVER_EVENT: Final = """
INSERT INTO server_events (owner, server, kind, at, restart, reason)
VALUES (%s, %s, %s, %s, %s, %s)
"""


def server_events_query(server: str | None, since: datetime | None) -> tuple[str, dict[str, Any]]:
    """The query (and its parameters) of `Store.get_server_events`."""
    params: dict[str, Any] = {"server": server, "since": since}
    where = "(%(server)s::text IS NULL OR server = %(server)s)"
    if since is not None:
        # Each owner's last event of each server before `since` says whether it was down.
        where += (
            " AND (at >= %(since)s OR id IN (SELECT max(id) FROM server_events"
            " WHERE at < %(since)s GROUP BY owner, server))"
        )
    query = f'SELECT * FROM server_events WHERE {where} ORDER BY server COLLATE "C", at, id'
    return query, params


def server_event_row(event: ServerEvent) -> tuple[Any, ...]:
    """A server event's row, in the column order of `INSERT_SERVER_EVENT`."""
    return (event.owner, event.server, event.kind.value, event.at, event.restart, event.reason)


def window(
    server: str | None, tool: str | None, since: datetime | None
) -> tuple[str, dict[str, Any]]:
    """The attempts a statistic covers, with their tools and durations, as a CTE named `w`."""
    clauses = ["true"]
    params: dict[str, Any] = {}
    if since is not None:
        clauses.append("a.started_at >= %(since)s")
        params["since"] = since
    if server is not None:
        clauses.append("s.server = %(server)s")
        params["server"] = server
    if tool is not None:
        clauses.append("s.tool = %(tool)s")
        params["tool"] = tool
    cte = f"""
WITH w AS (
    SELECT s.server, s.tool, a.status, a.attempt > 1 AS retry,
           CASE WHEN a.status = 'succeeded' THEN COALESCE(
               a.call_s, extract(epoch FROM a.finished_at - a.started_at)::float8)
           END AS dur,
           a.finished_at, a.plan_id, a.step_id, a.error
    FROM attempts AS a
    JOIN steps AS s USING (plan_id, version, step_id)
    WHERE {" AND ".join(clauses)}
)
"""
    return cte, params


TOTALS: Final = """
SELECT server, tool, count(*) AS calls,
       count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
       count(*) FILTER (WHERE status = 'interrupted') AS interrupted,
       count(*) FILTER (WHERE status = 'running') AS running,
       count(*) FILTER (WHERE retry) AS retries,
       max(dur) AS max_s
FROM w GROUP BY server, tool ORDER BY server COLLATE "C", tool COLLATE "C"
"""

PERCENTILES: Final = """
, ranked AS (
    SELECT server, tool, dur,
           row_number() OVER (PARTITION BY server, tool ORDER BY dur) AS rank,
           count(*) OVER (PARTITION BY server, tool) AS n
    FROM w WHERE dur IS NOT NULL
)
SELECT server, tool,
       max(dur) FILTER (WHERE rank = (n + 1) / 2) AS p50_s,
       max(dur) FILTER (WHERE rank = (95 * n + 99) / 100) AS p95_s
FROM ranked GROUP BY server, tool
"""

FAILURE_KINDS: Final = """
SELECT server, tool, (error::json ->> 'kind') AS kind, count(*) AS n
FROM w WHERE status = 'failed' GROUP BY 1, 2, 3
"""

LAST_FAILURES: Final = """
SELECT DISTINCT ON (server, tool) server, tool, finished_at, plan_id, step_id, error
FROM w WHERE status = 'failed'
ORDER BY server, tool, finished_at DESC NULLS LAST, plan_id COLLATE "C", step_id COLLATE "C"
"""


def figures(
    totals: Sequence[dict[str, Any]],
    percentiles: Sequence[dict[str, Any]],
    kinds_rows: Sequence[dict[str, Any]],
    last_rows: Sequence[dict[str, Any]],
) -> list[ToolCallStats]:
    """Each tool's figures from the rows of the four queries, read in one snapshot.

    The rows are those of `TOTALS`, `PERCENTILES`, `FAILURE_KINDS` and `LAST_FAILURES`.
    """
    ranks = {(r["server"], r["tool"]): r for r in percentiles}
    kinds: dict[tuple[str, str], dict[str, int]] = {}
    for r in kinds_rows:
        kinds.setdefault((r["server"], r["tool"]), {})[r["kind"] or "unknown"] = int(r["n"])
    last: dict[tuple[str, str], LastFailure] = {
        (r["server"], r["tool"]): last_failure(
            r["finished_at"], r["plan_id"], r["step_id"], r["error"]
        )
        for r in last_rows
    }
    stats: list[ToolCallStats] = []
    for r in totals:
        rank = ranks.get((r["server"], r["tool"]), {})
        stats.append(tool_figures(r, kinds, last, p50_s=rank.get("p50_s"), p95_s=rank.get("p95_s")))
    return stats
