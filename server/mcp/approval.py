"""The approval dialog: `execute_plan` on an unapproved plan asks the user through the host.

When the host supports form elicitation, the SDK's `Resolve`/`Elicit` asks
before the tool body runs (a mid-call request on 2025-11-25, an
`InputRequiredResult` round on 2026-07-28). The question is
`server.approval.approval_text`; the answer approves the hash the question
showed and nothing else, even if a new version appeared since.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from mcp.server.mcpserver import (
    AcceptedElicitation,
    CancelledElicitation,
    Context,
    DeclinedElicitation,
    Elicit,
    ElicitationResult,
)
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field

from executor import Catalog, PlanStatus, TaskorchError
from server.approval import approval_text
from server.mcp.server import orchestrator_of
from server.service import TaskOrchestrator

__all__ = ["ApprovalForm", "answer_asked", "ask_approval", "can_elicit"]


class ApprovalForm(BaseModel):
    """What the host's approval dialog asks."""

    approve: bool = Field(description="Run this plan now?")
    reason: str = Field(default="", description="Why (optional, kept with the plan).")


# The hash the approval question showed, for the tool body of the same request.
_ASKED_HASH: ContextVar[str | None] = ContextVar("taskorch_asked_hash", default=None)


def can_elicit(ctx: Context[Any, Any]) -> bool:
    """Whether the host declared form elicitation on this session."""
    caps = ctx.client_capabilities
    elicitation = caps.elicitation if caps is not None else None
    # A bare `elicitation: {}` (before modes existed) means form support; url-only does not.
    return elicitation is not None and (elicitation.form is not None or elicitation.url is None)


async def ask_approval(plan_id: str, ctx: Context[Any, Any]) -> Elicit[ApprovalForm] | None:
    """Ask the user to approve `plan_id` when it needs it and the host can ask."""
    _ASKED_HASH.set(None)
    if not can_elicit(ctx):
        return None
    orch = orchestrator_of(ctx)
    try:
        plan = await orch.load_plan(plan_id)
    except TaskorchError:
        return None  # the tool body reports the problem
    if plan.status not in (PlanStatus.DRAFT, PlanStatus.AWAITING_CONFIRMATION):
        return None
    try:
        catalog = await orch.catalog()
    except TaskorchError:
        catalog = Catalog()  # every step is then shown with its effects unknown
    _ASKED_HASH.set(plan.plan_hash)
    return Elicit(approval_text(plan, catalog), ApprovalForm)


async def answer_asked(
    orch: TaskOrchestrator, plan_id: str, answer: ElicitationResult[ApprovalForm] | None
) -> str | None:
    """Record the user's answer to the question asked, if one was.

    Returns:
        Why the plan must not run (declined or rejected), or `None` to go on.

    Raises:
        ToolError: The dialog was dismissed: the plan still awaits confirmation.
    """
    if isinstance(answer, DeclinedElicitation):
        asked = _ASKED_HASH.get()
        await orch.confirm_task_plan(plan_id, False, asked, "declined in the host")
        return "The user declined; the plan is rejected."
    if isinstance(answer, CancelledElicitation):
        raise ToolError(
            "the approval dialog was dismissed: the plan still awaits confirmation; "
            f"call confirm_plan(plan_id={plan_id!r}) once the user agrees"
        )
    if isinstance(answer, AcceptedElicitation) and isinstance(answer.data, ApprovalForm):
        form = answer.data
        reason = form.reason or ("approved" if form.approve else "rejected")
        await orch.confirm_task_plan(plan_id, form.approve, _ASKED_HASH.get(), reason)
        if not form.approve:
            return "The user rejected the plan."
    return None
