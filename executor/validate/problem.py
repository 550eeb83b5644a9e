"""`Problem`: one thing wrong with a plan, as every check reports it."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Problem"]


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a plan.

    Attributes:
        step_id: The step it concerns; `None` for plan-level problems.
        code: What kind of problem: `empty_plan`, `too_many_steps`,
            `invalid_step`, `bad_reference`, `duplicate_id`,
            `unknown_dependency`, `unknown_reference`, `invalid_reference`,
            `cycle`, `unknown_tool`, `tool_not_allowed` or `invalid_arguments`.
        message: One sentence: what is wrong and what to fix.
    """

    step_id: str | None
    code: str
    message: str

    def __str__(self) -> str:
        if self.step_id is None:
            return self.message
        return f"step {self.step_id!r}: {self.message}"
