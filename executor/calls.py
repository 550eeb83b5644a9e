"""What a tool call returns, and the protocol the scheduler calls tools through."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from executor.catalog import Catalog

if TYPE_CHECKING:
    from executor.task_client import TaskHooks

__all__ = ["ProgressFn", "ToolCaller", "ToolResult", "share_long_strings"]

_LONG = 1024
"""Strings at least this long are worth sharing (see `share_long_strings`)."""


def share_long_strings(content: list[dict[str, Any]], structured: Any) -> Any:
    """`structured`, with each long string equal to a text block's text replaced by it.

    Tools that return structured content usually repeat it as text (a file read:
    the file in a text block and in `structuredContent`). Parsed, the two are
    separate objects; sharing one halves the memory a large result holds while it
    is stored. Containers are changed in place; the value is the same.
    """
    texts = {
        t: t
        for b in content
        if b.get("type") == "text" and isinstance(t := b.get("text"), str) and len(t) >= _LONG
    }
    if not texts or structured is None:
        return structured
    stack: list[Any] = [structured]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, item in items:
            if isinstance(item, str):
                if len(item) >= _LONG and item in texts:
                    node[key] = texts[item]
            elif isinstance(item, dict | list):
                stack.append(item)
    return structured


class ToolResult(BaseModel):
    """A downstream tool's full answer, kept as JSON for the store."""

    # defer_build: the schema is built at first use, not at import (read commands import
    # many models and validate few).
    model_config = ConfigDict(frozen=True, defer_build=True)

    content: list[dict[str, Any]] = Field(default_factory=list)
    """The MCP content blocks, each as its JSON object."""
    structured_content: dict[str, Any] | None = None
    """The `structuredContent`, when the tool returned one."""
    is_error: bool = False
    """The tool's own `isError` flag."""

    def text(self) -> str:
        """The text of every text block, joined by newlines."""
        return "\n".join(str(b.get("text", "")) for b in self.content if b.get("type") == "text")

    def output(self) -> Any:
        """The step output: structured content, else the text (as JSON when it parses)."""
        if self.structured_content is not None:
            return self.structured_content
        text = self.text()
        try:
            return json.loads(text)
        except ValueError:
            return text


class ProgressFn(Protocol):
    """Receives progress a downstream server reports for one call."""

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        """Handle one progress report."""


class ToolCaller(Protocol):
    """Anything that can call downstream tools: the pool, or a test double."""

    async def call(
        self,
        server: str,
        tool: str,
        arguments: dict[str, Any],
        *,
        timeout_s: float | None = None,
        on_progress: ProgressFn | None = None,
        task: TaskHooks | None = None,
    ) -> ToolResult:
        """Call one tool and return its full result.

        `task`, when given, hears of a downstream task the call becomes, or
        names one to follow instead of calling (`executor.task_client`).
        `isError` results are returned, not raised; transport failures raise
        `ToolCallError` with the classified `ErrorKind`.
        """

    async def catalog(self) -> Catalog:
        """Return the current catalog of every reachable server's tools."""
