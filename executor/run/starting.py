"""The rules of starting a plan: who may run, what a re-run resets, what a decision writes.

A plan runs only when approved for its current content. Executing a `failed`
plan again re-runs only its failed, skipped and cancelled steps; succeeded
steps, and steps skipped by decision, are never run again. An interrupted
step waits for a decision (`on_interrupted`): `"rerun"` calls it again (its
side effect may happen twice), `"skip"` treats it as done without an output,
for good. A mapping `{step_id: "rerun" | "skip"}` decides step by step.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Literal, TypeAlias

from executor.errors import ApprovalError, ErrorKind, NotFoundError, UserError
from executor.plan import Plan, StepError, utc_now
from executor.policy import AgentConfig
from executor.records import StepState
from executor.status import PlanStatus, SkipReason, StepStatus, check_transition
from executor.store.base import Store, WriteBatch

__all__ = [
    "Decision",
    "OnInterrupted",
    "apply_decision",
    "check_approved",
    "check_not_over",
    "plan_agent",
    "rejected_message",
    "requeued",
    "reset_for_rerun",
]

logger = logging.getLogger(__name__)

Decision: TypeAlias = Literal["rerun", "skip"]
"""What to do with a step interrupted by a crash: call it again, or skip it."""

OnInterrupted: TypeAlias = Decision | Mapping[str, Decision]
"""One decision for every interrupted step, or one per step id."""


def rejected_message(plan: Plan) -> str:
    """What anyone trying to run or approve a rejected plan is told, wherever they try."""
    return (
        f"plan {plan.id!r} version {plan.version} was rejected: a rejected plan never runs "
        "and cannot be approved again; create a new plan to run it"
    )


def check_approved(plan: Plan) -> None:
    """Refuse a plan that is rejected, not confirmed yet, or changed since its approval.

    Raises:
        ApprovalError: Why the plan may not run.
    """
    status = plan.status
    if status is PlanStatus.REJECTED:
        raise ApprovalError(rejected_message(plan))
    if status in (PlanStatus.DRAFT, PlanStatus.AWAITING_CONFIRMATION):
        raise ApprovalError(
            f"plan {plan.id!r} version {plan.version} is {status.value}, not confirmed: "
            "confirm it before executing it"
        )
    if not plan.is_approved:
        raise ApprovalError(
            f"plan {plan.id!r} version {plan.version} changed after it was approved "
            f"(approved {plan.approved_hash!r}, now {plan.plan_hash!r}): confirm this version"
        )


def check_not_over(plan: Plan) -> None:
    """Refuse a plan that has nothing left to run (completed, or cancelled).

    Raises:
        UserError: Saying so, and what to do instead.
    """
    if plan.status in (PlanStatus.COMPLETED, PlanStatus.CANCELLED):
        raise UserError(
            f"plan {plan.id!r} version {plan.version} is {plan.status.value}: nothing is left "
            "to run; create a new plan (or a new version) to run it again"
        )


async def plan_agent(store: Store, plan: Plan) -> AgentConfig | None:
    """The plan's agent as stored now; `None` for none, or one no longer stored."""
    if plan.agent is None:
        return None
    try:
        return await store.get_agent(plan.agent)
    except NotFoundError:
        logger.warning(
            "plan %s names agent %r, which is not in the store: using the defaults",
            plan.id,
            plan.agent,
        )
        return None


def requeued(state: StepState) -> StepState:
    """A step found `running` after a crash, queued to run again."""
    check_transition(state.status, StepStatus.PENDING)
    return state.model_copy(update={"status": StepStatus.PENDING, "finished_at": None})


def reset_for_rerun(batch: WriteBatch, states: Mapping[str, StepState]) -> list[str]:
    """Queue again, in `batch`, what a failed plan's run did not do; return their ids."""
    rerun: list[str] = []
    for st in states.values():
        if st.status in (StepStatus.FAILED, StepStatus.CANCELLED) or (
            st.status is StepStatus.SKIPPED and st.skip_reason is not SkipReason.DECISION
        ):
            check_transition(st.status, StepStatus.PENDING)
            batch.step_states.append(
                st.model_copy(
                    update={
                        "status": StepStatus.PENDING,
                        "output": None,
                        "result": None,
                        "error": None,
                        "skip_reason": None,
                        "started_at": None,
                        "finished_at": None,
                    }
                )
            )
            rerun.append(st.step_id)
    return rerun


def _decisions(plan: Plan, ids: set[str], on_interrupted: OnInterrupted | None) -> dict[str, str]:
    """One decision per interrupted step, checked: `rerun` when none is given."""
    if isinstance(on_interrupted, str) or on_interrupted is None:
        decisions: dict[str, str] = dict.fromkeys(ids, on_interrupted or "rerun")
    else:
        unknown = sorted(set(on_interrupted) - ids)
        if unknown:
            raise UserError(
                f"on_interrupted names step(s) {unknown} of plan {plan.id!r}, which are "
                f"not interrupted; the interrupted ones are {sorted(ids)}"
            )
        missing = sorted(ids - set(on_interrupted))
        if missing:
            raise UserError(
                f"on_interrupted gives no decision for step(s) {missing} of plan "
                f"{plan.id!r}: give 'rerun' or 'skip' for each, or one for all"
            )
        decisions = dict(on_interrupted)
    for sid, decision in decisions.items():
        if decision not in ("rerun", "skip"):
            raise UserError(
                f"on_interrupted for step {sid!r} is {decision!r}: use 'rerun' or 'skip'"
            )
    return decisions


def apply_decision(
    batch: WriteBatch,
    plan: Plan,
    states: Mapping[str, StepState],
    waiting: list[StepState],
    on_interrupted: OnInterrupted | None,
) -> dict[str, str]:
    """Write, in `batch`, the decision on the interrupted steps `waiting`; return it.

    Raises:
        UserError: The decision names a step that is not interrupted, leaves one
            out, or is neither `rerun` nor `skip`.
    """
    decisions = _decisions(plan, {s.step_id for s in waiting}, on_interrupted)
    for sid, decision in decisions.items():
        st = states[sid]
        if decision == "rerun":
            check_transition(st.status, StepStatus.PENDING)
            batch.step_states.append(
                st.model_copy(
                    update={"status": StepStatus.PENDING, "error": None, "finished_at": None}
                )
            )
        else:
            check_transition(st.status, StepStatus.SKIPPED)
            batch.step_states.append(
                st.model_copy(
                    update={
                        "status": StepStatus.SKIPPED,
                        "skip_reason": SkipReason.DECISION,
                        "finished_at": utc_now(),
                        "error": StepError(
                            kind=ErrorKind.INTERRUPTED,
                            message=(
                                "skipped by decision after an interruption: treated as "
                                "done without an output, and never run again"
                            ),
                        ),
                    }
                )
            )
    return decisions
