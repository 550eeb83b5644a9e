"""The one retry decision: whether a failed call runs again, fails, or waits for a person.

The scheduler asks `decide` after every failed attempt, when a stopping run
cuts a call off, and after a crash for every call it finds in flight. The rule
goes by `Delivery` and whether the tool is safe to repeat (the README, "Retries
never repeat an effect"); a crash spends no attempt.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from executor.catalog import ToolAnnotations
from executor.errors import Delivery, ErrorKind
from executor.plan import RetryPolicy

__all__ = ["RetryDecision", "Verdict", "decide"]

_NOT_SAFE = "the tool is not annotated idempotent or read-only"
_OPT_IN = "retry.non_idempotent: true on the step opts in"


class Verdict(StrEnum):
    """What becomes of a step whose call failed or was cut off."""

    RETRY = "retry"
    """Call it again (after the policy's delay; at once after a crash)."""
    FAIL = "fail"
    """The step fails."""
    INTERRUPT = "interrupt"
    """It may have taken effect and is not safe to repeat: it waits for `rerun` or `skip`."""


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """A verdict and, when safety rather than the policy decided it, why.

    Attributes:
        verdict: What becomes of the step.
        reason: A clause for the step's error when it is not retried because
            repeating it is not known to be safe; empty otherwise.
    """

    verdict: Verdict
    reason: str = ""


_RETRY = RetryDecision(Verdict.RETRY)
_FAIL = RetryDecision(Verdict.FAIL)
_INTERRUPT = RetryDecision(
    Verdict.INTERRUPT,
    f"the call may or may not have taken effect, and {_NOT_SAFE}, so it is not repeated "
    f"without a decision ({_OPT_IN})",
)
_INTERRUPT_BY_POLICY = RetryDecision(
    Verdict.INTERRUPT,
    "the call may or may not have taken effect, and the retry policy lists 'interrupted' "
    "as non-retryable",
)
_FAIL_UNSAFE = RetryDecision(Verdict.FAIL, f"not retried: {_NOT_SAFE} ({_OPT_IN})")


def decide(
    kind: ErrorKind,
    delivery: Delivery,
    *,
    policy: RetryPolicy,
    attempt: int,
    annotations: ToolAnnotations | None,
) -> RetryDecision:
    """Decide what becomes of a step after its call failed.

    Args:
        kind: Why the call failed (`INTERRUPTED` for a call found in flight after a crash).
        delivery: Whether the request may have reached the tool.
        policy: The step's effective retry policy.
        attempt: Attempts made in this run, the failed one included (1-based).
        annotations: The tool's annotations from the caller's catalog; `None`
            when the catalog does not know the tool (nothing is then safe to repeat).

    Returns:
        The verdict, with the reason when safety decided it.
    """
    repeatable = policy.non_idempotent or (annotations is not None and annotations.safe_to_repeat)
    if delivery is Delivery.ANSWERED and kind is not ErrorKind.TOOL_ERROR:
        return _FAIL  # the server refused the request itself: repeating it cannot help
    if kind is ErrorKind.INTERRUPTED:
        if not repeatable:
            return _INTERRUPT
        if kind in policy.non_retryable:
            return _INTERRUPT_BY_POLICY
        return _RETRY
    if delivery is Delivery.AMBIGUOUS and not repeatable:
        return _INTERRUPT
    if not policy.should_retry(attempt, kind):
        return _FAIL
    if delivery is Delivery.ANSWERED and not repeatable:
        return _FAIL_UNSAFE
    return _RETRY
