"""Agents and the tool policy that bounds what their plans may call."""

from __future__ import annotations

from enum import StrEnum
from fnmatch import fnmatchcase

from pydantic import BaseModel, ConfigDict, Field

from executor.plan import RetryPolicy

__all__ = [
    "AgentConfig",
    "AgentLimits",
    "AutoApprove",
    "ModelSettings",
    "ResponseMode",
    "ToolPolicy",
]


class ToolPolicy(BaseModel):
    """Allow and deny globs over `server.tool`; deny always wins.

    A pattern without a dot matches the server name alone, so `"fs"` allows or
    denies every tool of the server `fs`, the same as `"fs.*"`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    allow: tuple[str, ...] = ("*",)
    """Globs a tool must match at least one of."""
    deny: tuple[str, ...] = ()
    """Globs a tool must match none of."""

    def allows(self, server: str, tool: str) -> bool:
        """Whether `server`'s tool `tool` may be used."""
        if any(_matches(p, server, tool) for p in self.deny):
            return False
        return any(_matches(p, server, tool) for p in self.allow)

    def explain(self, server: str, tool: str) -> str | None:
        """Say why a tool is refused, or `None` if it is allowed."""
        for p in self.deny:
            if _matches(p, server, tool):
                return f"denied by the pattern {p!r}"
        if not any(_matches(p, server, tool) for p in self.allow):
            allowed = ", ".join(repr(p) for p in self.allow) or "nothing"
            return f"not matched by any allowed pattern ({allowed})"
        return None


def _matches(pattern: str, server: str, tool: str) -> bool:
    if pattern == "*":
        return True
    if "." not in pattern:
        return fnmatchcase(server, pattern)
    head, _, tail = pattern.partition(".")
    # Match the halves separately: a tool name may itself contain dots.
    return fnmatchcase(server, head) and fnmatchcase(tool, tail)


class AutoApprove(StrEnum):
    """Which plans an agent confirms without asking."""

    NEVER = "never"
    """Every plan waits for `confirm_plan`."""
    READ_ONLY = "read_only"
    """Plans whose every tool is annotated read-only are confirmed at once."""


class AgentLimits(BaseModel):
    """Bounds on the plans an agent makes and runs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_steps: int = Field(default=50, ge=1, le=100_000)
    """Most steps a plan may have."""
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

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_tokens: int | None = Field(default=None, ge=64, le=1_000_000)
    """Most tokens one answer may take; unset, it is derived from the agent's step
    limit and the tools shown (enough for the longest plan the schema allows)."""
    timeout_s: float | None = Field(default=None, gt=0, le=86_400)
    """Seconds one model call may take (default 120; 600 for a server on loopback)."""
    response_mode: ResponseMode | None = None
    """How the answer is constrained (default `auto`)."""


class AgentConfig(BaseModel):
    """A named planning persona: prompt, model, tool policy, limits and approval rule."""

    model_config = ConfigDict(frozen=True, extra="forbid")

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
    tool_policy: ToolPolicy = ToolPolicy()
    """Which tools this agent's plans may call."""
    limits: AgentLimits = AgentLimits()
    """Bounds on plans."""
    retry: RetryPolicy | None = None
    """Default retry policy for this agent's steps."""
    auto_approve: AutoApprove = AutoApprove.NEVER
    """Which plans are confirmed without asking."""
