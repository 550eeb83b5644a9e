"""Types that only name things."""

from __future__ import annotations

from typing import Final, NewType

__all__ = ["BUILTIN_SERVER", "PlanId", "StepId"]

BUILTIN_SERVER: Final = "taskorch"
"""The reserved server name of the built-in steps; no configured server may take it."""

PlanId = NewType("PlanId", str)
"""A plan's id; every version of the plan shares it."""

StepId = NewType("StepId", str)
"""A step's id, unique within one plan."""
