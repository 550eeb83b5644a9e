"""What a view tells its reader to do next, and where a step's output can be read whole.

Plain functions of ids and statuses, importing no model: the views use them,
and so do the command line's read commands, which build no models.
"""

from __future__ import annotations

from executor.status import PlanStatus

__all__ = ["next_action_for", "output_uri"]


def next_action_for(plan_id: str, status: PlanStatus, plan_hash: str) -> str:
    """Say what a caller should do next with a plan in `status`, as the tool call to make."""
    pid = plan_id
    match status:
        case PlanStatus.DRAFT | PlanStatus.AWAITING_CONFIRMATION:
            return (
                f"Review the steps, then call confirm_plan(plan_id={pid!r}, approve=true, "
                f"plan_hash={plan_hash!r}) to approve or approve=false to reject."
            )
        case PlanStatus.CONFIRMED:
            return f"Call execute_plan(plan_id={pid!r})."
        case PlanStatus.EXECUTING:
            return f"Call get_progress(plan_id={pid!r}) to follow it, or cancel_execution to stop."
        case PlanStatus.INTERRUPTED:
            return (
                "A step may or may not have taken effect (see its error) and is not safe to "
                f"repeat unasked: call execute_plan(plan_id={pid!r}, on_interrupted='rerun') to "
                "run it again or on_interrupted='skip' to skip it."
            )
        case PlanStatus.FAILED:
            return (
                f"Read the failed steps' errors; call execute_plan(plan_id={pid!r}) to re-run only "
                "what failed or was skipped, or create_plan for a new plan."
            )
        case PlanStatus.COMPLETED:
            return "Done: read each step's output."
        case PlanStatus.CANCELLED:
            return "Nothing more will run; create_plan makes a new plan."
        case PlanStatus.REJECTED:
            return "It was rejected and never runs; create a new plan (create_plan) to run it."


def output_uri(plan_id: str, step_id: str) -> str:
    """The resource holding a step's whole output."""
    return f"plan://{plan_id}/steps/{step_id}/output"
