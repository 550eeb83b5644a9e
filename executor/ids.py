"""Types that only name things."""

from __future__ import annotations

from typing import NewType

__all__ = ["PlanId", "StepId"]

PlanId = NewType("PlanId", str)
"""A plan's id; every version of the plan shares it."""

StepId = NewType("StepId", str)
"""A step's id, unique within one plan."""
