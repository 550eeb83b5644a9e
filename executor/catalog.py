"""The tool catalog: every downstream tool, named by the pair (server, tool)."""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Catalog", "ToolAnnotations", "ToolInfo", "make_alias"]

_ALIAS_BAD = re.compile(r"[^A-Za-z0-9_-]+")
ALIAS_MAX = 64


class ToolAnnotations(BaseModel):
    """The behaviour hints a server gives for a tool (MCP `ToolAnnotations`)."""

    # defer_build: the schema is built at first use, not at import (read commands import
    # many models and validate few).
    model_config = ConfigDict(frozen=True, defer_build=True)

    read_only: bool = False
    """The tool does not change its environment."""
    destructive: bool = True
    """The tool may destroy or overwrite things (MCP's default is true)."""
    idempotent: bool = False
    """Calling it again with the same arguments has no further effect."""
    open_world: bool = True
    """The tool reaches outside a closed domain (MCP's default is true)."""

    @property
    def safe_to_repeat(self) -> bool:
        """Whether re-running a call that may already have happened is harmless."""
        return self.read_only or self.idempotent


class ToolInfo(BaseModel):
    """One downstream tool as the catalog knows it."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    server: str
    """The server's configured name."""
    name: str
    """The tool's name on that server."""
    alias: str = ""
    """A name matching `^[A-Za-z0-9_-]{1,64}$`, unique in the catalog, for LLMs."""
    title: str | None = None
    """A human title, when the server gives one."""
    description: str = ""
    """The server's description."""
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    """JSON Schema of the arguments."""
    output_schema: dict[str, Any] | None = None
    """JSON Schema of the structured output, when declared."""
    annotations: ToolAnnotations = ToolAnnotations()
    """Behaviour hints."""

    @property
    def key(self) -> tuple[str, str]:
        """The identity of the tool: (server, tool)."""
        return (self.server, self.name)


def make_alias(server: str, tool: str, taken: set[str]) -> str:
    """Make an LLM-safe, unique alias for (server, tool).

    The alias is `server__tool` with unsafe characters replaced; when that is
    too long or already taken, a short digest of the exact pair keeps it unique.

    Args:
        server: Server name.
        tool: Tool name.
        taken: Aliases already in use; not modified.
    """
    base = _ALIAS_BAD.sub("_", f"{server}__{tool}").strip("_") or "tool"
    if len(base) <= ALIAS_MAX and base not in taken:
        return base
    digest = hashlib.sha256(f"{server}\x00{tool}".encode()).hexdigest()
    for width in range(6, len(digest) + 1):
        suffix = "-" + digest[:width]
        candidate = base[: ALIAS_MAX - len(suffix)] + suffix
        if candidate not in taken:
            return candidate
    raise ValueError(f"cannot make a unique alias for {server!r}/{tool!r}")


class Catalog:
    """An immutable set of tools, looked up by (server, tool) or by alias."""

    def __init__(self, tools: Iterable[ToolInfo] = ()) -> None:
        by_key: dict[tuple[str, str], ToolInfo] = {}
        taken: set[str] = set()
        # Sort so aliases do not depend on the order servers answered in.
        for info in sorted(tools, key=lambda t: t.key):
            alias = make_alias(info.server, info.name, taken)
            taken.add(alias)
            by_key[info.key] = info.model_copy(update={"alias": alias})
        self._by_key = by_key
        self._by_alias = {t.alias: t for t in by_key.values()}
        self._down: Mapping[str, str] = {}

    @property
    def down(self) -> Mapping[str, str]:
        """Configured servers that are down (their tools are missing), and why."""
        return self._down

    def with_down(self, down: Mapping[str, str]) -> Catalog:
        """The same tools, knowing which configured servers are down and why."""
        other = copy.copy(self)
        other._down = dict(down)
        return other

    def get(self, server: str, tool: str) -> ToolInfo | None:
        """Return the tool, or `None` when the catalog has no such pair."""
        return self._by_key.get((server, tool))

    def by_alias(self, alias: str) -> ToolInfo | None:
        """Return the tool with this alias, or `None`."""
        return self._by_alias.get(alias)

    def servers(self) -> list[str]:
        """Names of the servers that have at least one tool, sorted."""
        return sorted({s for s, _ in self._by_key})

    def tools_of(self, server: str) -> list[ToolInfo]:
        """The tools of one server, sorted by name."""
        return [t for (s, _), t in self._by_key.items() if s == server]

    def __iter__(self) -> Iterator[ToolInfo]:
        return iter(self._by_key.values())

    def __len__(self) -> int:
        return len(self._by_key)

    def __contains__(self, key: object) -> bool:
        return key in self._by_key
