"""The graph checks: unique ids, dependencies and references that name steps, no cycle.

`GraphCheck` words what `executor.graph.Graph` finds as problems, saying
where the fix goes (a `depends_on` entry or a `${...}` reference) and naming a
cycle as a path such as `a -> b -> c -> a`. `checked_graph` is the same check
for the run engine, which refuses up front a plan that could never finish.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from executor.errors import PlanValidationError
from executor.graph import Graph
from executor.plan import Step
from executor.validate._utils import MAX_SHOWN, close_matches, or_list, references_by_step
from executor.validate.problem import Problem

__all__ = ["GraphCheck", "checked_graph"]


def checked_graph(steps: Sequence[Step]) -> Graph:
    """The graph of `steps`, which must be a DAG.

    Raises:
        PlanValidationError: Ids repeat, a dependency names no step, or the
            dependencies form a cycle: a plan like that can never finish.
    """
    check = GraphCheck(steps)
    if check.graph.is_dag:
        return check.graph
    problems = check.duplicate_problems()
    for step in steps:
        problems.extend(check.dependency_problems(step))
    problems.extend(check.cycle_problems())
    raise PlanValidationError(list(problems))


class GraphCheck:
    """The problems of one plan's graph, each worded for the step it concerns."""

    def __init__(self, steps: Sequence[Step]) -> None:
        """Build the plan's graph."""
        self.steps = steps
        self.graph = Graph(steps)

    def duplicate_problems(self) -> list[Problem]:
        """One problem per id written more than once."""
        return [
            Problem(
                step_id,
                "duplicate_id",
                f"the id is used by {len(positions)} steps (at positions "
                f"{', '.join(str(p) for p in positions)}): give each step its own id",
            )
            for step_id, positions in self.graph.duplicates.items()
        ]

    def dependency_problems(self, step: Step) -> list[Problem]:
        """The step's dependencies and references that name no step of the plan."""
        index = self.graph.index
        missing = [d for d in step.depends_on if d not in index]
        if not missing:
            return []
        # Step merges referenced ids into depends_on; tell the two apart here,
        # only for the rare step that has a problem, to say where the fix goes.
        refs = references_by_step(step.arguments)
        problems: list[Problem] = []
        for dep in missing:
            if dep in refs:
                path, ref = refs[dep]
                problems.append(
                    Problem(
                        step.id,
                        "unknown_reference",
                        f"the reference '{ref}' in arguments{path} names no step of the "
                        f"plan: {self._instead(dep, step.id)}",
                    )
                )
            else:
                problems.append(
                    Problem(
                        step.id,
                        "unknown_dependency",
                        f"depends_on names {dep!r}, which is no step of the plan: "
                        f"{self._instead(dep, step.id)}",
                    )
                )
        return problems

    def _instead(self, dep: str, own: str) -> str:
        candidates = [i for i in self.graph.index if i != own]
        close = close_matches(dep, candidates)
        if close:
            return f"did you mean {or_list(close)}?"
        return "use the id of an earlier step, or remove it"

    def cycle_problems(self) -> list[Problem]:
        """One problem per cycle, shown as a path with the references that close it."""
        return [self._cycle_problem(cycle) for cycle in self.graph.cycles()]

    def _cycle_problem(self, cycle: list[str]) -> Problem:
        members = set(cycle)
        by_id = {s.id: s for s in self.steps if s.id in members}
        via: list[str] = []
        for here, there in itertools.pairwise(cycle):
            refs = references_by_step(by_id[here].arguments)
            if there in refs:
                via.append(f"{here!r} reads '{refs[there][1]}'")
        if len(via) > MAX_SHOWN:
            via[MAX_SHOWN:] = [f"{len(via) - MAX_SHOWN} more"]
        detail = f" ({'; '.join(via)})" if via else ""
        shown = cycle
        if len(cycle) > 2 * MAX_SHOWN + 1:
            # Keep the message readable; both ends show where the cycle closes.
            hidden = len(cycle) - 2 * MAX_SHOWN
            shown = [*cycle[:MAX_SHOWN], f"({hidden} more steps)", *cycle[-MAX_SHOWN:]]
        if len(set(cycle)) == 1:
            return Problem(
                cycle[0],
                "cycle",
                f"step '{cycle[0]}' depends on itself{detail}: remove '{cycle[0]}' from its "
                "own depends_on and any reference to its own output",
            )
        return Problem(
            cycle[0],
            "cycle",
            f"the steps form a cycle {' -> '.join(shown)}, each depending on the next"
            f"{detail}: remove one of these dependencies or references so the steps "
            "can run in order",
        )
