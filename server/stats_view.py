"""What `get_stats`, the `stats://` resources and `taskorch stats` show of `executor.stats`.

Pure functions of a `Stats`: the bounded answer of the tool, the JSON of the
resources, a Mermaid bar chart of the slowest tools, and the rows of the CLI's
tables. Tool and server names come from the config and downstream servers, so
whatever goes into Mermaid is reduced to characters that cannot break out of a
label.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

import pydantic_core
from pydantic import BaseModel, ConfigDict

from executor.records import ToolCallStats
from executor.stats import ServerCallStats, Stats

__all__ = [
    "RESOURCE_ROWS",
    "StatsView",
    "render_stats_chart",
    "render_stats_json",
    "server_rows",
    "stats_view",
    "tool_rows",
]

RESOURCE_ROWS = 50
"""Most tools (or servers) a `stats://` resource lists; the rest are counted."""

_CHART_TOOLS = 15
_T = TypeVar("_T")
_LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9 _./()+=@-]+")


class StatsView(BaseModel):
    """The answer of `get_stats`: figures per tool and per server over a window."""

    model_config = ConfigDict(frozen=True)

    since: datetime | None
    """Start of the window (attempts started from then on); null: everything recorded."""
    until: datetime
    """When the figures were taken."""
    tools: list[ToolCallStats]
    """Per tool: attempts by outcome, retries, failures by error kind, the last
    failure, and p50 / p95 / max seconds of successful calls. Least reliable first
    (failure rate), then slowest first (p95)."""
    tools_omitted: int = 0
    """Tools left out to keep the answer short (those last in that order)."""
    servers: list[ServerCallStats]
    """Per server: attempts, failures, restarts and seconds down. Least reliable first."""
    servers_omitted: int = 0
    """Servers left out to keep the answer short."""


def _within(build: Callable[[int], _T], size: Callable[[_T], int], rows: int, budget: int) -> _T:
    """`build(n)` for the largest n, halving from `rows`, whose `size` fits `budget`."""
    while True:
        built = build(rows)
        if rows == 0 or size(built) <= budget:
            return built
        rows //= 2


def stats_view(stats: Stats, *, limit: int, budget_bytes: int | None = None) -> StatsView:
    """The bounded answer: at most `limit` tools and `limit` servers, the rest counted.

    With `budget_bytes`, fewer rows (halving) until the answer — which crosses MCP
    twice, as structured content and as text — fits it.
    """

    def build(n: int) -> StatsView:
        return StatsView(
            since=stats.since,
            until=stats.until,
            tools=stats.tools[:n],
            tools_omitted=max(len(stats.tools) - n, 0),
            servers=stats.servers[:n],
            servers_omitted=max(len(stats.servers) - n, 0),
        )

    if budget_bytes is None:
        return build(limit)
    return _within(build, lambda v: 2 * len(pydantic_core.to_json(v)), limit, budget_bytes)


def render_stats_json(stats: Stats, which: str, *, budget_bytes: int | None = None) -> str:
    """The `stats://tools` or `stats://servers` resource: indented JSON, bounded.

    At most `RESOURCE_ROWS` rows, and (with `budget_bytes`) fewer until it fits.
    """
    rows: list[ToolCallStats] | list[ServerCallStats] = (
        stats.tools if which == "tools" else stats.servers
    )

    def build(n: int) -> str:
        body = {
            "since": None if stats.since is None else stats.since.isoformat(),
            "until": stats.until.isoformat(),
            which: [r.model_dump(mode="json") for r in rows[:n]],
            "omitted": max(len(rows) - n, 0),
        }
        return json.dumps(body, indent=2, ensure_ascii=False)

    if budget_bytes is None:
        return build(RESOURCE_ROWS)
    return _within(build, lambda text: len(text.encode()), RESOURCE_ROWS, budget_bytes)


def _label(text: str, limit: int = 40) -> str:
    # Inside a quoted xychart label a quote, bracket or comma would end it early.
    flat = " ".join(_LABEL_UNSAFE.sub(" ", text).split())
    return flat[:limit].rstrip() or "tool"


def _seconds(value: float) -> str:
    return f"{value:.4f}".rstrip("0").rstrip(".") or "0"


def render_stats_chart(stats: Stats, *, shown: int = _CHART_TOOLS) -> str:
    """The `stats://chart` resource: a Mermaid bar chart of p95 seconds per tool.

    The slowest `shown` tools by p95, slowest first, as bars, with their p50 as a
    line; tools without a successful call are left out (they have no duration).
    """
    timed = sorted(
        (t for t in stats.tools if t.p95_s is not None),
        key=lambda t: (-(t.p95_s or 0.0), t.server, t.tool),
    )[:shown]
    window = "all recorded" if stats.since is None else f"since {stats.since:%Y-%m-%d %H:%M} UTC"
    lines = ["xychart-beta", f'    title "Slowest tools: p95 bars, p50 line, seconds ({window})"']
    if not timed:
        lines += ['    x-axis ["no successful calls yet"]', "    bar [0]"]
        return "\n".join(lines) + "\n"
    names = ", ".join(f'"{_label(f"{t.server}.{t.tool}")}"' for t in timed)
    top = max(t.p95_s or 0.0 for t in timed)
    lines += [
        f"    x-axis [{names}]",
        f'    y-axis "seconds" 0 --> {_seconds(top * 1.1 or 1.0)}',
        f"    bar [{', '.join(_seconds(t.p95_s or 0.0) for t in timed)}]",
        f"    line [{', '.join(_seconds(t.p50_s or 0.0) for t in timed)}]",
    ]
    return "\n".join(lines) + "\n"


def _s(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _kinds(counts: dict[str, int]) -> str:
    return ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def tool_rows(stats: Stats) -> list[tuple[str, ...]]:
    """One row of text per tool for `taskorch stats`, in the answer's order.

    Columns: tool, calls, ok, failed (by kind), retries, p50, p95, max, last failure.
    """
    rows: list[tuple[str, ...]] = []
    for t in stats.tools:
        failed = str(t.failed) + (f" ({_kinds(t.failed_by_kind)})" if t.failed else "")
        last = t.last_failure
        when = f"{last.at:%Y-%m-%d %H:%M:%S}" if last is not None and last.at else ""
        rows.append(
            (
                f"{t.server}.{t.tool}",
                str(t.calls),
                str(t.succeeded),
                failed,
                str(t.retries),
                _s(t.p50_s),
                _s(t.p95_s),
                _s(t.max_s),
                f"{when} {last.kind}: {last.message}".strip() if last is not None else "",
            )
        )
    return rows


def server_rows(stats: Stats) -> list[tuple[str, ...]]:
    """One row of text per server for `taskorch stats`: calls, failed, restarts, down."""
    rows: list[tuple[str, ...]] = []
    for s in stats.servers:
        down = _s(s.down_s) if s.down_s else "0"
        if s.down_now:
            down += " (down now)"
        rows.append(
            (
                s.server,
                str(s.calls),
                str(s.failed),
                f"{s.failure_rate:.0%}",
                str(s.restarts),
                down,
                s.last_down_reason or "",
            )
        )
    return rows
