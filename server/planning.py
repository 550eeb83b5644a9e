"""Making plans: who plans (the caller's steps, a model, the host's), and the new version.

A plan version is made, validated (by the planner, against the live catalog),
bound to its agent's run policy (covered by `plan_hash`), auto-approved when
the agent's rule allows, and stored with its events in one write. The model
planner is injected (`PlannerFor`); by default it is the config's model
selector's (`ConfiguredModels`), and its errors name the setting to change.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from executor import (
    AgentConfig,
    Catalog,
    ConfigError,
    Plan,
    PlanId,
    PlanStatus,
    UserError,
    check_transition,
)
from executor.records import Event, EventKind
from executor.tracing import ATTR, planner_span
from server.agents import Agents
from server.approval import auto_approves
from server.config import ModelChoice, TaskorchConfig, model_for

if TYPE_CHECKING:
    from executor import Store
    from planner.host import HostPlanOutcome
    from planner.models import PlanDraft, PlanRequest, SessionEntry
    from planner.planners import Planner
    from planner.repair import AttemptCallback

__all__ = ["ConfiguredModels", "PlannerFor", "Planning", "new_plan_id"]

_HISTORY = 5
"""Earlier plans of a session shown to the planner."""
_LOCAL_PROVIDERS = ("hosted_vllm/", "ollama/", "ollama_chat/", "llamafile/", "lm_studio/")


def new_plan_id() -> PlanId:
    """A fresh plan id: 12 hex digits, URI-safe."""
    return PlanId(uuid.uuid4().hex[:12])


class PlannerFor(Protocol):
    """Gives the planner for an agent's plans when the caller writes no steps."""

    def __call__(self, agent: AgentConfig) -> Planner | None:
        """The planner, or `None` when none is configured for this agent.

        Raises:
            ConfigError: One is configured but cannot be used.
        """


class ConfiguredModels:
    """The config's models: a litellm `ModelPlanner` per agent, chosen by `model_for`."""

    def __init__(self, config: TaskorchConfig) -> None:
        """Plan with the models `config` (and the environment) name."""
        self.config = config

    def __call__(self, agent: AgentConfig) -> Planner | None:
        """The agent's model planner, or `None` when no model is named for it.

        Raises:
            ConfigError: The model's settings cannot be used.
        """
        choice = model_for(agent, self.config)
        if choice.model is None:
            return None
        # Imported here: the planner's model library is not needed to serve or to read.
        from planner import LiteLLMBackend, ModelPlanner
        from planner.options import DEFAULT_TIMEOUT_S, LOCAL_TIMEOUT_S, PlannerOptions

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
        return _SaysWhere(ModelPlanner(backend, options), choice, self.config)


class _SaysWhere:
    """A model planner whose errors name where the setting to change is written."""

    def __init__(self, inner: Planner, choice: ModelChoice, config: TaskorchConfig) -> None:
        self.inner = inner
        self.choice = choice
        self.config = config

    async def plan(
        self, request: PlanRequest, *, on_attempt: AttemptCallback | None = None
    ) -> PlanDraft:
        """Plan with the model; a `PlannerError` names where its setting is written."""
        from planner.errors import PlannerError

        try:
            return await self.inner.plan(request, on_attempt=on_attempt)
        except PlannerError as exc:
            if exc.setting is None:
                raise
            where = _setting_location(self.choice, exc.setting, self.config)
            raise PlannerError(
                exc.failure,
                f"{exc.message} (the setting: {where})",
                model=exc.model,
                setting=exc.setting,
            ) from exc


class Planning:
    """Makes and stores plan versions."""

    def __init__(
        self,
        store: Store,
        agents: Agents,
        catalog: Callable[[], Awaitable[Catalog]],
        planner_for: PlannerFor,
    ) -> None:
        """Plan over `catalog` with `planner_for`'s planners, for `agents`, into `store`."""
        self.store = store
        self.agents = agents
        self.catalog = catalog
        self.planner_for = planner_for

    async def create(
        self,
        query: str,
        *,
        session_id: str | None,
        agent_id: str | None,
        steps: Sequence[Mapping[str, Any]] | None,
        strategy: str,
        revise: str | None,
        feedback: str,
        host_outcome: HostPlanOutcome | None,
    ) -> Plan:
        """Make, validate and store a plan (see `TaskOrchestrator.create_task_plan`)."""
        query = query.strip()
        if not query:
            raise UserError("the query is empty: say what the plan should do")
        agent, agent_name = await self.agents.resolve(agent_id)
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
            planner = self._planner(agent, steps, strategy)
            request = await self._request(query, agent, catalog, session_id, old, feedback)
            request = request.model_copy(update={"plan_id": plan_id})
            attributes = {ATTR["plan_id"]: plan_id, "taskorch.agent": agent_name}
            with planner_span("plan", attributes):
                draft = await planner.plan(request, on_attempt=self.store.record_planner_attempt)
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
        auto = auto_approves(agent, plan, catalog)
        status = check_transition(
            PlanStatus.DRAFT, PlanStatus.CONFIRMED if auto else PlanStatus.AWAITING_CONFIRMATION
        )
        plan = plan.model_copy(
            update={"status": status, "approved_hash": plan.plan_hash if auto else None}
        )
        await self.store.save_plan(plan, events=_created_events(plan, agent, draft, auto))
        return plan

    def _planner(
        self, agent: AgentConfig, steps: Sequence[Mapping[str, Any]] | None, strategy: str
    ) -> Planner:
        if steps is not None:
            from planner import StepsPlanner

            return StepsPlanner(list(steps), strategy=strategy)
        planner = self.planner_for(agent)
        if planner is None:
            raise UserError(
                "no planning model is configured: pass `steps` yourself (no model needed), "
                "or name a litellm model in the config ('model'), the agent ('model') or "
                "TASKORCH_MODEL, or use a host that supports sampling"
            )
        return planner

    def has_planner(self, agent: AgentConfig) -> bool:
        """Whether a planner is configured for this agent (else the host's model may plan)."""
        try:
            return self.planner_for(agent) is not None
        except ConfigError:
            return True  # configured, if wrongly: planning says what to fix

    async def request(
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
        agent, _ = await self.agents.resolve(agent_id)
        old = None if revise is None else await self.store.get_plan(revise)
        catalog = await self.catalog()
        return await self._request(
            query.strip() or "(empty query)", agent, catalog, session_id, old, feedback
        )

    async def _request(
        self,
        query: str,
        agent: AgentConfig,
        catalog: Catalog,
        session_id: str | None,
        old: Plan | None,
        feedback: str,
    ) -> PlanRequest:
        from planner import PlanRequest, Revision

        return PlanRequest(
            query=query,
            catalog=catalog,
            agent=agent,
            history=await self._history(session_id),
            revision=None if old is None else Revision(plan=old, feedback=feedback),
        )

    async def _history(self, session_id: str | None) -> tuple[SessionEntry, ...]:
        if session_id is None:
            return ()
        from planner import SessionEntry

        plans = await self.store.list_plans(session_id=session_id, limit=_HISTORY)
        return tuple(SessionEntry.from_plan(p, p.status.value) for p in reversed(plans))


def _created_events(plan: Plan, agent: AgentConfig, draft: PlanDraft, auto: bool) -> list[Event]:
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
    return events


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
