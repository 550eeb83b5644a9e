"""Agents: the operator's (from the config file) and the ones added since (in the store).

The config's agents are written to the store at start, read from the config
before the store, and never replaced or shadowed (a name differing only in
case is refused too). The agent a plan runs under has its step limit capped
by the config's `limits.max_steps`; the built-in default agent allows exactly
that many.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from executor import AgentConfig, AgentLimits, NotFoundError, UserError
from server.views import AgentList

if TYPE_CHECKING:
    from executor import Store
    from server.config import TaskorchConfig

__all__ = ["DEFAULT_AGENT", "Agents"]

DEFAULT_AGENT = AgentConfig(name="default", description="Used when a request names no agent.")
"""The agent that applies when neither the request nor the config names one."""


class Agents:
    """The agents a plan may run under, by name."""

    def __init__(self, config: TaskorchConfig, store: Store) -> None:
        """Read the config's agents first, then the store's."""
        self.config = config
        self.store = store

    async def save_configured(self) -> None:
        """Write the config's agents to the store (their plans name them there)."""
        for agent in self.config.agents.values():
            await self.store.save_agent(agent)

    async def get(self, name: str) -> AgentConfig:
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

    async def add(self, agent: AgentConfig | Mapping[str, Any]) -> AgentConfig:
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
        for configured in self.config.agents:
            # Ignoring case: "OPS" beside the operator's "ops" would pass for it in a list.
            if configured.casefold() == agent.name.casefold():
                where = self.config.config_path or "the config"
                raise UserError(
                    f"the agent {configured!r} is defined in the config file {where}: "
                    "change it there, or add this one under another name "
                    "(agents from the config cannot be replaced or shadowed)"
                )
        await self.store.save_agent(agent)
        return agent

    async def listed(self) -> AgentList:
        """Every agent, and which one applies by default."""
        by_name = {a.name: a for a in await self.store.list_agents()}
        by_name.update(self.config.agents)
        agents = sorted(by_name.values(), key=lambda a: a.name)
        return AgentList(agents=agents, default_agent=self.config.default_agent)

    async def resolve(self, name: str | None) -> tuple[AgentConfig, str | None]:
        """The agent that applies (and its name, `None` for the built-in default).

        Its step limit is capped by the config's `limits.max_steps`, which the
        built-in default agent allows exactly: one default, in the config.

        Raises:
            NotFoundError: No such agent.
        """
        chosen = name or self.config.default_agent
        cap = self.config.limits.max_steps
        if chosen is None:
            return DEFAULT_AGENT.model_copy(update={"limits": AgentLimits(max_steps=cap)}), None
        agent = await self.get(chosen)
        if agent.limits.max_steps > cap:
            limits = agent.limits.model_copy(update={"max_steps": cap})
            agent = agent.model_copy(update={"limits": limits})
        return agent, chosen
