"""The tool checks: every step's tool exists and the agent's policy allows it.

A tool that does not exist gets the nearest names the policy allows (a model
that wrote an alias, or `server.tool` in one field, is told how to write it);
a step whose tool is known then has its arguments checked against the tool's
`inputSchema` (`executor.validate.arguments`).
"""

from __future__ import annotations

from executor.catalog import Catalog
from executor.plan import Step
from executor.policy import ToolPolicy
from executor.validate._utils import MAX_SHOWN, close_matches, or_list
from executor.validate.arguments import Validators, argument_errors, compiled
from executor.validate.problem import Problem

__all__ = ["ToolCheck"]


class ToolCheck:
    """Checks each step's tool and arguments, remembering per-tool work for the plan."""

    def __init__(self, catalog: Catalog | None, policy: ToolPolicy | None) -> None:
        self.catalog = catalog
        self.policy = policy
        self._tool_problems: dict[tuple[str, str], tuple[str, str] | None] = {}
        self._validators: dict[tuple[str, str], Validators | None] = {}
        self._names: list[str] | None = None

    def check(self, step: Step) -> list[Problem]:
        """The step's tool problem (unknown, not allowed), else its argument problems."""
        key = (step.server, step.tool)
        if key not in self._tool_problems:
            self._tool_problems[key] = self._tool_problem(step.server, step.tool)
        found = self._tool_problems[key]
        if found is not None:
            return [Problem(step.id, found[0], found[1])]
        if self.catalog is None:
            return []
        if key not in self._validators:
            info = self.catalog.get(step.server, step.tool)
            self._validators[key] = None if info is None else compiled(info.input_schema)
        validators = self._validators[key]
        if validators is None:
            return []
        return [
            Problem(step.id, "invalid_arguments", message)
            for message in argument_errors(f"{step.server}.{step.tool}", step.arguments, validators)
        ]

    def _tool_problem(self, server: str, tool: str) -> tuple[str, str] | None:
        name = f"{server}.{tool}"
        if self.catalog is not None and self.catalog.get(server, tool) is None:
            return ("unknown_tool", self._unknown_tool_message(server, tool))
        if self.policy is not None:
            reason = self.policy.explain(server, tool)
            if reason is not None:
                close = self._close_names(name)
                instead = (
                    f"use an allowed tool such as {or_list(close)}"
                    if close
                    else "use an allowed tool"
                )
                return (
                    "tool_not_allowed",
                    f"the tool {name!r} is not allowed ({reason}): {instead}",
                )
        return None

    def _unknown_tool_message(self, server: str, tool: str) -> str:
        assert self.catalog is not None
        catalog = self.catalog
        name = f"{server}.{tool}"
        exact = _alias_match(catalog, server, tool)
        if exact is not None and self._allowed(*exact):
            guess = f"{exact[0]}.{exact[1]}"
            return (
                f"there is no tool {name!r}: did you mean {guess!r}? Write server "
                f"{exact[0]!r} and tool {exact[1]!r} as separate fields"
            )
        why_down = catalog.down.get(server)
        if why_down is not None:
            return (
                f"the server {server!r} is configured but down ({why_down}): its tools can be "
                "neither checked nor called; fix it (`taskorch config check` says how it "
                "stands) or use another server"
            )
        close = self._close_names(name)
        if server not in catalog.servers():
            servers = catalog.servers()
            known = ", ".join(repr(s) for s in servers[:MAX_SHOWN]) or "none"
            head = f"there is no server {server!r} (servers: {known})"
        else:
            head = f"the server {server!r} has no tool {tool!r}"
            if not close:
                tools = [t.name for t in catalog.tools_of(server) if self._allowed(server, t.name)]
                listed = ", ".join(repr(t) for t in tools[:MAX_SHOWN]) or "none allowed"
                return f"{head}: use one of its tools ({listed})"
        if close:
            return f"{head}: did you mean {or_list(close)}?"
        return f"{head}: use a tool from the catalog"

    def _close_names(self, name: str) -> list[str]:
        if self.catalog is None:
            return []
        if self._names is None:
            self._names = [
                f"{t.server}.{t.name}" for t in self.catalog if self._allowed(t.server, t.name)
            ]
        return close_matches(name, self._names)

    def _allowed(self, server: str, tool: str) -> bool:
        return self.policy is None or self.policy.allows(server, tool)


def _alias_match(catalog: Catalog, server: str, tool: str) -> tuple[str, str] | None:
    """The tool meant when a model wrote an alias or `server.tool` in one field."""
    for guess in (tool, server, f"{server}__{tool}"):
        info = catalog.by_alias(guess)
        if info is not None:
            return info.key
    prefix = f"{server}."
    if tool.startswith(prefix) and catalog.get(server, tool[len(prefix) :]) is not None:
        return (server, tool[len(prefix) :])
    return None
