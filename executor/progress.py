"""The shape of a plan's DAG as the scheduler uses it, and the ETA of a run.

`PlanGraph` is built once per run: a topological order, each step's
dependencies and dependents, and each step's height (the number of steps on
the longest chain from it to a sink), which the scheduler uses as its dispatch
priority so that long chains start first.

The ETA is an estimate, and an honest one: it is `None` whenever any step
still to run has no duration to go by. A step's duration comes from the
store's per-tool history when there is one, else from this run's own mean for
that tool, else from this run's mean over every tool (`DurationModel`). Given
those, the time left is the larger of the remaining critical path and the
remaining work spread over the steps allowed in flight — the two lower bounds
on any schedule, and what a greedy schedule with critical-path priority gets
close to in practice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from executor.errors import PlanValidationError
from executor.plan import Step
from executor.records import ToolStats
from executor.validate import Problem, topological_order

__all__ = ["DurationModel", "PlanGraph", "estimate_remaining_s"]


@dataclass(frozen=True, slots=True)
class PlanGraph:
    """The dependency structure of one plan.

    Attributes:
        order: Step ids in an order where every step follows its dependencies.
        deps: Each step's dependencies.
        dependents: Each step's direct dependents.
        height: Steps on the longest chain from each step to a sink, itself included.
    """

    order: tuple[str, ...]
    deps: Mapping[str, tuple[str, ...]]
    dependents: Mapping[str, tuple[str, ...]]
    height: Mapping[str, int]

    @classmethod
    def of(cls, steps: Sequence[Step]) -> PlanGraph:
        """Build the graph of `steps`.

        Raises:
            PlanValidationError: Ids repeat, a dependency names no step, or the
                dependencies form a cycle — a plan like that can never finish.
        """
        ids = {s.id for s in steps}
        unknown = [(s.id, d) for s in steps for d in s.depends_on if d not in ids]
        if unknown:
            raise PlanValidationError(
                [
                    Problem(
                        sid,
                        "unknown_dependency",
                        f"depends on {dep!r}, which is not a step of the plan: "
                        "remove the dependency or add the step",
                    )
                    for sid, dep in unknown
                ]
            )
        order = topological_order(steps)
        deps = {s.id: tuple(s.depends_on) for s in steps}
        children: dict[str, list[str]] = {s.id: [] for s in steps}
        for s in steps:
            for d in s.depends_on:
                children[d].append(s.id)
        height: dict[str, int] = {}
        for sid in reversed(order):
            height[sid] = 1 + max((height[c] for c in children[sid]), default=0)
        return cls(
            order=tuple(order),
            deps=deps,
            dependents={k: tuple(v) for k, v in children.items()},
            height=height,
        )


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
    graph: PlanGraph, remaining: Mapping[str, float | None], concurrency: int
) -> float | None:
    """Estimate the seconds until every remaining step is done.

    Args:
        graph: The plan's graph.
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
