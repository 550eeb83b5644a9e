"""`validate_plan`: every static check of a plan, before anything runs.

Every problem is reported at once, each naming its step and saying what to fix
in one sentence, so that a person can read the list and a planning model can
repair its plan from it in one round. The checks, in order: size, unique ids
and the graph (`executor.validate.graph`), tools and policy
(`executor.validate.tools`), arguments (`executor.validate.arguments`) and
references against output schemas (`executor.validate.references`).
"""

from __future__ import annotations

from collections.abc import Sequence

from executor.catalog import Catalog
from executor.plan import Step
from executor.policy import ToolPolicy
from executor.validate.graph import GraphCheck
from executor.validate.problem import Problem
from executor.validate.references import ReferenceCheck
from executor.validate.tools import ToolCheck

__all__ = ["validate_plan"]


def validate_plan(
    steps: Sequence[Step],
    catalog: Catalog | None = None,
    policy: ToolPolicy | None = None,
    *,
    max_steps: int | None = None,
) -> list[Problem]:
    """Check a plan statically and return every problem found.

    Args:
        steps: The plan's steps, in the order written.
        catalog: The tools that exist; when given, every step's tool must be in
            it and its arguments must fit the tool's `inputSchema`.
        policy: The agent's tool policy; when given, every tool must be allowed.
        max_steps: Most steps the plan may have.

    Returns:
        The problems, plan-level ones first and then by step in plan order;
        empty when the plan is valid.
    """
    if not steps:
        return [Problem(None, "empty_plan", "the plan has no steps: add at least one step")]
    problems: list[Problem] = []
    if max_steps is not None and len(steps) > max_steps:
        problems.append(
            Problem(
                None,
                "too_many_steps",
                f"the plan has {len(steps)} steps but at most {max_steps} are allowed: "
                "merge or drop steps, or split the work into several plans",
            )
        )
    graph = GraphCheck(steps)
    problems.extend(graph.duplicate_problems())
    tools = ToolCheck(catalog, policy) if catalog is not None or policy is not None else None
    references = ReferenceCheck(catalog) if catalog is not None else None
    producers = {step_id: steps[pos] for step_id, pos in graph.graph.index.items()}
    for step in steps:
        problems.extend(graph.dependency_problems(step))
        if tools is not None:
            problems.extend(tools.check(step))
        if references is not None and step.depends_on:
            # A step without dependencies holds no reference.
            problems.extend(references.problems(step, producers))
    problems.extend(graph.cycle_problems())
    return problems
