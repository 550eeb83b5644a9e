"""A tool's answer carrying a plan or a run: its JSON, the images that fit, links to the rest."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from mcp_types import CallToolResult, ContentBlock, ImageContent, ResourceLink, TextContent

from server.answers import MAX_LINKS, answer_bytes
from server.views import PlanView, RunView

if TYPE_CHECKING:
    from server.service import TaskOrchestrator

__all__ = ["tool_result"]


async def tool_result(orch: TaskOrchestrator, view: PlanView | RunView) -> CallToolResult:
    """The tool result for a bounded view: its JSON, images that fit, links to the rest.

    The view is already fitted (`server.answers.fit`) with room for a link per preview
    and per non-text block; an image replaces its link when the budget still has room.
    """
    data = view.model_dump(mode="json")
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    used = answer_bytes(view)
    budget = orch.answer_budget_bytes
    blocks: list[ContentBlock] = [TextContent(text=text)]
    links = 0
    for step in view.steps:
        candidates: list[tuple[str, str, str | None, int]] = []
        if step.output_preview is not None:
            preview = step.output_preview
            of_output = "application/json" if preview.kind == "json" else "text/plain"
            candidates.append((preview.uri, f"{step.id} output", of_output, preview.size_bytes))
        for item in step.content:
            if item.type == "text":
                continue
            if item.type == "image" and used + item.size_bytes <= budget:
                block = await orch.step_content(view.plan_id, step.id, item.index, view.version)
                blocks.append(
                    ImageContent(data=str(block["data"]), mime_type=item.mime_type or "image/png")
                )
                used += item.size_bytes
                continue
            name = f"{step.id} content {item.index} ({item.type})"
            candidates.append((item.uri, name, item.mime_type, item.size_bytes))
        for uri, name, mime, size in candidates:
            if links >= MAX_LINKS:
                break
            links += 1
            blocks.append(ResourceLink(uri=uri, name=name, mime_type=mime, size=size))
    return CallToolResult(content=blocks, structured_content=data)
