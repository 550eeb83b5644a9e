"""What servers send, as taskorch's models: tools as `ToolInfo`s, results as `ToolResult`s.

Everything a server sends enters taskorch through the pool, so here the
configured secrets are scrubbed from it (`Scrubber`).
"""

from __future__ import annotations

import mcp_types

from executor.calls import ToolResult, share_long_strings
from executor.catalog import ToolAnnotations, ToolInfo
from executor.downstream.redact import Scrubber

__all__ = ["to_result", "tool_info"]


def _annotations(raw: mcp_types.ToolAnnotations | None) -> ToolAnnotations:
    if raw is None:
        return ToolAnnotations()
    read_only = bool(raw.read_only_hint)
    destructive = raw.destructive_hint if raw.destructive_hint is not None else True
    return ToolAnnotations(
        read_only=read_only,
        # MCP: destructive and idempotent only mean something for a tool that writes.
        destructive=False if read_only else destructive,
        idempotent=bool(raw.idempotent_hint),
        open_world=raw.open_world_hint if raw.open_world_hint is not None else True,
    )


def tool_info(server: str, tool: mcp_types.Tool, scrub: Scrubber) -> ToolInfo:
    """A listed tool as the catalog knows it, with secrets scrubbed from what a model reads."""
    if scrub:
        tool = tool.model_copy(
            update={
                "title": scrub.json(tool.title),
                "description": scrub.json(tool.description),
                "input_schema": scrub.json(tool.input_schema),
                "output_schema": scrub.json(tool.output_schema),
            }
        )
    title = tool.title or (tool.annotations.title if tool.annotations else None)
    return ToolInfo(
        server=server,
        name=tool.name,
        title=title,
        description=tool.description or "",
        input_schema=tool.input_schema,
        output_schema=tool.output_schema,
        annotations=_annotations(tool.annotations),
    )


def to_result(raw: mcp_types.CallToolResult, scrub: Scrubber) -> ToolResult:
    """A call's result as stored, with secrets scrubbed."""
    # Built by us from an already validated result: skip revalidation on the hot path.
    content = scrub.json(
        [block.model_dump(mode="json", by_alias=True, exclude_none=True) for block in raw.content]
    )
    return ToolResult.model_construct(
        content=content,
        structured_content=share_long_strings(content, scrub.json(raw.structured_content)),
        is_error=bool(raw.is_error),
    )
