"""`TaskOrchestrator`: the Python API, and what the MCP tools and the CLI call.

It opens and wires the parts (the store, the caller of downstream tools, the
scheduler, the planners; each injectable) and answers with `views` fitted to
the answer budget; the work is done by `agents`, `planning`, `approval`,
`outputs` and `progress`. Leaving stops runs as a crash would (the next start
resumes them) and ends every downstream server.
"""

from __future__ import annotations

import logging
import os
import secrets as secrets_module
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc

from executor import AgentConfig, NotFoundError, PlanStatus, UserError
from executor._utils import leaf_exceptions
from executor.store.location import DatabaseUrl, locate, open_store
from server.agents import Agents
from server.answers import BYTES_PER_TOKEN, fit
from server.config import TaskorchConfig, load_config, local_dir, resolve_db_path
from server.views import (
    AgentList,
    PlanList,
    PlanView,
    ProgressView,
    RunView,
    StepOutputPage,
    ToolList,
    plan_view,
    progress_view,
    run_view,
    summaries,
    tool_view,
)

if TYPE_CHECKING:
    from executor import (
        Catalog,
        OnInterrupted,
        Plan,
        Pool,
        ProgressFn,
        RunAnalysis,
        RunOwner,
        Scheduler,
        SchedulerConfig,
        ServerHealth,
        Stats,
        StepState,
        Store,
        ToolCaller,
        ToolResult,
    )
    from planner.host import HostPlanOutcome
    from planner.models import PlanRequest
    from server.outputs import StepOutputs
    from server.planning import PlannerFor, Planning
    from server.progress import ProgressUpdate, UpdateFn

# Imported where used, not here: the CLI's read commands open this service, and
# the built-in steps, planning, approval, statistics and run-following cost
# start-up time they never use (tests/server/test_cli_imports.py pins it).

__all__ = ["TaskOrchestrator"]

logger = logging.getLogger(__name__)

_ACTIVE = (
    PlanStatus.DRAFT,
    PlanStatus.AWAITING_CONFIRMATION,
    PlanStatus.CONFIRMED,
    PlanStatus.EXECUTING,
    PlanStatus.INTERRUPTED,
)


@dataclass(slots=True)
class _Open:
    """What an open orchestrator works with."""

    store: Store
    caller: ToolCaller | None
    """Made when first needed, when nothing runs (it loads jsonschema for the built-ins)."""
    scheduler: Scheduler | None
    agents: Agents
    planning: Planning | None = None
    """Made when first needed (commands that only read never plan)."""
    outputs: StepOutputs | None = None
    """Made when first needed."""
    background: anyio.abc.TaskGroup | None = None
    """Work that lives as long as the orchestrator (planning tasks); cancelled on leaving."""


class TaskOrchestrator:
    """Plans, approves, runs and reports; the one object every face drives."""

    def __init__(
        self,
        config: TaskorchConfig | None = None,
        *,
        db_path: str | os.PathLike[str] | DatabaseUrl | None = None,
        store: Store | None = None,
        caller: ToolCaller | None = None,
        planner_for: PlannerFor | None = None,
        connect: bool = True,
        engine: bool = True,
        log_dir: Path | None = None,
        resume: bool = True,
        secrets: Sequence[str] = (),
    ) -> None:
        """Configure; nothing is opened until the context is entered.

        Args:
            config: The loaded config (an empty one when `None`).
            db_path: The database: an SQLite file or a postgresql:// URL; else resolved
                from the config and environment.
            store: An open store to use instead of opening `db_path` (left open).
            caller: Calls downstream tools; a `Pool` over `config.servers` when `None`.
            planner_for: Gives the planner for an agent when the caller writes no
                steps; the config's models (`ConfiguredModels`) when `None`.
            connect: With no `caller`, whether to connect to the config's servers;
                `False` for commands that only read or decide (only the built-in
                steps can then run, and the SDK's client is never loaded).
            engine: Start the run engine (the scheduler), which running, cancelling
                and following runs need; `False` for commands that only read plans
                or decide on them (and then nothing of the engine is loaded).
            log_dir: Where stdio servers' stderr goes (default: `logs/` beside the database).
            resume: Whether to resume, in the background, runs a crash interrupted.
            secrets: More values the pool scrubs from what servers send, besides
                their `env` and `headers` values (the CLI gives the HTTP token).
        """
        self.config = config or TaskorchConfig()
        self.db_path = (
            locate(db_path) if db_path is not None else resolve_db_path(None, self.config)
        )
        self._store_given = store
        self._caller_given = caller
        self._planner_for = planner_for
        self._connect = connect
        self._engine = engine
        self._log_dir = log_dir
        self._resume = resume
        self._secrets = tuple(secrets)
        self._stack: AsyncExitStack | None = None
        self._open: _Open | None = None
        self._pool: Pool | None = None
        self.request_state_key: bytes = secrets_module.token_bytes(32)
        """Seals the MCP face's requestState; the store's own key once opened."""

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
            store = self._store_given
            if store is None:
                store = await stack.enter_async_context(await open_store(self.db_path))
            # Kept in the store, so a question asked before a restart is answered after it.
            self.request_state_key = await store.server_key("request_state")
            # Server `taskorch`'s built-in steps run in-process, whoever calls the rest.
            inner = self._caller_given
            if inner is None and self._connect:
                self._pool = await stack.enter_async_context(self._new_pool(store))
                inner = self._pool
            caller = None
            if inner is not None or self._engine:
                from executor.builtins import BuiltinCaller

                caller = BuiltinCaller(inner)
            agents = Agents(self.config, store)
            await agents.save_configured()
            scheduler = None
            if self._engine:
                from executor import Scheduler

                assert caller is not None
                scheduler = await stack.enter_async_context(
                    Scheduler(store, caller, _engine_config(self.config))
                )
            self._open = _Open(store=store, caller=caller, scheduler=scheduler, agents=agents)
            tg = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(tg.cancel_scope.cancel)
            self._open.background = tg
            if self._resume and scheduler is not None:
                tg.start_soon(self._resume_runs)
        except BaseException:
            self._open = self._pool = None
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
            self._open = self._pool = None

    def _new_pool(self, store: Store) -> Pool:
        from executor import Pool

        limits = self.config.limits
        return Pool(
            self.config.servers,
            log_dir=self._log_dir or local_dir(self.db_path) / "logs",
            default_timeout_s=limits.default_timeout_s,
            max_timeout_s=limits.max_timeout_s,
            secrets=self._secrets,
            on_server_event=store.record_server_event,
            allow_sampling=self.config.allow_sampling,
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
    def _opened(self) -> _Open:
        """The parts of the open orchestrator."""
        if self._open is None:
            raise UserError("the orchestrator is not open: use `async with TaskOrchestrator(...)`")
        return self._open

    @property
    def store(self) -> Store:
        """The open store."""
        return self._opened.store

    @property
    def caller(self) -> ToolCaller:
        """What calls tools: the built-in steps, then the pool (unless a caller was given)."""
        opened = self._opened
        if opened.caller is None:
            from executor.builtins import BuiltinCaller

            opened.caller = BuiltinCaller()  # nothing downstream: the built-in steps alone
        return opened.caller

    @property
    def _planning(self) -> Planning:
        opened = self._opened
        if opened.planning is None:
            from server.planning import ConfiguredModels, Planning

            planner_for = self._planner_for or ConfiguredModels(self.config)
            opened.planning = Planning(opened.store, opened.agents, self.catalog, planner_for)
        return opened.planning

    @property
    def _outputs(self) -> StepOutputs:
        opened = self._opened
        if opened.outputs is None:
            from server.outputs import StepOutputs

            opened.outputs = StepOutputs(opened.store, self.answer_budget_bytes)
        return opened.outputs

    @property
    def scheduler(self) -> Scheduler:
        """The execution engine.

        Raises:
            UserError: The orchestrator was opened without it (`engine=False`).
        """
        scheduler = self._opened.scheduler
        if scheduler is None:
            raise UserError(
                "this orchestrator was opened without the run engine (engine=False): "
                "open it with engine=True to run, cancel or follow runs"
            )
        return scheduler

    @property
    def background(self) -> anyio.abc.TaskGroup:
        """A task group for work that outlives a request and ends with the orchestrator."""
        group = self._opened.background
        if group is None:
            raise UserError("the orchestrator is still opening: background work cannot start")
        return group

    @property
    def pool(self) -> Pool | None:
        """The pool of the config's servers; `None` when a caller was given or not connecting."""
        return self._pool

    @property
    def answer_budget_bytes(self) -> int:
        """The most an answer carrying step outputs may cost, in bytes (see `server.answers`)."""
        return self.config.limits.answer_budget_tokens * BYTES_PER_TOKEN

    # --- agents and tools -----------------------------------------------------------------

    async def get_agent_config(self, name: str) -> AgentConfig:
        """The agent of that name (see `Agents.get`)."""
        return await self._opened.agents.get(name)

    async def add_agent_config(self, agent: AgentConfig | Mapping[str, Any]) -> AgentConfig:
        """Add an agent, or replace one added before (see `Agents.add`)."""
        return await self._opened.agents.add(agent)

    async def list_agent_configs(self) -> AgentList:
        """Every agent, and which one applies by default."""
        return await self._opened.agents.listed()

    async def catalog(self) -> Catalog:
        """The tools of every reachable downstream server, and why configured ones are down."""
        catalog = await self.caller.catalog()
        down = {h.name: _why_down(h) for h in self._health() if h.status == "down"}
        return catalog.with_down(down) if down else catalog

    def _health(self) -> list[ServerHealth]:
        return [] if self._pool is None else self._pool.health()

    async def list_tools(self, server: str | None = None) -> ToolList:
        """The downstream tools, optionally one server's.

        Raises:
            NotFoundError: `server` is not configured.
        """
        from executor.builtins import BUILTIN_SERVER

        configured = {*self.config.servers, BUILTIN_SERVER}
        if server is not None and self.config.servers and server not in configured:
            known = ", ".join(sorted(configured))
            raise NotFoundError(f"no server named {server!r} is configured; servers: {known}")
        catalog = await self.catalog()
        tools = [tool_view(t) for t in catalog if server is None or t.server == server]
        tools.sort(key=lambda t: (t.server, t.tool))
        return ToolList(tools=tools, count=len(tools), servers_down=sorted(catalog.down))

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
        plan = await self._planning.create(
            query,
            session_id=session_id,
            agent_id=agent_id,
            steps=steps,
            strategy=strategy,
            revise=revise,
            feedback=feedback,
            host_outcome=host_outcome,
        )
        return plan_view(plan)

    async def plans_with_model(self, agent_id: str | None) -> bool:
        """Whether a model is configured to plan for this agent (`False` for an unknown one)."""
        try:
            agent, _ = await self._opened.agents.resolve(agent_id)
        except NotFoundError:
            return False  # planning reports the unknown agent
        return self._planning.has_planner(agent)

    def model_configured(self, agent: AgentConfig | None) -> bool:
        """Whether a planner is configured for this agent (agent, config or environment)."""
        return self._planning.has_planner(agent or AgentConfig(name="default"))

    async def plan_request(
        self,
        query: str,
        agent_id: str | None,
        session_id: str | None,
        *,
        revise: str | None = None,
        feedback: str = "",
    ) -> PlanRequest:
        """What a planner needs for this query (the MCP face's host-sampling path)."""
        return await self._planning.request(
            query, agent_id, session_id, revise=revise, feedback=feedback
        )

    async def confirm_task_plan(
        self,
        plan_id: str,
        approve: bool = True,
        plan_hash: str | None = None,
        reason: str | None = None,
    ) -> PlanView:
        """Approve or reject the latest version of a plan (see `approval.record_decision`).

        Raises:
            NotFoundError: No such plan.
            ApprovalError: The hash does not match, or the plan is past approval.
        """
        from server.approval import record_decision

        return plan_view(await record_decision(self.store, plan_id, approve, plan_hash, reason))

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
        view = plan_view(plan, states, await self.plan_timing(plan, states))
        return fit(view, self.answer_budget_bytes)

    async def plan_timing(
        self, plan: Plan, states: Mapping[str, StepState] | None = None
    ) -> RunAnalysis | None:
        """Where the plan version's latest run spent its time; `None` when it never ran."""
        from executor.stats import plan_analysis

        return await plan_analysis(self.store, plan, states)

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
        from executor.stats import collect_stats, parse_since

        start = parse_since(since) if isinstance(since, str) else since
        stats = await collect_stats(self.store, server=server, tool=tool, since=start)
        if server is not None and server not in self.config.servers and not stats.servers:
            known = ", ".join(sorted(self.config.servers)) or "none"
            raise NotFoundError(
                f"no server named {server!r} is configured or has records (configured: {known})"
            )
        return stats

    # --- outputs --------------------------------------------------------------------------

    async def step_result(
        self, plan_id: str, step_id: str, version: int | None = None
    ) -> tuple[Plan, ToolResult]:
        """The whole result of a step that succeeded (see `StepOutputs.result`)."""
        return await self._outputs.result(plan_id, step_id, version)

    async def step_output_text(
        self, plan_id: str, step_id: str, path: str = "", version: int | None = None
    ) -> tuple[Plan, str, bool]:
        """A step's output, or the value at `path` in it, as text (see `StepOutputs.text`)."""
        return await self._outputs.text(plan_id, step_id, path, version)

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
        """One page of a step's output, or of the value at a path in it (`StepOutputs.page`)."""
        return await self._outputs.page(
            plan_id, step_id, offset=offset, limit=limit, path=path, version=version
        )

    async def step_content(
        self, plan_id: str, step_id: str, index: int, version: int | None = None
    ) -> dict[str, Any]:
        """One content block a step's tool returned (see `StepOutputs.content`)."""
        return await self._outputs.content(plan_id, step_id, index, version)

    # --- runs -----------------------------------------------------------------------------

    async def execute_task_plan(
        self,
        plan_id: str,
        wait: bool = True,
        *,
        on_interrupted: OnInterrupted | None = None,
        on_progress: ProgressFn | None = None,
        on_update: UpdateFn | None = None,
    ) -> RunView:
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
        from server.progress import follow

        run = await self.scheduler.start(plan_id, on_interrupted=on_interrupted)
        if not wait:
            view = run_view(run.plan, run.report(), run.progress(), started=True)
            return fit(view, self.answer_budget_bytes)
        report = await follow(run, on_progress=on_progress, on_update=on_update)
        progress = await self.scheduler.progress(plan_id)
        return fit(run_view(run.plan, report, progress), self.answer_budget_bytes)

    async def cancel_task_execution(self, plan_id: str, *, wait_s: float | None = None) -> RunView:
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
        progress = await self.scheduler.progress(plan_id)
        return fit(run_view(plan, report, progress), self.answer_budget_bytes)

    async def execution_report(self, plan_id: str, message: str | None = None) -> RunView:
        """The plan's report as it stands (live for an active run)."""
        report = await self.scheduler.report(plan_id)
        plan = await self.store.get_plan(plan_id, report.version)
        progress = await self.scheduler.progress(plan_id)
        view = run_view(plan, report, progress, message=message)
        return fit(view, self.answer_budget_bytes)

    async def run_owner(self, plan_id: str) -> RunOwner | None:
        """Who runs the plan (its latest version), and whether it still does.

        `None` when the plan is not executing.

        Raises:
            NotFoundError: No such plan.
        """
        return await self.scheduler.owner(plan_id)

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
        from server.progress import ProgressUpdate

        run = self.scheduler.get_run(plan_id)
        if run is None:
            return
        async with run.subscribe() as subscription:
            async for event in subscription:
                yield ProgressUpdate(event, progress_view(run.progress()))

    def poll_progress(
        self, plan_id: str, *, interval_s: float = 0.25
    ) -> AsyncIterator[ProgressUpdate]:
        """Follow a plan from the store's event log, wherever it runs (see `progress.poll`).

        Raises:
            NotFoundError: No such plan.
        """
        from server.progress import poll

        return poll(self.store, self.scheduler, plan_id, interval_s=interval_s)


def _engine_config(config: TaskorchConfig) -> SchedulerConfig:
    """The scheduler's settings: the config's limits and each server's own bounds."""
    from executor import SchedulerConfig

    limits = config.limits
    return SchedulerConfig(
        max_concurrent_executions=limits.max_concurrent_executions,
        max_parallel_steps=limits.max_parallel_steps,
        max_calls_per_server=limits.max_calls_per_server,
        server_max_calls={
            name: spec.max_concurrency
            for name, spec in config.servers.items()
            if spec.max_concurrency is not None
        },
        tool_filters={name: spec.tool_filter for name, spec in config.servers.items()},
        lease_s=limits.run_lease_s,
    )


def _why_down(health: ServerHealth) -> str:
    """Why a server is down, in its words: the error, and its last stderr line when that adds."""
    why = health.error or "it could not be reached"
    extra = [line for line in health.stderr_tail if line and line not in why]
    return f"{why}; its last stderr line: {extra[-1]}" if extra else why
