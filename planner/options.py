"""How the planner plans: one frozen settings object, built once by the face and passed in."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from executor.policy import ModelSettings, ResponseMode
from planner.shortlist import SHORTLIST_SIZE, SHORTLIST_THRESHOLD

__all__ = [
    "DEFAULT_MAX_REPAIRS",
    "DEFAULT_TIMEOUT_S",
    "LOCAL_TIMEOUT_S",
    "PlannerOptions",
]

DEFAULT_MAX_REPAIRS = 2
"""Repair rounds after the first answer, unless configured otherwise."""
DEFAULT_TIMEOUT_S = 120.0
"""Seconds one model call may take, unless configured otherwise."""
LOCAL_TIMEOUT_S = 600.0
"""The default for a model served on this machine: a CPU writes a few tokens a
second, and waiting costs nothing but time."""


class PlannerOptions(BaseModel):
    """Every setting of one planning run; the defaults fit a hosted model.

    The face builds it from the config (`ModelSettings` of the model chosen,
    `limits.max_repairs`) and passes it to the planner, which looks nothing up.
    """

    # defer_build: the schema is built at first use, not at import (read commands import
    # many models and validate few).
    model_config = ConfigDict(frozen=True, defer_build=True, extra="forbid")

    max_repairs: int = Field(default=DEFAULT_MAX_REPAIRS, ge=0, le=20)
    """Repair rounds after the first answer (0: one answer only)."""
    max_tokens: int | None = Field(default=None, ge=1)
    """Most tokens one answer may take; `None` derives it per request from the step
    limit and the tools shown (`planner.schema.answer_budget`)."""
    timeout_s: float = Field(default=DEFAULT_TIMEOUT_S, gt=0)
    """Seconds one model call may take."""
    response_mode: ResponseMode = ResponseMode.AUTO
    """How the answer is constrained (see `ResponseMode`)."""
    ordered_steps: bool = False
    """Fix step ids to `s1, s2, ...` with dependencies on earlier steps only, in the
    decoding constraint (for grammar-constrained local models; see `plan_schema`)."""
    shortlist_size: int = Field(default=SHORTLIST_SIZE, ge=1)
    """Tools kept when the catalog is shortlisted."""
    shortlist_threshold: int = Field(default=SHORTLIST_THRESHOLD, ge=0)
    """Allowed tools above which the catalog is shortlisted."""

    def with_settings(self, settings: ModelSettings) -> PlannerOptions:
        """These options with the fields a user set in `settings` on top."""
        return PlannerOptions.model_validate(
            {**self.model_dump(), **settings.model_dump(exclude_none=True)}
        )
