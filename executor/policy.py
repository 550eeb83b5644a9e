"""Agents, and the tool policies and limits that bound what their plans may call.

One glob matcher (`glob_match`) serves every tool rule: an agent's
`ToolPolicy` over `server.tool` and a server's `allowed_tools` /
`denied_tools` (`ToolFilter`). Deny patterns ignore case and Unicode
compatibility forms, so `delete_*` also stops `Delete_all`; allow patterns
match as written. Either way a doubtful name is refused, never let through.

`RunPolicy` is the part of an agent a run is bound by (tool policy, limits,
default retry). A plan records the one in force when it was made and
`plan_hash` covers it, so an approval covers the rules the plan runs under;
`CallGate` checks them, and the agent's policy as it is now, before every call.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from fnmatch import fnmatchcase
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from executor.plan import Plan, RetryPolicy

__all__ = [
    "DEFAULT_LEASE_S",
    "DEFAULT_MAX_CONCURRENT_EXECUTIONS",
    "DEFAULT_MAX_PARALLEL_STEPS",
    "DEFAULT_MAX_STEPS",
    "AgentConfig",
    "AgentLimits",
    "AutoApprove",
    "CallGate",
    "MaxSteps",
    "ModelSettings",
    "ResponseMode",
    "RunPolicy",
    "ToolFilter",
    "ToolPolicy",
    "approved_agent",
    "glob_match",
]

DEFAULT_MAX_STEPS = 200
"""Most steps a plan may have unless the config or its agent allows fewer."""
DEFAULT_MAX_CONCURRENT_EXECUTIONS = 4
"""Runs in progress at once, unless the config says otherwise."""
DEFAULT_MAX_PARALLEL_STEPS = 16
"""Steps in flight per run, unless the config or the plan's agent says otherwise."""
DEFAULT_LEASE_S = 30.0
"""How long a process's claim on a run holds without renewal, unless configured."""

MaxSteps = Annotated[int, Field(ge=1, le=100_000)]
"""A step limit: the one shape of `AgentLimits.max_steps` and the config's `limits.max_steps`."""


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


def glob_match(pattern: str, name: str, *, ignore_case: bool = False) -> bool:
    """Whether `name` matches the `fnmatch` glob `pattern`.

    Args:
        pattern: `*`, `?` and `[...]` as in `fnmatch`.
        name: A server or tool name.
        ignore_case: Compare after NFKC normalisation and case folding (deny rules),
            so that `delete_*` matches `Delete_all` and its full-width spelling.
    """
    if ignore_case:
        return fnmatchcase(_fold(name), _fold(pattern))
    return fnmatchcase(name, pattern)


class ToolPolicy(BaseModel):
    """Allow and deny globs over `server.tool`; deny always wins.

    A pattern without a dot matches the server name alone, so `"fs"` allows or
    denies every tool of the server `fs`, the same as `"fs.*"`. Deny patterns
    ignore case; allow patterns match as written.
    """

    # defer_build: the schema is built at first use, not at import (read commands import
    # many models and validate few).
    model_config = ConfigDict(frozen=True, defer_build=True, extra="forbid")

    allow: tuple[str, ...] = ("*",)
    """Globs a tool must match at least one of."""
    deny: tuple[str, ...] = ()
    """Globs a tool must match none of (case ignored)."""

    def allows(self, server: str, tool: str) -> bool:
        """Whether `server`'s tool `tool` may be used."""
        return self.explain(server, tool) is None

    def explain(self, server: str, tool: str) -> str | None:
        """Say why a tool is refused, or `None` if it is allowed."""
        for p in self.deny:
            if _matches(p, server, tool, ignore_case=True):
                return f"denied by the pattern {p!r}"
        if not any(_matches(p, server, tool, ignore_case=False) for p in self.allow):
            allowed = ", ".join(repr(p) for p in self.allow) or "nothing"
            return f"not matched by any allowed pattern ({allowed})"
        return None


def _matches(pattern: str, server: str, tool: str, *, ignore_case: bool) -> bool:
    if pattern == "*":
        return True
    if "." not in pattern:
        return glob_match(pattern, server, ignore_case=ignore_case)
    head, _, tail = pattern.partition(".")
    # Match the halves separately: a tool name may itself contain dots.
    return glob_match(head, server, ignore_case=ignore_case) and glob_match(
        tail, tool, ignore_case=ignore_case
    )


class ToolFilter(BaseModel):
    """One server's `allowed_tools` / `denied_tools`: globs over its tool names; deny wins."""

    model_config = ConfigDict(frozen=True, defer_build=True, extra="forbid")

    allowed: tuple[str, ...] | None = None
    """Globs a tool must match one of; `None` allows every tool."""
    denied: tuple[str, ...] = ()
    """Globs a tool must match none of (case ignored)."""

    def refusal(self, tool: str) -> str | None:
        """Why `tool` is hidden and refused, or `None` when it is allowed."""
        for pattern in self.denied:
            if glob_match(pattern, tool, ignore_case=True):
                return f"it matches {pattern!r} in the server's `denied_tools`"
        if self.allowed is not None and not any(glob_match(p, tool) for p in self.allowed):
            patterns = ", ".join(repr(p) for p in self.allowed)
            return f"it matches none of the server's `allowed_tools` ({patterns})"
        return None


class AutoApprove(StrEnum):
    """Which plans an agent confirms without asking."""

    NEVER = "never"
    """Every plan waits for `confirm_plan`."""
    READ_ONLY = "read_only"
    """Plans whose every tool is annotated read-only are confirmed at once."""


class AgentLimits(BaseModel):
    """Bounds on the plans an agent makes and runs."""

    model_config = ConfigDict(frozen=True, defer_build=True, extra="forbid")

    max_steps: MaxSteps = DEFAULT_MAX_STEPS
    """Most steps a plan may have (the config's `limits.max_steps` caps it)."""
    max_parallel_steps: int | None = Field(default=None, ge=1)
    """Steps in flight at once for this agent's plans (else the global default)."""
    plan_deadline_s: float | None = Field(default=None, gt=0)
    """Default whole-run deadline for this agent's plans."""
    step_timeout_s: float | None = Field(default=None, gt=0)
    """Default per-step timeout for this agent's plans."""


class ResponseMode(StrEnum):
    """How the planner asks a model for a plan-shaped answer."""

    AUTO = "auto"
    """Try `json_schema`, then `json_object`, then `tools`; remember what worked."""
    JSON_SCHEMA = "json_schema"
    """`response_format: {type: json_schema}` (OpenAI, vLLM, Ollama, llama.cpp's llama-server)."""
    JSON_OBJECT = "json_object"
    """`response_format: {type: json_object, schema}` (llama-cpp-python's server
    constrains to the schema; OpenAI's JSON mode only to JSON)."""
    TOOLS = "tools"
    """A forced call of one function whose parameters are the plan schema."""
    NONE = "none"
    """No constraint: the prompt alone asks for the JSON (for comparison)."""


class ModelSettings(BaseModel):
    """How the planner asks one model; an unset field takes the planner's default.

    They go with the model they are set beside: the config's apply to the
    config's model (and to agents that name none), an agent's to its own.
    """

    model_config = ConfigDict(frozen=True, defer_build=True, extra="forbid")

    max_tokens: int | None = Field(default=None, ge=64, le=1_000_000)
    """Most tokens one answer may take; unset, it is derived from the agent's step
    limit and the tools shown (enough for the longest plan the schema allows)."""
    timeout_s: float | None = Field(default=None, gt=0, le=86_400)
    """Seconds one model call may take (default 120; 600 for a server on loopback)."""
    response_mode: ResponseMode | None = None
    """How the answer is constrained (default `auto`)."""


class RunPolicy(BaseModel):
    """What bounds a plan's run: its agent's tool policy, limits and default retry.

    Every agent is one (`AgentConfig` adds a name and how it plans); a plan
    records its agent's as `Plan.policy`, covered by `plan_hash`.
    """

    model_config = ConfigDict(frozen=True, defer_build=True, extra="forbid")

    tool_policy: ToolPolicy = ToolPolicy()
    """Which tools this agent's plans may call."""
    limits: AgentLimits = AgentLimits()
    """Bounds on plans."""
    retry: RetryPolicy | None = None
    """Default retry policy for this agent's steps."""

    def run_policy(self) -> RunPolicy:
        """Just the run policy (of an agent: without its name and planning fields)."""
        return RunPolicy(tool_policy=self.tool_policy, limits=self.limits, retry=self.retry)

    def hash_payload(self) -> dict[str, Any]:
        """The policy as `plan_hash` covers it (the retry policy in its own hash form)."""
        payload = self.run_policy().model_dump(mode="json", exclude={"retry"})
        payload["retry"] = None if self.retry is None else self.retry.hash_payload()
        return payload


# `Plan.policy` is a `RunPolicy`; `executor.plan` cannot import this module first.
Plan.model_rebuild(_types_namespace={"RunPolicy": RunPolicy})


class AgentConfig(RunPolicy):
    """A named planning persona (prompt, model, approval rule) and its plans' run policy."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    """How callers name this agent."""
    description: str = ""
    """What the agent is for."""
    personality: str = ""
    """Tone and habits, added to the planning prompt."""
    system_prompt: str = ""
    """Instructions placed first in the planning prompt."""
    model: str | None = None
    """litellm model string; else the config's top-level model, else `TASKORCH_MODEL`."""
    api_base: str | None = None
    """Endpoint for the model, when not the provider's default."""
    api_key_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
    """Name of the environment variable holding the model's API key (never the key)."""
    model_settings: ModelSettings = ModelSettings()
    """How the planner asks this agent's model, when the agent names one (else the
    config's settings for its model apply, with these on top)."""
    auto_approve: AutoApprove = AutoApprove.NEVER
    """Which plans are confirmed without asking."""


@dataclass(frozen=True, slots=True)
class CallGate:
    """The policy checked before every call of a run; a refused call is never made.

    Attributes:
        agent: The plan's agent name, for messages.
        approved: The tool policy the plan was approved under (`Plan.policy`).
        current: The agent's tool policy now, when it is known: an operator who
            tightens it stops calls of runs already approved.
        filters: Each server's `allowed_tools` / `denied_tools`.
    """

    agent: str
    approved: ToolPolicy | None = None
    current: ToolPolicy | None = None
    filters: Mapping[str, ToolFilter] = field(default_factory=dict)

    @classmethod
    def for_plan(
        cls, plan: Plan, agent: AgentConfig | None, filters: Mapping[str, ToolFilter]
    ) -> CallGate:
        """The gate of one run: `agent` is the plan's agent as stored now, if any."""
        return cls(
            agent=plan.agent or "default",
            approved=None if plan.policy is None else plan.policy.tool_policy,
            current=None if agent is None else agent.tool_policy,
            filters=filters,
        )

    def refusal(self, server: str, tool: str) -> str | None:
        """Why calling `server`'s `tool` is not allowed, or `None` when it is."""
        name = f"{server}.{tool}"
        for policy, when in ((self.approved, "approved"), (self.current, "now in force")):
            why = None if policy is None else policy.explain(server, tool)
            if why is not None:
                return (
                    f"the tool {name!r} is not allowed by the policy of agent {self.agent!r} "
                    f"{when} ({why}); it was not called"
                )
        flt = self.filters.get(server)
        why = None if flt is None else flt.refusal(tool)
        if why is not None:
            return f"the tool {name!r} is not allowed by the config: {why}; it was not called"
        return None


def approved_agent(plan: Plan, agent: AgentConfig | None) -> AgentConfig | None:
    """The agent a run of `plan` uses: its limits and retry as approved with the plan.

    Args:
        plan: The plan version being run.
        agent: Its agent as stored now (`None`: the built-in default, or not found).
    """
    if plan.policy is None:
        return agent  # a plan from before plans kept their policy
    # Only the limits and retry of the agent returned are read by a run.
    base = agent if agent is not None else AgentConfig(name="default")
    return base.model_copy(update={"limits": plan.policy.limits, "retry": plan.policy.retry})
