"""What the planner takes and gives: requests, drafts, and the messages sent to a model."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from executor.catalog import Catalog
from executor.ids import PlanId
from executor.plan import Plan, Step
from executor.policy import AgentConfig, ResponseMode
from executor.status import PlanStatus

__all__ = [
    "ChatMessage",
    "ModelReply",
    "ModelRequest",
    "PlanDraft",
    "PlanRequest",
    "ResponseMode",
    "Revision",
    "SessionEntry",
]

_DEFAULT_AGENT = AgentConfig(name="default")


class SessionEntry(BaseModel):
    """An earlier plan of the same session, as the planner is told about it."""

    model_config = ConfigDict(frozen=True)

    query: str
    """What the user asked for then."""
    strategy: str = ""
    """How that plan meant to do it."""
    status: PlanStatus = PlanStatus.DRAFT
    """Where that plan stands now."""
    outcome: str = ""
    """A short account of what came of it (results, or why it failed)."""

    @classmethod
    def from_plan(cls, plan: Plan, outcome: str = "") -> SessionEntry:
        """Summarise a stored plan."""
        return cls(query=plan.query, strategy=plan.strategy, status=plan.status, outcome=outcome)


class Revision(BaseModel):
    """A plan to make a new version of, and what the user said about it."""

    model_config = ConfigDict(frozen=True)

    plan: Plan
    """The earlier version (usually rejected or failed)."""
    feedback: str = ""
    """What the user wants changed; whatever it does not mention is kept."""


class PlanRequest(BaseModel):
    """Everything one planning call needs.

    The catalog is the full one the pool sees; the planner itself narrows it to
    what the agent's policy allows and, above a threshold, to a shortlist.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    query: str = Field(min_length=1)
    """What the user asked for."""
    catalog: Catalog
    """Every downstream tool that can be called now."""
    agent: AgentConfig = _DEFAULT_AGENT
    """The agent whose prompt, personality, policy and limits apply."""
    history: tuple[SessionEntry, ...] = ()
    """Earlier plans of the session, oldest first; only the last few reach the prompt."""
    revision: Revision | None = None
    """Set to revise an earlier plan instead of planning from scratch."""
    plan_id: PlanId | None = None
    """The id the plan will get, to stamp the recorded attempts with."""


class PlanDraft(BaseModel):
    """A validated plan's content, before the face gives it an id and stores it."""

    model_config = ConfigDict(frozen=True)

    strategy: str
    """How the plan means to get there."""
    steps: tuple[Step, ...]
    """The steps; they passed `executor.validate.validate_plan`."""
    considered_tools: tuple[str, ...] = ()
    """Aliases of the tools the planner was shown (after policy and shortlisting)."""
    model: str = ""
    """The model that wrote it (`caller` for caller-written steps)."""
    attempts: int = 1
    """Model calls it took, repairs included (0 for caller-written steps)."""

    def to_plan(
        self,
        plan_id: PlanId,
        *,
        query: str,
        version: int = 1,
        agent: str | None = None,
        session_id: str | None = None,
        deadline_s: float | None = None,
        created_at: datetime | None = None,
    ) -> Plan:
        """Build the `Plan` (status `draft`) this draft describes."""
        extra: dict[str, Any] = {} if created_at is None else {"created_at": created_at}
        return Plan(
            id=plan_id,
            version=version,
            query=query,
            strategy=self.strategy,
            agent=agent,
            session_id=session_id,
            steps=self.steps,
            deadline_s=deadline_s,
            considered_tools=self.considered_tools,
            **extra,
        )


class ChatMessage(BaseModel):
    """One message of the conversation sent to the model."""

    model_config = ConfigDict(frozen=True)

    role: Literal["system", "user", "assistant"]
    """Who says it."""
    content: str
    """What is said."""


class ModelRequest(BaseModel):
    """One model call: the conversation and the schema the answer must fit."""

    model_config = ConfigDict(frozen=True)

    messages: tuple[ChatMessage, ...]
    """The system message first, then the conversation."""
    answer_schema: dict[str, Any]
    """JSON Schema of the answer (`{strategy, steps}`), to constrain decoding with."""
    prompt_schema: dict[str, Any] | None = None
    """A smaller schema of the same answer, to write into the prompt where decoding
    cannot be constrained; `answer_schema` when not set."""
    max_tokens: int = Field(ge=1)
    """Most tokens the answer may take."""

    @property
    def system(self) -> str:
        """The system message's text ('' when there is none)."""
        return next((m.content for m in self.messages if m.role == "system"), "")


class ModelReply(BaseModel):
    """What a model answered, before parsing."""

    model_config = ConfigDict(frozen=True)

    text: str | None = None
    """The answer as text (JSON expected)."""
    data: dict[str, Any] | None = None
    """The answer as already-decoded JSON (a tool call's arguments)."""
    model: str = ""
    """The model that answered, as the provider named it."""
    prompt_tokens: int | None = None
    """Prompt tokens as the provider reported them."""
    completion_tokens: int | None = None
    """Completion tokens as the provider reported them."""
    truncated: bool = False
    """The answer stopped at `max_tokens`."""
    mode: ResponseMode = ResponseMode.NONE
    """How the answer was constrained."""
