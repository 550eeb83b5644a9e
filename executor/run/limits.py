"""The engine's limits and defaults, and which of them applies to a run and a step.

Three limits hold at once: runs in progress (`max_concurrent_executions`),
steps in flight per run (the agent's `max_parallel_steps`, else the
config's), and calls in flight per server (`max_calls_per_server`, with
per-server overrides). Timeouts and retry policies come from the step, else
the agent, else the config. A plan's deadline counts from its run's start: a
start, a re-run of a failed plan and a decision on interrupted steps restart
it; a resume after a crash does not.
"""

from __future__ import annotations

from dataclasses import dataclass

import anyio
from pydantic import BaseModel, ConfigDict, Field

from executor.downstream.specs import DEFAULT_MAX_CONCURRENCY
from executor.plan import Plan, RetryPolicy, Step
from executor.policy import (
    DEFAULT_LEASE_S,
    DEFAULT_MAX_CONCURRENT_EXECUTIONS,
    DEFAULT_MAX_PARALLEL_STEPS,
    AgentConfig,
    ToolFilter,
)

__all__ = ["Limiters", "RunLimits", "SchedulerConfig", "retry_policy", "steps_in_flight"]


class SchedulerConfig(BaseModel):
    """Limits and defaults of the execution engine."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_concurrent_executions: int = Field(
        default=DEFAULT_MAX_CONCURRENT_EXECUTIONS, ge=1, le=10_000
    )
    """Runs in progress at once; further runs wait (still `executing`) for a slot."""
    max_parallel_steps: int = Field(default=DEFAULT_MAX_PARALLEL_STEPS, ge=1, le=10_000)
    """Steps in flight per run, unless the plan's agent sets its own."""
    max_calls_per_server: int = Field(default=DEFAULT_MAX_CONCURRENCY, ge=1, le=10_000)
    """Calls in flight per downstream server, across all runs."""
    server_max_calls: dict[str, int] = Field(default_factory=dict)
    """Per-server overrides of `max_calls_per_server`."""
    tool_filters: dict[str, ToolFilter] = Field(default_factory=dict)
    """Each server's `allowed_tools` / `denied_tools`, checked before every call."""
    default_retry: RetryPolicy = RetryPolicy()
    """Retry policy for steps whose plan and agent set none."""
    default_step_timeout_s: float | None = Field(default=None, gt=0)
    """Per-attempt timeout when neither step nor agent sets one (`None`: the caller's)."""
    subscription_buffer: int = Field(default=10_000, ge=1)
    """Unread events a subscription holds before it drops further ones."""
    resume_catalog_timeout_s: float = Field(default=60.0, gt=0)
    """How long a run starting (or `resume()`) waits for the caller's catalog: the tool
    annotations that say what is safe to repeat, and the input schemas."""
    lease_s: float = Field(default=DEFAULT_LEASE_S, gt=0, le=86_400)
    """How long this process's claim on a run holds without renewal; renewed every
    third of it. A crashed process's runs can be resumed elsewhere once it passes."""
    control_poll_s: float = Field(default=0.2, gt=0, le=60)
    """How often the runs here look for cancel requests from other processes, and a
    cancel from here looks whether another process's run has stopped."""
    cancel_wait_s: float = Field(default=10.0, ge=0, le=86_400)
    """How long `cancel()` waits for another process to stop its run before answering
    that the request is made and the run still stopping."""


class Limiters:
    """The limiters shared by every run of one scheduler: runs in progress, calls per server."""

    def __init__(self, config: SchedulerConfig) -> None:
        self._config = config
        self.executions = anyio.CapacityLimiter(config.max_concurrent_executions)
        """A slot per run in progress; a run holds one from its first dispatch to its end."""
        self._servers: dict[str, anyio.CapacityLimiter] = {}

    def server(self, name: str) -> anyio.CapacityLimiter:
        """The limiter of calls in flight to one server, made on first use."""
        limiter = self._servers.get(name)
        if limiter is None:
            size = self._config.server_max_calls.get(name, self._config.max_calls_per_server)
            limiter = self._servers[name] = anyio.CapacityLimiter(size)
        return limiter


def steps_in_flight(agent: AgentConfig | None, config: SchedulerConfig) -> int:
    """Steps a run may have in flight: the agent's limit, else the config's."""
    if agent is not None and agent.limits.max_parallel_steps is not None:
        return agent.limits.max_parallel_steps
    return config.max_parallel_steps


@dataclass(frozen=True, slots=True)
class RunLimits:
    """The limits of one run, from its plan, its agent (as approved) and the config."""

    steps_in_flight: int
    """Steps in flight at once."""
    step_timeout_s: float | None
    """Per-attempt timeout of steps that set none (`None`: the caller's)."""
    deadline_s: float | None
    """Seconds the run may take from its start (`None`: no deadline)."""

    @classmethod
    def of(cls, plan: Plan, agent: AgentConfig | None, config: SchedulerConfig) -> RunLimits:
        """The limits that apply to `plan` run under `agent`."""
        limits = agent.limits if agent is not None else None
        timeout = config.default_step_timeout_s
        if limits is not None and limits.step_timeout_s is not None:
            timeout = limits.step_timeout_s
        deadline = plan.deadline_s
        if deadline is None and limits is not None:
            deadline = limits.plan_deadline_s
        return cls(steps_in_flight(agent, config), timeout, deadline)


def retry_policy(step: Step, agent: AgentConfig | None, config: SchedulerConfig) -> RetryPolicy:
    """The step's retry policy, else its agent's, else the scheduler's default."""
    if step.retry is not None:
        return step.retry
    if agent is not None and agent.retry is not None:
        return agent.retry
    return config.default_retry
