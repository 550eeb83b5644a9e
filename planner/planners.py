"""The `Planner` protocol and the planners that implement it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from executor.errors import PlanValidationError
from executor.validate import Problem, parse_steps, validate_plan
from planner.backends import ModelBackend
from planner.models import PlanDraft, PlanRequest
from planner.options import PlannerOptions
from planner.repair import AttemptCallback, plan_with_repair

__all__ = ["CALLER_MODEL", "ModelPlanner", "Planner", "StepsPlanner"]

_FOLLOW_ON = frozenset({"unknown_dependency", "unknown_reference", "empty_plan"})

CALLER_MODEL = "caller"
"""`PlanDraft.model` of a plan whose steps the caller wrote."""


class Planner(Protocol):
    """Turns a `PlanRequest` into a validated `PlanDraft`."""

    async def plan(
        self, request: PlanRequest, *, on_attempt: AttemptCallback | None = None
    ) -> PlanDraft:
        """Make a plan.

        Args:
            request: What to plan, for which agent, over which catalog.
            on_attempt: Awaited with the record of each model call (none for
                caller-written steps).

        Raises:
            PlanValidationError: No valid plan came of it; the problems say why.
            PlannerError: The model could not be used.
        """


class ModelPlanner:
    """Plans with a model backend, repairing invalid answers up to `options.max_repairs` times."""

    def __init__(self, backend: ModelBackend, options: PlannerOptions | None = None) -> None:
        """Plan through `backend`.

        Args:
            backend: The model (`LiteLLMBackend`, `SamplingBackend`, ...).
            options: Repairs, answer budget, ordered ids, shortlist; the defaults
                when `None`. (`timeout_s` and `response_mode` are the backend's:
                whoever builds it passes them.)
        """
        self.backend = backend
        self.options = PlannerOptions() if options is None else options

    async def plan(
        self, request: PlanRequest, *, on_attempt: AttemptCallback | None = None
    ) -> PlanDraft:
        """Ask, validate, repair; see `plan_with_repair`."""
        return await plan_with_repair(self.backend, request, self.options, on_attempt=on_attempt)


class StepsPlanner:
    """The caller wrote the steps: validate them, no model involved.

    The request's query and agent still apply (the agent's policy and step
    limit are enforced); its history and revision are not used.
    """

    def __init__(self, steps: Sequence[Mapping[str, Any]], *, strategy: str = "") -> None:
        """Hold the caller's steps.

        Args:
            steps: One JSON object per step, in the shape `create_plan` takes.
            strategy: The caller's account of the plan, if it gave one.
        """
        self.steps = list(steps)
        self.strategy = strategy

    async def plan(
        self, request: PlanRequest, *, on_attempt: AttemptCallback | None = None
    ) -> PlanDraft:
        """Validate the steps against the request's catalog and the agent's policy.

        Raises:
            PlanValidationError: Every problem found, each naming its step.
        """
        steps, problems = parse_steps(self.steps)
        agent = request.agent
        checked = validate_plan(
            steps, request.catalog, agent.tool_policy, max_steps=agent.limits.max_steps
        )
        if problems:
            # Steps that failed to parse were left out; dependencies on them are noise.
            checked = [p for p in checked if p.code not in _FOLLOW_ON]
        every: list[Problem] = [*problems, *checked]
        if every:
            raise PlanValidationError(list(every))
        return PlanDraft(
            strategy=self.strategy.strip() or _default_strategy(request.query, len(steps)),
            steps=tuple(steps),
            model=CALLER_MODEL,
            attempts=0,
        )


def _default_strategy(query: str, count: int) -> str:
    noun = "step" if count == 1 else "steps"
    return f"Caller-written plan of {count} {noun} for: {query.strip()}"
