"""Answers that fit a model: step outputs shown whole while they fit, else previewed.

An answer carrying step outputs (a plan view, a run report) must stay within
a budget of bytes (`limits.answer_budget_tokens` × 4). It crosses MCP twice
over (structured content and the same JSON as text) plus a resource link per
previewed output or content block, and that is what is counted.

`fit` first sees whether the answer fits as it is. If not, the outputs share
what is left once every output is a bare preview (size, shape, link): small
outputs stay whole, and the others get equal shares of the rest as their
preview's beginning (water-filling, smallest first). Nothing is cut
silently: a preview says the size of the whole and where it is.
"""

from __future__ import annotations

from typing import Final, TypeVar

import pydantic_core

from executor.outputs import OutputSummary, cut_utf8, json_shape, value_text
from server.views import PlanView, RunView, preview_of

__all__ = ["BYTES_PER_TOKEN", "LINK_BYTES", "answer_bytes", "fit", "links_in"]

BYTES_PER_TOKEN: Final = 4
"""How budgets in tokens become bytes (about right for English and JSON)."""
LINK_BYTES: Final = 200
"""What one resource_link block of an answer is counted as (about 150 bytes of JSON)."""
MAX_LINKS: Final = 20
"""Most resource links one answer carries (the view has every URI anyway)."""

_HEAD_FLOOR: Final = 256
"""Bytes of beginning every preview keeps before outputs are shown whole."""

_V = TypeVar("_V", PlanView, RunView)


def _json_bytes(view: PlanView | RunView) -> int:
    return len(pydantic_core.to_json(view.model_dump(mode="json")))


def links_in(view: PlanView | RunView) -> int:
    """Resource links an answer with this view carries: previews and non-text blocks."""
    count = sum(
        (s.output_preview is not None) + sum(c.type != "text" for c in s.content)
        for s in view.steps
    )
    return min(count, MAX_LINKS)


def answer_bytes(view: PlanView | RunView) -> int:
    """What the answer costs: the view twice (structured and as text), plus its links."""
    return 2 * _json_bytes(view) + LINK_BYTES * links_in(view)


def _summary_of(value: object) -> OutputSummary:
    """The summary of an output shown whole so far (small, or from an old row)."""
    text = value_text(value).encode("utf-8", "surrogatepass")
    structured = not isinstance(value, str)
    return OutputSummary(
        kind="json" if structured else "text",
        size_bytes=len(text),
        head=text[: cut_utf8(text, 4096)].decode("utf-8", "surrogatepass"),
        shape=json_shape(value) if structured else None,
        inline=True,
    )


def _head(text: str, limit: int) -> str:
    data = text.encode("utf-8", "surrogatepass")
    return data[: cut_utf8(data, max(limit, 0))].decode("utf-8", "surrogatepass")


def _outputs(view: PlanView | RunView) -> list[tuple[int, OutputSummary, bool]]:
    """Every step with an output: (index, summary, shown whole so far)."""
    items: list[tuple[int, OutputSummary, bool]] = []
    for i, step in enumerate(view.steps):
        if step.output_preview is not None:
            p = step.output_preview
            summary = OutputSummary(
                kind=p.kind, size_bytes=p.size_bytes, head=p.head, shape=p.shape, inline=False
            )
            items.append((i, summary, False))
        elif step.output is not None:
            items.append((i, _summary_of(step.output), True))
    return items


def _shares(
    view: PlanView | RunView, items: list[tuple[int, OutputSummary, bool]], room: int
) -> tuple[dict[int, int], set[int]]:
    """Who is shown whole, and how much beginning each preview gets.

    Small outputs shown whole are worth more than a longer beginning of a large
    one: after a short beginning is kept for every preview, outputs are shown
    whole, smallest first, while they fit; the previews then share what is left
    (water-filling: each takes up to an equal share, the rest goes to the others).

    Returns:
        The bytes of beginning each preview gets, and the steps shown whole.
    """
    heads: dict[int, int] = {}
    whole: set[int] = set()
    shown = sorted(
        (len(pydantic_core.to_json(view.steps[i].output)), i) for i, _, was in items if was
    )
    floor = min(_HEAD_FLOOR, max(room, 0) // max(len(items), 1))
    room -= floor * len(items)
    for cost, i in shown:
        if cost - floor > room:
            break
        whole.add(i)
        room -= cost - floor
    previews = sorted(
        (len(summary.head.encode("utf-8", "surrogatepass")), i)
        for i, summary, _ in items
        if i not in whole
    )
    room += floor * len(previews)
    left = len(previews)
    for demand, i in previews:
        # Escapes make JSON longer than the text: leave them some room.
        share = max(room, 0) // left * 3 // 4
        left -= 1
        heads[i] = min(demand, share)
        room -= heads[i] * 4 // 3
    return heads, whole


def fit(view: _V, budget_bytes: int) -> _V:
    """The view, with outputs previewed as needed so that its answer fits `budget_bytes`.

    Args:
        view: A plan view or run report whose steps carry small outputs whole and
            large ones as previews (with the beginning a summary keeps).
        budget_bytes: The most the whole answer may cost (`answer_bytes`).
    """
    if answer_bytes(view) <= budget_bytes:
        return view
    items = _outputs(view)
    if not items:
        return view

    def build(heads: dict[int, int], whole: set[int]) -> _V:
        steps = list(view.steps)
        for i, summary, _ in items:
            if i in whole:
                continue
            head = _head(summary.head, heads.get(i, 0))
            preview = preview_of(summary, view.plan_id, steps[i].id, head)
            steps[i] = steps[i].model_copy(update={"output": None, "output_preview": preview})
        return view.model_copy(update={"steps": steps})

    bare = build({}, set())
    heads, whole = _shares(view, items, (budget_bytes - answer_bytes(bare)) // 2)
    fitted = build(heads, whole)
    for _ in range(6):
        if answer_bytes(fitted) <= budget_bytes:
            return fitted
        heads = {i: n // 2 for i, n in heads.items()}
        fitted = build(heads, set())
    return bare
