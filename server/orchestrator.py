"""`TaskOrchestrator`: the Python API, and what the MCP tools and the CLI call.

It wires the pieces together: the store (`executor.store`), the pool of
downstream sessions (`executor.downstream`), the scheduler
(`executor.run`) and the planner (`planner`). Use it as an async context
manager; entering opens the store, the pool and the scheduler, saves the
config's agents, and resumes (in the background) runs a crash interrupted;
leaving stops runs as a crash would (the next start resumes them) and ends
every downstream server.

```python
async with TaskOrchestrator.from_paths(config_path, db_path) as orch:
    plan = await orch.create_task_plan("...", steps=[{...}, {...}])
    await orch.confirm_task_plan(plan.plan_id, plan_hash=plan.plan_hash)
    report = await orch.execute_task_plan(plan.plan_id)        # waits; report.steps
```

Approval binds to content: `confirm_task_plan` approves one `plan_hash`, and
the scheduler refuses to run a plan whose approved hash is not its current
one. An agent whose rule is `read_only` has plans auto-approved when every
tool they call is annotated read-only.

Agents: those of the config file are the operator's: written to the store at
start, read from the config before the store, and never replaced or shadowed
by `add_agent_config`, which adds or replaces the others in the store. A plan
records its agent's tool policy, limits and retry (`Plan.policy`, covered by
`plan_hash`); the built-in default agent allows the config's `limits.max_steps`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio
from pydantic import BaseModel, ConfigDict

from executor._utils import leaf_exceptions
from executor.builtins import BUILTIN_SERVER, BuiltinCaller
from executor.calls import ProgressFn, ToolCaller, ToolResult
from executor.catalog import Catalog
from executor.errors import (
    ApprovalError,
    ConfigError,
    NotFoundError,
    StepReferenceError,
    TransitionError,
    UserError,
)
from executor.ids import PlanId
from executor.outputs import output_text, page_text, value_text
from executor.plan import Plan
from executor.policy import AgentConfig, AgentLimits, AutoApprove
from executor.records import Event, EventKind, StepState
from executor.refs import StepValue, read_path
from executor.run import (
    ExecutionProgress,
    OnInterrupted,
    RunOwner,
    Scheduler,
    SchedulerConfig,
    rejected_message,
)
from executor.run import ExecutionReport as RunReport
from executor.stats import RunAnalysis, Stats, collect_stats, parse_since, plan_analysis
from executor.status import PlanStatus, StepStatus, check_transition
from executor.store import DatabaseUrl, Store, locate, open_store
from server.answers import BYTES_PER_TOKEN, fit
from server.config import (
    ModelChoice,
    TaskorchConfig,
    load_config,
    local_dir,
    model_for,
    resolve_db_path,
)
from server.views import (
    ExecutionReport,
    PlanList,
    PlanView,
    ProgressView,
    StepOutputPage,
    ToolList,
    plan_view,
    progress_view,
    step_view,
    summaries,
    tool_view,
)

if TYPE_CHECKING:
    from planner.host import HostPlanOutcome
    from planner.models import PlanDraft, PlanRequest

__all__ = [
    "DEFAULT_AGENT",
    "AgentList",
    "ProgressUpdate",
    "TaskOrchestrator",
    "UpdateFn",
    "new_plan_id",
]

logger = logging.getLogger(__name__)

DEFAULT_AGENT = AgentConfig(name="default", description="Used when a request names no agent.")
"""The agent that applies when neither the request nor the config names one."""

_ACTIVE = (
    PlanStatus.DRAFT,
    PlanStatus.AWAITING_CONFIRMATION,
    PlanStatus.CONFIRMED,
    PlanStatus.EXECUTING,
    PlanStatus.INTERRUPTED,
)
_HISTORY = 5
"""Earlier plans of a session shown to the planner."""


def new_plan_id() -> PlanId:
    """A fresh plan id: 12 hex digits, URI-safe."""
    return PlanId(uuid.uuid4().hex[:12])


class AgentList(BaseModel):
    """The answer of `list_agents`."""

    model_config = ConfigDict(frozen=True)

    agents: list[AgentConfig]
    """Every agent, by name."""
    default_agent: str | None = None
    """The agent used when a request names none (`null`: built-in defaults)."""


@dataclass(frozen=True, slots=True)
class ProgressUpdate:
    """One event of a run, with the progress just after it.

    Attributes:
        event: What happened (`step_started`, `step_progress`, `plan_finished`, ...).
        progress: Where the run stands.
    """

    event: Event
    progress: ProgressView


UpdateFn = Callable[[ProgressUpdate], Awaitable[None]]
"""Receives each event of a run with the progress after it."""


class TaskOrchestrator:
    """Plans, approves, runs and reports; the one object every face drives."""

    def __init__(
        self,
        config: TaskorchConfig | None = None,
        *,
        db_path: str | os.PathLike[str] | DatabaseUrl | None = None,
        caller: ToolCaller | None = None,
        log_dir: Path | None = None,
        resume: bool = True,
        secrets: Sequence[str] = (),
    ) -> None:
        """Configure; nothing is opened until the context is entered.

        Args:
            config: The loaded config (an empty one when `None`).
            db_path: The database (file or URL); else resolved from the config and environment.
            caller: Calls downstream tools; a `Pool` over `config.servers` when `None`.
            log_dir: Where stdio servers' stderr goes (default: `logs/` beside the database).
            resume: Whether to resume, in the background, runs a crash interrupted.
            secrets: More values the pool scrubs from what servers send, besides
                their `env` and `headers` values (the CLI gives the HTTP token).
        """
        self.config = config or TaskorchConfig()
        self.db_path = (
            locate(db_path) if db_path is not None else resolve_db_path(None, self.config)
        )
        self._caller_given = caller
        self._log_dir = log_dir
        self._resume = resume
        self._secrets = tuple(secrets)
        self._stack: AsyncExitStack | None = None
        self._store: Store | None = None
        self._caller: ToolCaller | None = None
        self._scheduler: Scheduler | None = None
        self._pool: Any = None
        self._result_cache: tuple[tuple[str, int, str], ToolResult] | None = None

    @classmethod
    def from_paths(
        cls,
        config_path: str | os.PathLike[str] | None = None,
        db_path: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> TaskOrchestrator:
        """Load the config (`--config`, `TASKORCH_CONFIG`, default) and pick the database.

        Raises:
            ConfigError: The config cannot be read or is wrong.
        """
        config = load_config(config_path)
        return cls(config, db_path=resolve_db_path(db_path, config), **kwargs)

    # --- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> TaskOrchestrator:
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            self._store = await stack.enter_async_context(await open_store(self.db_path))
            # Server `taskorch`'s built-in steps run in-process, whoever calls the rest.
            if self._caller_given is not None:
                self._caller = BuiltinCaller(self._caller_given)
            else:
                from executor.downstream import Pool

                limits = self.config.limits
                pool = Pool(
                    self.config.servers,
                    log_dir=self._log_dir or local_dir(self.db_path) / "logs",
                    default_timeout_s=limits.default_timeout_s,
                    max_timeout_s=limits.max_timeout_s,
                    secrets=self._secrets,
                    on_server_event=self._store.record_server_event,
                )
                self._pool = pool
                self._caller = BuiltinCaller(await stack.enter_async_context(pool))
            for agent in self.config.agents.values():
                await self._store.save_agent(agent)
            self._scheduler = await stack.enter_async_context(
                Scheduler(self._store, self._caller, self._scheduler_config())
            )
            tg = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(tg.cancel_scope.cancel)
            if self._resume:
                tg.start_soon(self._resume_runs)
        except BaseException:
            await stack.__aexit__(None, None, None)
            raise
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        try:
            if stack is not None:
                await stack.__aexit__(exc_type, exc, tb)
        except BaseExceptionGroup as group:
            # anyio's task groups wrap the body's own exception; callers of this API
            # get it back as it was raised, not nested in groups.
            if exc is not None and leaf_exceptions(group) == [exc]:
                raise exc from None
            raise
        finally:
            self._scheduler = None
            self._caller = None
            self._store = None

    def _scheduler_config(self) -> SchedulerConfig:
        limits = self.config.limits
        per_server = {
            name: spec.max_concurrency
            for name, spec in self.config.servers.items()
            if spec.max_concurrency is not None
        }
        return SchedulerConfig(
            max_concurrent_executions=limits.max_concurrent_executions,
            max_parallel_steps=limits.max_parallel_steps,
            max_calls_per_server=limits.max_calls_per_server,
            server_max_calls=per_server,
            tool_filters={name: spec.tool_filter for name, spec in self.config.servers.items()},
            lease_s=limits.run_lease_s,
        )

    async def _resume_runs(self) -> None:
        # Not only at start: a run owned by another process on this database (or
        # one we cannot check) is taken over only once its lease lapses, so look
        # again every lease period.
        while True:
            try:
                runs = await self.scheduler.resume()
            except Exception:
                logger.exception("could not resume interrupted runs")
            else:
                if runs:
                    names = ", ".join(r.plan_id for r in runs)
                    logger.info("resumed %d run(s): %s", len(runs), names)
            await anyio.sleep(self.config.limits.run_lease_s)

    @property
    def store(self) -> Store:
        """The open store."""
        if self._store is None:
            raise UserError("the orchestrator is not open: use `async with TaskOrchestrator(...)`")
        return self._store

    @property
    def caller(self) -> ToolCaller:
        """What calls downstream tools (the pool, unless one was given)."""
        if self._caller is None:
            raise UserError("the orchestrator is not open: use `async with TaskOrchestrator(...)`")
        return self._caller

    @property
    def scheduler(self) -> Scheduler:
        """The execution engine."""
        if self._scheduler is None:
            raise UserError("the orchestrator is not open: use `async with TaskOrchestrator(...)`")
        return self._scheduler

    @property
    def pool(self) -> Any:
        """The `executor.downstream.Pool`, or `None` when a caller was given."""
        return self._pool

    # --- agents ---------------------------------------------------------------------------

    async def get_agent_config(self, name: str) -> AgentConfig:
        """The agent of that name.

        Raises:
            NotFoundError: No such agent; the message lists the known ones.
        """
        if name in self.config.agents:
            return self.config.agents[name]  # the operator's, whatever the store holds
        try:
            return await self.store.get_agent(name)
        except NotFoundError:
            known = sorted(a.name for a in await self.store.list_agents())
            listed = ", ".join(repr(n) for n in known) or "none yet (add_agent adds one)"
            raise NotFoundError(f"no agent named {name!r}; known agents: {listed}") from None

    async def add_agent_config(self, agent: AgentConfig | Mapping[str, Any]) -> AgentConfig:
        """Add an agent, or replace one added before; returns it as stored.

        Raises:
            UserError: The mapping is not a valid agent (the message says which field),
                or its name is that of an agent of the config file, ignoring case.
        """
        if not isinstance(agent, AgentConfig):
            try:
                agent = AgentConfig.model_validate(agent)
            except ValueError as exc:
                raise UserError(f"the agent is not valid: {exc}") from exc
        self._check_not_a_config_agent(agent.name)
        await self.store.save_agent(agent)
        return agent

    def _check_not_a_config_agent(self, name: str) -> None:
        # Ignoring case: "OPS" beside the operator's "ops" would pass for it in a list.
        for configured in self.config.agents:
            if configured.casefold() == name.casefold():
                where = self.config.config_path or "the config"
                raise UserError(
                    f"the agent {configured!r} is defined in the config file {where}: "
                    "change it there, or add this one under another name "
                    "(agents from the config cannot be replaced or shadowed)"
                )

    async def list_agent_configs(self) -> AgentList:
        """Every agent, and which one applies by default."""
        by_name = {a.name: a for a in await self.store.list_agents()}
        by_name.update(self.config.agents)
        agents = sorted(by_name.values(), key=lambda a: a.name)
        return AgentList(agents=agents, default_agent=self.config.default_agent)

    async def _resolve_agent(self, name: str | None) -> tuple[AgentConfig, str | None]:
        """The agent that applies, its step limit capped by the config's `limits.max_steps`.

        The built-in default agent allows exactly that limit: one default, in the config.
        """
        chosen = name or self.config.default_agent
        cap = self.config.limits.max_steps
        if chosen is None:
            return DEFAULT_AGENT.model_copy(update={"limits": AgentLimits(max_steps=cap)}), None
        agent = await self.get_agent_config(chosen)
        if agent.limits.max_steps > cap:
            limits = agent.limits.model_copy(update={"max_steps": cap})
            agent = agent.model_copy(update={"limits": limits})
        return agent, chosen

    # --- tools ----------------------------------------------------------------------------

    async def catalog(self) -> Catalog:
        """The tools of every reachable downstream server."""
        return await self.caller.catalog()

    async def list_tools(self, server: str | None = None) -> ToolList:
        """The downstream tools, optionally one server's.

        Raises:
            NotFoundError: `server` is not configured.
        """
        configured = {*self.config.servers, BUILTIN_SERVER}
        if server is not None and self.config.servers and server not in configured:
            known = ", ".join(sorted(configured))
            raise NotFoundError(f"no server named {server!r} is configured; servers: {known}")
        catalog = await self.catalog()
        tools = [tool_view(t) for t in catalog if server is None or t.server == server]
        tools.sort(key=lambda t: (t.server, t.tool))
        down: list[str] = []
        if self._pool is not None:
            down = sorted(h.name for h in self._pool.health() if h.status == "down")
        return ToolList(tools=tools, count=len(tools), servers_down=down)

    # --- plans ----------------------------------------------------------------------------

    async def create_task_plan(
        self,
        query: str,
        session_id: str | None = None,
        agent_id: str | None = None,
        steps: Sequence[Mapping[str, Any]] | None = None,
        *,
        strategy: str = "",
        revise: str | None = None,
        feedback: str = "",
        host_outcome: HostPlanOutcome | None = None,
    ) -> PlanView:
        """Make, validate and store a plan; auto-approve it when the agent's rule allows.

        Args:
            query: What the user wants done.
            session_id: Groups plans; the planner sees the session's earlier plans.
            agent_id: The agent whose policy, limits and approval rule apply.
            steps: Caller-written steps (no model involved); else the planner writes them.
            strategy: The caller's account of its steps.
            revise: Make a new version of this plan instead of a new plan.
            feedback: What to change, when revising with a model.
            host_outcome: A plan the host's model made (the MCP face's sampling path).

        Returns:
            The stored plan, `awaiting_confirmation` or (auto-approved) `confirmed`.

        Raises:
            UserError: The query is empty, the agent unknown, no way to plan is
                configured, or the plan is not valid (`PlanValidationError`, every
                problem listed).
        """
        query = query.strip()
        if not query:
            raise UserError("the query is empty: say what the plan should do")
        agent, agent_name = await self._resolve_agent(agent_id)
        old: Plan | None = None
        if revise is not None:
            old = await self.store.get_plan(revise)
            if old.status in (PlanStatus.CONFIRMED, PlanStatus.EXECUTING, PlanStatus.INTERRUPTED):
                raise UserError(
                    f"plan {old.id!r} is {old.status.value}: cancel it (cancel_execution) "
                    "before revising it"
                )
        plan_id = old.id if old is not None else new_plan_id()
        version = max(await self.store.plan_versions(plan_id), default=0) + 1
        catalog = await self.catalog()
        if host_outcome is not None:
            for attempt in host_outcome.attempts:
                await self.store.record_planner_attempt(
                    attempt.model_copy(update={"plan_id": plan_id})
                )
            draft = host_outcome.unwrap()
        else:
            draft = await self._plan(
                query, agent, catalog, steps, strategy, plan_id, session_id, old, feedback
            )
        plan = draft.to_plan(
            plan_id,
            query=query,
            version=version,
            agent=agent_name,
            session_id=session_id,
            deadline_s=agent.limits.plan_deadline_s,
        )
        # What the run will be bound by, covered by the hash the user approves.
        plan = plan.model_copy(update={"policy": agent.run_policy()})
        auto = self._auto_approves(agent, plan, catalog)
        status = check_transition(
            PlanStatus.DRAFT, PlanStatus.CONFIRMED if auto else PlanStatus.AWAITING_CONFIRMATION
        )
        plan = plan.model_copy(
            update={"status": status, "approved_hash": plan.plan_hash if auto else None}
        )
        events = [
            Event(
                plan_id=plan.id,
                kind=EventKind.PLAN_CREATED,
                data={
                    "version": plan.version,
                    "steps": len(plan.steps),
                    "model": draft.model,
                    "planner_attempts": draft.attempts,
                    "plan_hash": plan.plan_hash,
                },
            )
        ]
        if auto:
            events.append(
                Event(
                    plan_id=plan.id,
                    kind=EventKind.PLAN_CONFIRMED,
                    data={
                        "version": plan.version,
                        "plan_hash": plan.plan_hash,
                        "reason": f"auto-approved: agent {agent.name!r} approves read-only plans",
                    },
                )
            )
        await self.store.save_plan(plan, events=events)
        return plan_view(plan)

    async def _plan(
        self,
        query: str,
        agent: AgentConfig,
        catalog: Catalog,
        steps: Sequence[Mapping[str, Any]] | None,
        strategy: str,
        plan_id: PlanId,
        session_id: str | None,
        old: Plan | None,
        feedback: str,
    ) -> PlanDraft:
        # Imported here: the planner is not needed to serve, and start-up must stay fast.
        from planner import PlanRequest, Revision, StepsPlanner
        from planner.errors import PlannerError
        from planner.planners import Planner

        planner: Planner
        choice: ModelChoice | None = None
        if steps is not None:
            planner = StepsPlanner(list(steps), strategy=strategy)
        else:
            choice = model_for(agent, self.config)
            planner = self._model_planner(choice)
        request = PlanRequest(
            query=query,
            catalog=catalog,
            agent=agent,
            history=await self._history(session_id),
            revision=None if old is None else Revision(plan=old, feedback=feedback),
            plan_id=plan_id,
        )
        try:
            return await planner.plan(request, on_attempt=self.store.record_planner_attempt)
        except PlannerError as exc:
            if choice is None or exc.setting is None:
                raise
            where = _setting_location(choice, exc.setting, self.config)
            raise PlannerError(
                exc.failure,
                f"{exc.message} (the setting: {where})",
                model=exc.model,
                setting=exc.setting,
            ) from exc

    def model_configured(self, agent: AgentConfig | None) -> bool:
        """Whether a litellm model is named for this agent (agent, config or environment)."""
        return model_for(agent, self.config).model is not None

    def _model_planner(self, choice: ModelChoice) -> Any:
        from planner import LiteLLMBackend, ModelPlanner
        from planner.options import DEFAULT_TIMEOUT_S, LOCAL_TIMEOUT_S, PlannerOptions

        if choice.model is None:
            raise UserError(
                "no planning model is configured: pass `steps` yourself (no model needed), "
                "or name a litellm model in the config ('model'), the agent ('model') or "
                "TASKORCH_MODEL, or use a host that supports sampling"
            )
        local = _is_local_model(choice.model, choice.api_base)
        options = PlannerOptions(
            max_repairs=self.config.limits.max_repairs,
            timeout_s=LOCAL_TIMEOUT_S if local else DEFAULT_TIMEOUT_S,
            ordered_steps=local,
        ).with_settings(choice.settings)
        try:
            backend = LiteLLMBackend(
                choice.model,
                api_base=choice.api_base,
                api_key_env=choice.api_key_env,
                timeout_s=options.timeout_s,
                response_mode=options.response_mode,
            )
        except ValueError as exc:
            raise ConfigError(f"the planning model cannot be used: {exc}") from exc
        return ModelPlanner(backend, options)

    async def plan_request(
        self,
        query: str,
        agent_id: str | None,
        session_id: str | None,
        *,
        revise: str | None = None,
        feedback: str = "",
    ) -> PlanRequest:
        """What a planner needs for this query (the MCP face's host-sampling path).

        Raises:
            NotFoundError: The agent or the plan to revise does not exist.
        """
        from planner import PlanRequest, Revision

        agent, _ = await self._resolve_agent(agent_id)
        old = None if revise is None else await self.store.get_plan(revise)
        return PlanRequest(
            query=query.strip() or "(empty query)",
            catalog=await self.catalog(),
            agent=agent,
            history=await self._history(session_id),
            revision=None if old is None else Revision(plan=old, feedback=feedback),
        )

    async def _history(self, session_id: str | None) -> tuple[Any, ...]:
        if session_id is None:
            return ()
        from planner import SessionEntry

        plans = await self.store.list_plans(session_id=session_id, limit=_HISTORY)
        return tuple(SessionEntry.from_plan(p, p.status.value) for p in reversed(plans))

    @staticmethod
    def _auto_approves(agent: AgentConfig, plan: Plan, catalog: Catalog) -> bool:
        if agent.auto_approve is not AutoApprove.READ_ONLY:
            return False
        for step in plan.steps:
            info = catalog.get(step.server, step.tool)
            if info is None or not info.annotations.read_only:
                return False
        return True

    async def confirm_task_plan(
        self,
        plan_id: str,
        approve: bool = True,
        plan_hash: str | None = None,
        reason: str | None = None,
    ) -> PlanView:
        """Approve or reject the latest version of a plan.

        Args:
            plan_id: The plan.
            approve: `True` to approve, `False` to reject.
            plan_hash: The hash the user reviewed; refused when the plan differs.
                `None` approves the latest version as it is.
            reason: Why, kept in the event log.

        Raises:
            NotFoundError: No such plan.
            ApprovalError: The hash does not match, or the plan is past approval.
        """
        plan = await self.store.get_plan(plan_id)
        if plan_hash is not None and plan_hash != plan.plan_hash:
            raise ApprovalError(
                f"plan {plan.id!r} is now version {plan.version} with plan_hash "
                f"{plan.plan_hash!r}, not the {plan_hash!r} given: the plan changed since it "
                "was reviewed; read it again (get_plan) and confirm with its current plan_hash"
            )
        target = PlanStatus.CONFIRMED if approve else PlanStatus.REJECTED
        if plan.status is target or (approve and plan.is_approved):
            return plan_view(plan)  # asked twice: the answer is the same
        if plan.status is PlanStatus.REJECTED:
            raise ApprovalError(rejected_message(plan))
        if plan.status not in (PlanStatus.DRAFT, PlanStatus.AWAITING_CONFIRMATION):
            what = "approved" if approve else "rejected"
            hint = (
                "cancel_execution stops it"
                if plan.status in (PlanStatus.CONFIRMED, PlanStatus.EXECUTING)
                else "create_plan makes a new one"
            )
            raise ApprovalError(
                f"plan {plan.id!r} is {plan.status.value}: only a plan awaiting confirmation "
                f"can be {what}; {hint}"
            )
        kind = EventKind.PLAN_CONFIRMED if approve else EventKind.PLAN_REJECTED
        event = Event(
            plan_id=plan.id,
            kind=kind,
            data={"version": plan.version, "plan_hash": plan.plan_hash, "reason": reason or ""},
        )
        try:
            updated = await self.store.update_plan_status(
                plan.id,
                plan.version,
                target,
                approved_hash=plan.plan_hash if approve else None,
                events=[event],
            )
        except TransitionError:
            # Someone else decided first; answer with what they decided.
            current = await self.store.get_plan(plan.id, plan.version)
            if current.status is target:
                return plan_view(current)
            raise ApprovalError(
                f"plan {plan.id!r} became {current.status.value} meanwhile; "
                "it can no longer be confirmed or rejected"
            ) from None
        return plan_view(updated)

    async def load_plan(self, plan_id: str, version: int | None = None) -> Plan:
        """The stored plan (latest version by default).

        Raises:
            NotFoundError: No such plan or version.
        """
        return await self.store.get_plan(plan_id, version)

    async def plan_with_states(
        self, plan_id: str, version: int | None = None
    ) -> tuple[Plan, dict[str, StepState]]:
        """A plan version and its step states."""
        plan = await self.store.get_plan(plan_id, version)
        return plan, await self.store.get_step_states(plan.id, plan.version)

    async def get_task_plan(self, plan_id: str, version: int | None = None) -> PlanView:
        """A plan with every step's status, attempts, output and error.

        Raises:
            NotFoundError: No such plan or version.
        """
        plan, states = await self.plan_with_states(plan_id, version)
        return fit(
            plan_view(plan, states, await self.plan_timing(plan, states)),
            self.answer_budget_bytes,
        )

    async def plan_timing(
        self, plan: Plan, states: Mapping[str, StepState] | None = None
    ) -> RunAnalysis | None:
        """Where the plan version's latest run spent its time; `None` when it never ran."""
        return await plan_analysis(self.store, plan, states)

    async def get_stats(
        self,
        server: str | None = None,
        tool: str | None = None,
        since: str | datetime | None = None,
    ) -> Stats:
        """Per tool and per server figures from the store (see `executor.stats`).

        Args:
            server: Only this server.
            tool: Only tools of this name.
            since: Only from then on: a duration back from now (`30m`, `1d`) or a time.

        Raises:
            UserError: `since` cannot be read.
            NotFoundError: `server` is neither configured nor in the records.
        """
        start = parse_since(since) if isinstance(since, str) else since
        stats = await collect_stats(self.store, server=server, tool=tool, since=start)
        if server is not None and server not in self.config.servers and not stats.servers:
            known = ", ".join(sorted(self.config.servers)) or "none"
            raise NotFoundError(
                f"no server named {server!r} is configured or has records (configured: {known})"
            )
        return stats

    @property
    def answer_budget_bytes(self) -> int:
        """The most an answer carrying step outputs may cost, in bytes (see `server.answers`)."""
        return self.config.limits.answer_budget_tokens * BYTES_PER_TOKEN

    async def step_result(
        self, plan_id: str, step_id: str, version: int | None = None
    ) -> tuple[Plan, ToolResult]:
        """The whole result of a step that succeeded (latest plan version by default).

        Raises:
            NotFoundError: No such plan, version or step.
            UserError: The step has not succeeded, so it has no output.
        """
        plan, states = await self.plan_with_states(plan_id, version)
        if step_id not in {s.id for s in plan.steps}:
            known = ", ".join(repr(s.id) for s in plan.steps[:50])
            raise NotFoundError(
                f"plan {plan.id!r} version {plan.version} has no step {step_id!r}; "
                f"its steps: {known}"
            )
        state = states.get(step_id)
        if state is None or state.status is not StepStatus.SUCCEEDED:
            status = state.status.value if state is not None else "pending"
            raise UserError(
                f"step {step_id!r} of plan {plan.id!r} is {status}: only a step that "
                "succeeded has an output; execute_plan runs it, get_plan shows where it stands"
            )
        key = (plan.id, plan.version, step_id)
        cached = self._result_cache
        if cached is not None and cached[0] == key:
            return plan, cached[1]
        result = await self.store.get_step_result(*key)
        if result is None:
            # No result kept (a state written without one): the output is all there is.
            output = state.output
            if isinstance(output, dict):
                result = ToolResult(structured_content=output)
            else:
                result = ToolResult(content=[{"type": "text", "text": value_text(output)}])
        # One result kept: a host paging through an output asks for it again and again.
        self._result_cache = (key, result)
        return plan, result

    async def step_output_text(
        self, plan_id: str, step_id: str, path: str = "", version: int | None = None
    ) -> tuple[Plan, str, bool]:
        """A step's output (or the value at `path` in it) as text, and whether it is JSON.

        Raises:
            NotFoundError: No such plan, version or step.
            UserError: The step has no output, or `path` does not exist in it.
        """
        plan, result = await self.step_result(plan_id, step_id, version)
        if not path:
            return (
                plan,
                output_text(result),
                result.structured_content is not None or not (isinstance(result.output(), str)),
            )
        segments = path.split(".")
        if not all(segments):
            raise UserError(
                f"path {path!r} has an empty segment: write keys and array indexes "
                "joined by dots, such as items.0.name"
            )
        try:
            value = read_path(StepValue(result.output(), result.content), segments, root=step_id)
        except StepReferenceError as exc:
            raise UserError(str(exc)) from None
        return plan, value_text(value), not isinstance(value, str)

    async def get_step_output(
        self,
        plan_id: str,
        step_id: str,
        *,
        offset: int = 0,
        limit: int | None = None,
        path: str = "",
        version: int | None = None,
    ) -> StepOutputPage:
        """One page of a step's output, or of the value at a reference path in it.

        Pages are cut between UTF-8 characters; start at 0 and pass each page's
        `next_offset` to get the next; together they are the output byte for byte.

        Args:
            plan_id: The plan.
            step_id: The step.
            offset: Byte offset to start at.
            limit: Most bytes in the page (default: what fits the answer budget).
            path: A reference path inside the output (`items.0`, `content.1.data`).
            version: The plan version (default the latest).

        Raises:
            NotFoundError: No such plan, version or step.
            UserError: No output, a bad path, or an offset outside the text.
        """
        plan, text, is_json = await self.step_output_text(plan_id, step_id, path, version)
        # A page is answered twice over (structured and as text), with room for the rest.
        room = max(self.answer_budget_bytes // 2 - 1024, 1)
        page = page_text(text, offset, room if limit is None else min(limit, room))
        return StepOutputPage(
            plan_id=plan.id,
            version=plan.version,
            step_id=step_id,
            path=path,
            kind="json" if is_json else "text",
            total_bytes=page.total_bytes,
            offset=page.offset,
            next_offset=page.next_offset,
            data=page.data,
        )

    async def step_content(
        self, plan_id: str, step_id: str, index: int, version: int | None = None
    ) -> dict[str, Any]:
        """One content block a step's tool returned, as its JSON object.

        Raises:
            NotFoundError: No such plan, version, step or block.
            UserError: The step has not succeeded.
        """
        _, result = await self.step_result(plan_id, step_id, version)
        if not 0 <= index < len(result.content):
            raise NotFoundError(
                f"step {step_id!r} returned {len(result.content)} content block(s): "
                f"index {index} is not one of them"
            )
        block: dict[str, Any] = result.content[index]
        return block

    async def list_task_plans(
        self,
        statuses: Sequence[PlanStatus] | None = None,
        session_id: str | None = None,
        limit: int = 50,
    ) -> PlanList:
        """Plans, newest first (their latest versions)."""
        plans = await self.store.list_plans(statuses=statuses, session_id=session_id, limit=limit)
        return summaries(plans)

    async def get_active_task_plans(self, session_id: str | None = None) -> PlanList:
        """Plans not finished: draft, awaiting confirmation, confirmed, executing, interrupted."""
        return await self.list_task_plans(statuses=_ACTIVE, session_id=session_id, limit=500)

    # --- execution ------------------------------------------------------------------------

    async def execute_task_plan(
        self,
        plan_id: str,
        wait: bool = True,
        *,
        on_interrupted: OnInterrupted | None = None,
        on_progress: ProgressFn | None = None,
        on_update: UpdateFn | None = None,
    ) -> ExecutionReport:
        """Run an approved plan, re-run a failed one's failed part, or resume an interrupted one.

        Args:
            plan_id: The plan.
            wait: Wait for the end and return the final report; else return at once.
            on_interrupted: `rerun` or `skip` for steps a crash interrupted.
            on_progress: Receives (done steps + fraction of running ones, total, message)
                at every event, increasing; only while waiting.
            on_update: Receives every event of the run with the progress after it;
                only while waiting.

        Raises:
            NotFoundError: No such plan.
            ApprovalError: Not confirmed, or changed since it was.
            UserError: Already running, or nothing left to run.
        """
        run = await self.scheduler.start(plan_id, on_interrupted=on_interrupted)
        if not wait:
            report = run.report()
            progress = run.progress()
            return self._report(run.plan, report, progress, started=True)
        subscriptions = []
        try:
            async with anyio.create_task_group() as tg:
                if on_progress is not None:
                    subscriptions.append(sub := run.subscribe())
                    tg.start_soon(_forward_progress, run, sub, on_progress)
                if on_update is not None:
                    subscriptions.append(sub := run.subscribe())
                    tg.start_soon(_forward_updates, run, sub, on_update)
                try:
                    report = await run.wait()
                finally:
                    for sub in subscriptions:
                        sub.close()
        except ExceptionGroup as group:
            # The run's own error (a store failure, say), not nested in a task group.
            leaves = leaf_exceptions(group)
            if len(leaves) == 1 and isinstance(leaves[0], Exception):
                raise leaves[0] from None
            raise
        progress = await self.scheduler.progress(plan_id)
        return self._report(run.plan, report, progress)

    async def cancel_task_execution(
        self, plan_id: str, *, wait_s: float | None = None
    ) -> ExecutionReport:
        """Cancel a plan's run (or a confirmed plan not started yet).

        A run in another taskorch process is asked to stop, and this waits up to
        `wait_s` seconds (the scheduler's `cancel_wait_s` by default) for it to
        end; the report is `cancelled` once nothing is in flight any more, else
        still `executing`, with a message saying the request is made.

        Raises:
            NotFoundError: No such plan.
            UserError: The plan was never confirmed (reject it instead).
        """
        report = await self.scheduler.cancel(plan_id, wait_s=wait_s)
        plan = await self.store.get_plan(plan_id, report.version)
        return self._report(plan, report, await self.scheduler.progress(plan_id))

    async def run_owner(self, plan_id: str) -> RunOwner | None:
        """Who runs the plan (its latest version), and whether it still does.

        `None` when the plan is not executing.

        Raises:
            NotFoundError: No such plan.
        """
        return await self.scheduler.owner(plan_id)

    async def execution_report(self, plan_id: str, message: str | None = None) -> ExecutionReport:
        """The plan's report as it stands (live for an active run)."""
        report = await self.scheduler.report(plan_id)
        plan = await self.store.get_plan(plan_id, report.version)
        progress = await self.scheduler.progress(plan_id)
        return self._report(plan, report, progress, message=message)

    async def get_progress(self, plan_id: str) -> ProgressView:
        """Where a plan's run stands (live for an active run here, else from the store).

        Raises:
            NotFoundError: No such plan.
        """
        return progress_view(await self.scheduler.progress(plan_id))

    async def subscribe_progress(self, plan_id: str) -> AsyncIterator[ProgressUpdate]:
        """Follow the plan's active run here, event by event, until it ends.

        Yields nothing when the plan has no active run in this process (see
        `poll_progress` to follow a run from its stored events).
        """
        run = self.scheduler.get_run(plan_id)
        if run is None:
            return
        async with run.subscribe() as subscription:
            async for event in subscription:
                yield ProgressUpdate(event, progress_view(run.progress()))

    async def poll_progress(
        self, plan_id: str, *, interval_s: float = 0.25
    ) -> AsyncIterator[ProgressUpdate]:
        """Follow a plan from the store's event log, wherever it runs, until it stops.

        Yields each new stored event with the progress then, and stops once the
        plan is finished, rejected or waiting for a decision, or once nobody runs
        it any more (`executing`, but its owner is gone: see `run_owner`).

        Raises:
            NotFoundError: No such plan.
        """
        plan = await self.store.get_plan(plan_id)
        after = 0
        while True:
            events = await self.store.get_events(plan.id, after_seq=after)
            progress = progress_view(await self.scheduler.progress(plan.id))
            for event in events:
                after = max(after, event.seq)
                yield ProgressUpdate(event, progress)
            if progress.status.is_terminal or progress.status in (
                PlanStatus.INTERRUPTED,
                PlanStatus.AWAITING_CONFIRMATION,
                PlanStatus.DRAFT,
            ):
                if not events:
                    return
                continue
            if progress.status is PlanStatus.EXECUTING and not events:
                owner = await self.scheduler.owner(plan.id)
                if owner is not None and not owner.holds:
                    return  # nothing will happen until someone takes the run over
            await anyio.sleep(interval_s)

    def _report(
        self,
        plan: Plan,
        report: RunReport,
        progress: ExecutionProgress,
        *,
        started: bool = False,
        message: str | None = None,
    ) -> ExecutionReport:
        by_id = {s.id: s for s in report.steps}
        steps = [step_view(step, by_id.get(step.id), plan.id) for step in plan.steps]
        status = report.status
        finished = status.is_terminal or status is PlanStatus.INTERRUPTED
        answer = ExecutionReport(
            plan_id=plan.id,
            version=plan.version,
            status=status,
            finished=finished,
            message=message or report.message or _outcome_message(plan, report, started),
            progress=progress_view(progress),
            steps=steps,
        )
        return fit(answer, self.answer_budget_bytes)


def _outcome_message(plan: Plan, report: RunReport, started: bool) -> str:
    pid = plan.id
    failed = [s.id for s in report.steps if s.status is StepStatus.FAILED]
    match report.status:
        case PlanStatus.COMPLETED:
            return f"All {len(plan.steps)} steps succeeded; each step's output is in `steps`."
        case PlanStatus.FAILED:
            names = ", ".join(failed) or "none"
            return (
                f"The plan failed (failed steps: {names}); read their errors, then "
                f"execute_plan(plan_id={pid!r}) re-runs only what failed or was skipped."
            )
        case PlanStatus.CANCELLED:
            return "The run was cancelled; calls in flight were cancelled downstream."
        case PlanStatus.EXECUTING if started:
            return f"Started; follow it with get_progress(plan_id={pid!r})."
        case _:
            return f"The plan is {report.status.value}."


async def _forward_progress(run: Any, subscription: Any, on_progress: ProgressFn) -> None:
    """Turn a run's events into increasing (progress, total, message) reports."""
    total = float(len(run.plan.steps)) or 1.0
    fractions: dict[str, float] = {}
    last = -1.0
    broken = False
    async for event in subscription:
        if broken:
            continue  # keep draining, so the run's buffer is not held
        snapshot = run.progress()
        done = float(
            sum(n for status, n in snapshot.counts.items() if StepStatus(status).is_terminal)
        )
        step = event.step_id
        if event.kind is EventKind.STEP_PROGRESS and step is not None:
            p, t = event.data.get("progress"), event.data.get("total")
            if isinstance(p, int | float) and isinstance(t, int | float) and t > 0:
                fractions[step] = min(max(float(p) / float(t), 0.0), 0.99)
        elif step is not None and event.kind is not EventKind.STEP_STARTED:
            fractions.pop(step, None)
        running = set(snapshot.running_steps)
        partial = sum(f for s, f in fractions.items() if s in running)
        value = min(done + partial, total)
        # MCP requires each notification's progress to be larger than the last.
        value = value if value > last else math.nextafter(last, math.inf)
        last = value
        try:
            # A downstream progress message is the server's text: keep it to a line.
            await on_progress(value, total, _event_message(event, run)[:500])
        except Exception:
            # The client went away or cannot take notifications: the run goes on.
            logger.debug("progress could not be forwarded", exc_info=True)
            broken = True


async def _forward_updates(run: Any, subscription: Any, on_update: UpdateFn) -> None:
    broken = False
    async for event in subscription:
        if broken:
            continue
        try:
            await on_update(ProgressUpdate(event, progress_view(run.progress())))
        except Exception:
            logger.exception("a progress subscriber failed; it gets no more updates")
            broken = True


def _event_message(event: Event, run: Any) -> str:
    step = event.step_id
    where = ""
    if step is not None:
        with contextlib.suppress(KeyError):
            s = run.plan.step(step)
            where = f" ({s.server}.{s.tool})"
    data = event.data
    match event.kind:
        case EventKind.STEP_STARTED:
            return f"{step}{where}: started"
        case EventKind.STEP_PROGRESS:
            detail = data.get("message")
            if not detail:
                p, t = data.get("progress"), data.get("total")
                detail = f"{p}/{t}" if t is not None else f"{p}"
            return f"{step}{where}: {detail}"
        case EventKind.STEP_SUCCEEDED:
            return f"{step}{where}: succeeded"
        case EventKind.STEP_FAILED | EventKind.STEP_CANCELLED | EventKind.STEP_INTERRUPTED:
            error = data.get("error") or {}
            text = error.get("message", "") if isinstance(error, dict) else str(error)
            return f"{step}{where}: {event.kind.value.removeprefix('step_')}: {text}"[:500]
        case EventKind.STEP_RETRYING:
            return f"{step}{where}: retrying"
        case EventKind.STEP_SKIPPED:
            return f"{step}{where}: skipped"
        case EventKind.PLAN_FINISHED:
            return f"plan {data.get('status', 'finished')}"
        case _:
            return event.kind.value.replace("_", " ")


def _setting_location(choice: ModelChoice, setting: str, config: TaskorchConfig) -> str:
    """Where a planner setting is written: a key path in the config file, or a variable."""
    key = choice.keys.get(setting, setting)
    if key.isupper():
        return f"the environment variable {key}"
    if key.startswith("agents."):
        agent, _, rest = key.removeprefix("agents.").partition(".")
        if agent not in config.agents:
            return f"{rest} of agent {agent!r} (added through add_agent)"
    return f"{key} in {config.config_path or 'the config'}"


_LOCAL_PROVIDERS = ("hosted_vllm/", "ollama/", "ollama_chat/", "llamafile/", "lm_studio/")


def _is_local_model(model: str, api_base: str | None) -> bool:
    """Whether the model runs on this machine: the ordered schema and a longer timeout.

    A small local model writes dependencies it cannot mean (SmolLM2-135M made its
    first step depend on itself under the plain schema); the ordered schema leaves
    no way to. And a CPU writes a few tokens a second, so the default timeout is
    longer (`LOCAL_TIMEOUT_S`).
    """
    if model.startswith(_LOCAL_PROVIDERS):
        return True
    host = (urlsplit(api_base).hostname or "") if api_base else ""
    return host in {"127.0.0.1", "localhost", "::1"}
