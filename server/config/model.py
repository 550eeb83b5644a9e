"""What a config file says, once read: `TaskorchConfig`, and `Limits`, the one limits model.

`Limits` is the config's `limits` section: every bound an operator sets for
the process. Each default is written once, beside what enforces it: the
engine's (runs, steps and calls in flight, the lease: `executor.policy`;
per-call timeouts: `executor.downstream.specs`, which `SchedulerConfig` and the pool use
too), the planner's (`planner.options`). `Limits.http` bounds `serve --http`. An agent's
`AgentLimits` stay apart: they bound one agent's plans, are stored with each
plan and covered by its `plan_hash`, and `limits` caps them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from executor.downstream.specs import (
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_TIMEOUT_S,
    DEFAULT_TIMEOUT_S,
    ServerSpec,
)
from executor.ids import BUILTIN_SERVER
from executor.policy import (
    DEFAULT_LEASE_S,
    DEFAULT_MAX_CONCURRENT_EXECUTIONS,
    DEFAULT_MAX_PARALLEL_STEPS,
    DEFAULT_MAX_STEPS,
    AgentConfig,
    MaxSteps,
    ModelSettings,
)
from executor.store.location import DatabaseUrl
from planner.options import DEFAULT_MAX_REPAIRS

__all__ = [
    "ENV_NAME",
    "RESERVED_RULE",
    "SERVER_NAME",
    "SERVER_NAME_RULE",
    "HttpLimits",
    "Limits",
    "LogLevel",
    "TaskorchConfig",
]

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
"""The log levels a config may set."""

# A server name is written `server.tool` and matched by globs (see
# `executor.policy.ToolPolicy`), so it may hold no dot, glob character or space.
SERVER_NAME = re.compile(r"^(?! )[^\t\n\r\f\v.*?\[\]]{1,64}(?<! )$")
"""What a server name (an `mcpServers` key) may be."""
SERVER_NAME_RULE = (
    "a server name must be 1 to 64 characters with no '.', '*', '?', '[', ']', tab or "
    "newline, and no space at either end "
    "(tools are written server.tool and matched with globs); rename the entry"
)
"""`SERVER_NAME`, said to whoever broke it."""
RESERVED_RULE = (
    f"the server name {BUILTIN_SERVER!r} is reserved for taskorch's built-in steps "
    "(extract, select, split_lines, join, format); rename the entry"
)
"""Why no entry may be named `taskorch`."""
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
"""The name of an environment variable."""


class HttpLimits(BaseModel):
    """The limits of `serve --http`; the defaults suit one host and a few clients.

    Enforced by `server.mcp.http_protocol` (a request deadline, a connection cap)
    and uvicorn (keep-alive, `limit_concurrency`). The command line's options
    override them.
    """

    # defer_build: the schema is built at first use, not at import (read commands import
    # many models and validate few).
    model_config = ConfigDict(frozen=True, defer_build=True, extra="forbid")

    max_connections: int = Field(default=100, ge=1, le=100_000)
    """Open connections at once; past it the oldest one not being answered is closed."""
    request_timeout_s: float = Field(default=10.0, gt=0, le=3600)
    """Seconds a client has to send a whole request (headers and body), from its first byte."""
    keep_alive_s: int = Field(default=5, ge=1, le=3600)
    """Seconds an idle connection is kept open between requests."""


class Limits(BaseModel):
    """Every bound the process keeps: what runs at once, how long it waits, how much it answers."""

    model_config = ConfigDict(frozen=True, defer_build=True, extra="forbid")

    max_concurrent_executions: int = Field(default=DEFAULT_MAX_CONCURRENT_EXECUTIONS, ge=1, le=1024)
    """Plans running at the same time."""
    max_parallel_steps: int = Field(default=DEFAULT_MAX_PARALLEL_STEPS, ge=1, le=4096)
    """Steps in flight at once within one plan (an agent may lower it)."""
    max_calls_per_server: int = Field(default=DEFAULT_MAX_CONCURRENCY, ge=1, le=1024)
    """Calls in flight to one server when its entry sets no `max_concurrency`."""
    default_timeout_s: float = Field(default=DEFAULT_TIMEOUT_S, gt=0)
    """Per-call timeout when neither the step nor the server sets one."""
    max_timeout_s: float = Field(default=DEFAULT_MAX_TIMEOUT_S, gt=0)
    """The longest per-call timeout any step or server may ask for."""
    max_steps: MaxSteps = DEFAULT_MAX_STEPS
    """Most steps any plan may have, whatever its agent allows; the built-in default
    agent allows exactly this many."""
    max_repairs: int = Field(default=DEFAULT_MAX_REPAIRS, ge=0, le=20)
    """Times the planner may try to repair a plan that failed validation."""
    run_lease_s: float = Field(default=DEFAULT_LEASE_S, ge=1, le=86_400)
    """How long a process's claim on a running plan lasts unless renewed; another
    taskorch on the same database takes the run over once it lapses."""
    answer_budget_tokens: int = Field(default=8000, ge=500, le=1_000_000)
    """Most tokens (counted as 4 bytes each) of one tool answer or resource that carries
    step outputs; larger outputs come back as a preview and a link."""
    http: HttpLimits = HttpLimits()
    """The bounds of `serve --http`."""

    @model_validator(mode="after")
    def _timeouts_in_order(self) -> Limits:
        if self.default_timeout_s > self.max_timeout_s:
            raise ValueError(
                f"default_timeout_s ({self.default_timeout_s:g}) must not exceed "
                f"max_timeout_s ({self.max_timeout_s:g}); lower one or raise the other"
            )
        return self


class TaskorchConfig(BaseModel):
    """Everything read from the config file, environment references expanded."""

    model_config = ConfigDict(frozen=True, defer_build=True, extra="forbid")

    servers: dict[str, ServerSpec] = Field(default_factory=dict)
    """Downstream servers by name (`mcpServers`), disabled ones left out."""
    agents: dict[str, AgentConfig] = Field(default_factory=dict)
    """Agents defined in the file, by name (the database may hold more)."""
    default_agent: str | None = None
    """The agent used when a request names none; a config or a database agent."""
    model: str | None = None
    """litellm model string for agents that name none (else `TASKORCH_MODEL`)."""
    api_base: str | None = Field(default=None, pattern=r"^https?://")
    """Endpoint for `model`, when not the provider's default."""
    api_key_env: str | None = Field(default=None, pattern=ENV_NAME.pattern)
    """Name of the environment variable holding the key for `model` (never the key)."""
    model_settings: ModelSettings = ModelSettings()
    """How the planner asks `model` (and the model of an agent that names none)."""
    limits: Limits = Limits()
    """Global bounds."""
    database: Path | DatabaseUrl | None = None
    """SQLite file (a relative path is relative to the config file), or a postgresql:// URL."""
    log_level: LogLevel | None = None
    """Log level when the command line sets none."""
    allow_sampling: bool = False
    """Let downstream servers ask for model completions (sampling): passed on to the
    host that follows the run. Refused otherwise (and not declared to them)."""
    config_path: Path | None = None
    """The file this was read from; `None` when nothing was read."""

    @model_validator(mode="after")
    def _names_consistent(self) -> TaskorchConfig:
        for name in self.servers:
            if not SERVER_NAME.match(name):
                raise ValueError(f"server name {name!r} cannot be used: {SERVER_NAME_RULE}")
            if name == BUILTIN_SERVER:
                raise ValueError(RESERVED_RULE)
        for key, agent in self.agents.items():
            if key != agent.name:
                raise ValueError(f"agents[{key!r}] holds the agent named {agent.name!r}")
        return self
