"""The plan model: the runtime's instruction set.

A `Plan` is a DAG of `Step`s. Both are frozen: a plan's content never changes
in place; an edit is a new version. Where a plan and its steps stand at run
time is kept apart from the content (`executor.status`, `executor.records`),
so that `plan_hash` covers exactly what would run and nothing else.
"""

from __future__ import annotations

import hashlib
import json
import random
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_serializer,
    field_validator,
    model_validator,
)

from executor.errors import ErrorKind
from executor.ids import PlanId, StepId
from executor.refs import STEP_ID_PATTERN, find_references
from executor.status import PlanStatus

if TYPE_CHECKING:
    from executor.policy import RunPolicy

__all__ = [
    "OnError",
    "Plan",
    "RetryPolicy",
    "Step",
    "StepError",
    "utc_now",
]

HASH_VERSION = "v2"
"""The shape of `plan_hash`'s payload: v2 adds the agent's run policy."""
_HASH_VERSION_WITHOUT_POLICY = "v1"
"""Plans stored before they recorded a policy keep their v1 hash, and their approvals."""


def utc_now() -> datetime:
    """Return the current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class OnError(StrEnum):
    """What a step's failure does to the rest of the plan."""

    FAIL = "fail"
    """Fail the plan at once and cancel what is in flight."""
    CONTINUE = "continue"
    """Skip this step's dependents; independent branches go on."""


_DEFAULT_NON_RETRYABLE = frozenset(
    {
        ErrorKind.AUTHENTICATION,
        ErrorKind.AUTHORIZATION,
        ErrorKind.INVALID_ARGUMENTS,
        ErrorKind.CANCELLED,
        ErrorKind.INTERNAL,
    }
)


class RetryPolicy(BaseModel):
    """How a failed attempt is retried: exponential backoff with jitter."""

    # defer_build: the schema is built at first use, not at import (read commands import
    # many models and validate few).
    model_config = ConfigDict(frozen=True, defer_build=True, extra="forbid")

    initial_interval_s: float = Field(default=1.0, gt=0, le=3600)
    """Delay before the first retry."""
    backoff_coefficient: float = Field(default=2.0, ge=1.0, le=100)
    """Each further delay is the previous one times this."""
    maximum_interval_s: float = Field(default=60.0, gt=0, le=86400)
    """Cap on any single delay."""
    maximum_attempts: int = Field(default=3, ge=1, le=1000)
    """Attempts in all, the first one included; 1 means never retry."""
    non_retryable: frozenset[ErrorKind] = _DEFAULT_NON_RETRYABLE
    """Error kinds that are never retried."""
    jitter: float = Field(default=0.1, ge=0, le=1)
    """Each delay is moved by up to this fraction of itself, at random, either way."""
    non_idempotent: bool = False
    """Retry even a call that may already have taken effect (a timeout, a connection lost
    mid-call) or that the tool refused, when the tool is not annotated idempotent or
    read-only: the step owner says repeating its effect is acceptable."""

    @model_validator(mode="after")
    def _interval_order(self) -> RetryPolicy:
        if self.maximum_interval_s < self.initial_interval_s:
            raise ValueError(
                f"maximum_interval_s ({self.maximum_interval_s}) must be at least "
                f"initial_interval_s ({self.initial_interval_s})"
            )
        return self

    @field_serializer("non_retryable")
    def _sorted_kinds(self, kinds: frozenset[ErrorKind]) -> list[ErrorKind]:
        # A frozenset iterates in hash order, which changes per process: sort so
        # that dumps, and the plan hash over them, are the same everywhere.
        return sorted(kinds)

    def hash_payload(self) -> dict[str, Any]:
        """The policy as `plan_hash` covers it."""
        # The opt-in counts only when set, so plans approved before it existed keep their hash.
        return self.model_dump(
            mode="json", exclude=None if self.non_idempotent else {"non_idempotent"}
        )

    def should_retry(self, attempt: int, kind: ErrorKind) -> bool:
        """Whether the policy allows another try after attempt `attempt` (1-based) failed.

        Only the budget and the non-retryable kinds: whether repeating the call is
        safe at all is `executor.retry.decide`'s call.
        """
        return attempt < self.maximum_attempts and kind not in self.non_retryable

    def delay_s(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after attempt number `attempt` (1-based) failed."""
        base = min(
            self.initial_interval_s * self.backoff_coefficient ** max(attempt - 1, 0),
            self.maximum_interval_s,
        )
        if self.jitter == 0:
            return base
        spread = base * self.jitter
        return max(0.0, base + (rng or random).uniform(-spread, spread))


StepIdField = Annotated[str, Field(pattern=STEP_ID_PATTERN)]


class Step(BaseModel):
    """One tool call in a plan.

    A reference in `arguments` implies a dependency: it is added to
    `depends_on` when missing, so `depends_on` is always complete.
    """

    model_config = ConfigDict(frozen=True, defer_build=True, extra="forbid")

    id: StepIdField
    """Unique within the plan; letters, digits, `_` and `-`, starting with a letter or `_`."""
    server: str = Field(min_length=1)
    """The downstream server's configured name."""
    tool: str = Field(min_length=1)
    """The tool's name on that server."""
    arguments: dict[str, Any] = Field(default_factory=dict)
    """The tool's arguments, possibly holding `${step.path}` references."""
    depends_on: tuple[StepIdField, ...] = ()
    """Steps that must succeed first (references add theirs)."""
    description: str | None = None
    """What the step is for, for people."""
    timeout_s: float | None = Field(default=None, gt=0)
    """Per-attempt timeout; else the server's, else the default."""
    retry: RetryPolicy | None = None
    """Retry policy; else the agent's, else the default."""
    on_error: OnError = OnError.FAIL
    """What this step's failure does to the plan."""

    @model_validator(mode="before")
    @classmethod
    def _add_reference_dependencies(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("arguments"), dict):
            return data
        deps = list(data.get("depends_on") or ())
        seen = set(deps)
        for ref in find_references(data["arguments"]):
            if ref.step not in seen:
                seen.add(ref.step)
                deps.append(ref.step)
        return {**data, "depends_on": tuple(deps)}

    @field_validator("depends_on")
    @classmethod
    def _no_duplicate_dependencies(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(value))

    @property
    def step_id(self) -> StepId:
        """The id, typed."""
        return StepId(self.id)

    def hash_payload(self) -> dict[str, Any]:
        """Everything about this step that changes what would run."""
        return {
            "id": self.id,
            "server": self.server,
            "tool": self.tool,
            "arguments": self.arguments,
            "depends_on": sorted(self.depends_on),
            "timeout_s": self.timeout_s,
            "retry": None if self.retry is None else self.retry.hash_payload(),
            "on_error": self.on_error.value,
        }


class StepError(BaseModel):
    """Why a step failed."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    kind: ErrorKind
    """The classified reason."""
    message: str
    """What happened, in the words of whoever reported it."""


class Plan(BaseModel):
    """A versioned, immutable DAG of steps and the facts about its making.

    The content that would run is `steps` plus `deadline_s`, under the agent's
    `policy`; `plan_hash` covers exactly that, so approval binds to it.
    """

    model_config = ConfigDict(frozen=True, defer_build=True, extra="forbid")

    id: PlanId
    """Shared by every version of this plan."""
    version: int = Field(default=1, ge=1)
    """1 for the first; each revision adds one."""
    query: str = ""
    """What the user asked for."""
    strategy: str = ""
    """How the plan means to get there, in a sentence or two."""
    agent: str | None = None
    """The agent whose policy and limits apply."""
    policy: RunPolicy | None = None
    """The agent's tool policy, limits and default retry when the plan was made: the
    ones approved with it and run under (`None`: a plan stored before plans kept it)."""
    session_id: str | None = None
    """Plans in one session see each other's queries and outcomes when planning."""
    steps: tuple[Step, ...]
    """The steps, in the order they were written."""
    deadline_s: float | None = Field(default=None, gt=0)
    """Whole-run deadline; the plan fails with `timeout` past it."""
    status: PlanStatus = PlanStatus.DRAFT
    """Where the plan stands."""
    approved_hash: str | None = None
    """The `plan_hash` the user approved, if any."""
    considered_tools: tuple[str, ...] = ()
    """Tool aliases the planner was shown (after shortlisting)."""
    created_at: datetime = Field(default_factory=utc_now)
    """When this version was made."""

    @field_validator("policy")
    @classmethod
    def _just_the_run_policy(cls, value: RunPolicy | None) -> RunPolicy | None:
        # An `AgentConfig` is a `RunPolicy` too: keep (and hash) only the policy part.
        return None if value is None else value.run_policy()

    def hash_payload(self) -> dict[str, Any]:
        """Everything about this plan that changes what would run."""
        payload: dict[str, Any] = {
            "steps": [s.hash_payload() for s in self.steps],
            "deadline_s": self.deadline_s,
            "agent": self.agent,
        }
        if self.policy is not None:
            payload["policy"] = self.policy.hash_payload()
        return payload

    @property
    def plan_hash(self) -> str:
        """A digest of what would run; stable across processes and machines."""
        canonical = json.dumps(
            self.hash_payload(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
        # JSON can carry lone surrogates ("\ud800"); hash them rather than crash.
        digest = hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()
        version = _HASH_VERSION_WITHOUT_POLICY if self.policy is None else HASH_VERSION
        return f"{version}:{digest}"

    def step(self, step_id: str) -> Step:
        """Return the step with this id.

        Raises:
            KeyError: No such step.
        """
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(step_id)

    @property
    def is_approved(self) -> bool:
        """Whether the approval on record is for this exact content."""
        return self.approved_hash is not None and self.approved_hash == self.plan_hash


# `Plan.policy` is typed by `executor.policy`, which imports this module for
# `RetryPolicy`: importing it here, last, lets either module be imported first.
# `executor.policy` completes `Plan` once `RunPolicy` exists.
import executor.policy  # noqa: E402, F401
