"""The ETA of a run: expected durations per tool, and the time left along the graph.

`None` whenever a step still to run has no duration to go by (`DurationModel`:
the tool's history, else this run's means); otherwise the larger of the
remaining critical path and the remaining work spread over the steps in flight.
"""

from __future__ import annotations

from collections.abc import Mapping

from executor.graph import Graph
from executor.records import ToolStats

__all__ = ["DurationModel", "estimate_remaining_s"]


class DurationModel:
    """Expected seconds per tool call: history first, then this run's own means."""

    def __init__(self, history: Mapping[tuple[str, str], ToolStats] | None = None) -> None:
        self._history = dict(history or {})
        self._run: dict[tuple[str, str], tuple[int, float]] = {}
        self._run_count = 0
        self._run_total = 0.0

    def observe(self, server: str, tool: str, seconds: float) -> None:
        """Record one successful call of this run."""
        count, total = self._run.get((server, tool), (0, 0.0))
        self._run[(server, tool)] = (count + 1, total + seconds)
        self._run_count += 1
        self._run_total += seconds

    def estimate(self, server: str, tool: str) -> float | None:
        """Expected seconds for one call of `server`'s `tool`, or `None` when nothing is known."""
        stats = self._history.get((server, tool))
        if stats is not None and stats.count > 0:
            return stats.mean_s
        count, total = self._run.get((server, tool), (0, 0.0))
        if count:
            return total / count
        if self._run_count:
            return self._run_total / self._run_count
        return None


def estimate_remaining_s(
    graph: Graph, remaining: Mapping[str, float | None], concurrency: int
) -> float | None:
    """Estimate the seconds until every remaining step is done.

    Args:
        graph: The plan's graph (a DAG).
        remaining: Seconds of work left for each step that is not finished yet
            (`None` where unknown); finished steps are absent.
        concurrency: Steps allowed in flight at once.

    Returns:
        `max(critical path of the remaining steps, remaining work / concurrency)`,
        `0.0` when nothing remains, and `None` when any remaining step's duration
        is unknown.
    """
    if not remaining:
        return 0.0
    work = 0.0
    for value in remaining.values():
        if value is None:
            return None
        work += value
    finish: dict[str, float] = {}
    longest = 0.0
    for sid in graph.order:
        own = remaining.get(sid)
        if own is None:
            continue
        start = max((finish[d] for d in graph.deps[sid] if d in finish), default=0.0)
        end = start + own
        finish[sid] = end
        longest = max(longest, end)
    return max(longest, work / max(concurrency, 1))
