"""The plan resources: `plan://{id}` as JSON, its DAG as a Mermaid flowchart, its run as a Gantt.

Pure functions of a plan and its step states; the MCP face and the CLI call
them. Labels come from callers and downstream servers, so every piece of text
put into Mermaid is escaped: nothing in a step can break out of its label or
inject diagram syntax.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime

from executor.plan import Plan
from executor.records import StepState
from executor.stats import RunAnalysis
from executor.status import StepStatus
from server.views import plan_view

__all__ = [
    "STATUS_STYLES",
    "mermaid_text",
    "render_graph",
    "render_plan_json",
    "render_timeline",
]

STATUS_STYLES: dict[StepStatus, str] = {
    StepStatus.PENDING: "fill:#eeeeee,stroke:#999999,color:#333333",
    StepStatus.RUNNING: "fill:#cfe2ff,stroke:#0d6efd,color:#052c65",
    StepStatus.SUCCEEDED: "fill:#d1e7dd,stroke:#198754,color:#0a3622",
    StepStatus.FAILED: "fill:#f8d7da,stroke:#dc3545,color:#58151c",
    StepStatus.SKIPPED: "fill:#f8f9fa,stroke:#adb5bd,color:#6c757d,stroke-dasharray:4 3",
    StepStatus.CANCELLED: "fill:#ffe5d0,stroke:#fd7e14,color:#653208",
    StepStatus.INTERRUPTED: "fill:#fff3cd,stroke:#ffc107,color:#664d03",
}
"""The Mermaid `classDef` style of each step status."""

# Characters kept as they are in a Mermaid label; everything else becomes an entity
# code, so quotes, brackets, pipes, semicolons and HTML cannot end the label early.
_LABEL_SAFE = re.compile(r"[A-Za-z0-9 _.,:/()+=@-]")
_GANTT_UNSAFE = re.compile(r"[^A-Za-z0-9 _./()+=@-]+")
_MAX_LABEL = 80


def mermaid_text(text: str, *, limit: int = _MAX_LABEL) -> str:
    """Escape text for a quoted Mermaid flowchart label, cut to `limit` characters.

    Args:
        text: Any text, from anyone.
        limit: Most characters of `text` kept (an ellipsis marks a cut).
    """
    flat = " ".join(text.split())
    if len(flat) > limit:
        flat = flat[: limit - 1] + "…"
    return "".join(c if _LABEL_SAFE.fullmatch(c) else f"#{ord(c)};" for c in flat)


def _gantt_text(text: str, *, limit: int = _MAX_LABEL) -> str:
    # Gantt task names end at ':' and lines at '#' or ';', and entity codes are not
    # decoded there, so unsafe characters are replaced rather than encoded.
    flat = _GANTT_UNSAFE.sub(" ", " ".join(text.split())).strip()
    return (flat[:limit].rstrip() or "step") if flat else "step"


def render_plan_json(plan: Plan, states: Mapping[str, StepState] | None = None) -> str:
    """The `plan://{id}` resource: the plan view as indented JSON."""
    return json.dumps(plan_view(plan, states).model_dump(mode="json"), indent=2, ensure_ascii=False)


def render_graph(plan: Plan, states: Mapping[str, StepState] | None = None) -> str:
    """The `plan://{id}/graph` resource: a Mermaid flowchart of the DAG, coloured by status.

    Nodes get generated ids (`s0`, `s1`, …) because step ids such as `end` or
    `a-b` mean something to Mermaid; the real id is in the label.
    """
    states = states or {}
    node = {step.id: f"s{i}" for i, step in enumerate(plan.steps)}
    lines = ["flowchart TD"]
    by_status: dict[StepStatus, list[str]] = {}
    for step in plan.steps:
        state = states.get(step.id)
        status = state.status if state else StepStatus.PENDING
        by_status.setdefault(status, []).append(node[step.id])
        label = (
            f"<b>{mermaid_text(step.id)}</b><br/>"
            f"{mermaid_text(f'{step.server}.{step.tool}')}<br/>"
            f"<i>{status.value}</i>"
        )
        lines.append(f'    {node[step.id]}["{label}"]')
    for step in plan.steps:
        for dep in step.depends_on:
            if dep in node:  # an unknown dependency is a validation error, never drawn
                lines.append(f"    {node[dep]} --> {node[step.id]}")
    for status, style in STATUS_STYLES.items():
        lines.append(f"    classDef {status.value} {style}")
    for status, nodes in by_status.items():
        lines.append(f"    class {','.join(nodes)} {status.value}")
    return "\n".join(lines) + "\n"


def _ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


_GANTT_TAG = {
    StepStatus.SUCCEEDED: "done",
    StepStatus.RUNNING: "active",
    StepStatus.FAILED: "crit",
    StepStatus.CANCELLED: "crit",
    StepStatus.INTERRUPTED: "crit",
}


def render_timeline(
    plan: Plan,
    states: Mapping[str, StepState] | None = None,
    *,
    now: datetime | None = None,
    timing: RunAnalysis | None = None,
) -> str:
    """The `plan://{id}/timeline` resource: a Mermaid Gantt of the run, a section per server.

    Times are Unix milliseconds (`dateFormat x`), so the chart is exact whatever
    the time zone. A running step ends at `now`; steps that never started are
    listed in a comment instead of being drawn. With `timing`, a last section
    draws the critical path, each step split into waiting for a slot (`done`,
    grey), retries (`crit`, red) and running, with the totals in comments.

    Args:
        plan: The plan version.
        states: Its step states.
        now: The end of still-running bars (default: the latest time known).
        timing: Where the run spent its time (`executor.stats.analyse_run`).
    """
    states = states or {}
    lines = [
        "gantt",
        f"    title {_gantt_text(f'plan {plan.id} v{plan.version} {plan.status.value}')}",
        "    dateFormat x",
        "    axisFormat %H:%M:%S",
    ]
    known = [t for s in states.values() for t in (s.started_at, s.finished_at) if t is not None]
    end_of_running = now or (max(known) if known else None)
    sections: dict[str, list[str]] = {}
    not_started: list[str] = []
    for i, step in enumerate(plan.steps):
        state = states.get(step.id)
        if state is None or state.started_at is None:
            not_started.append(step.id)
            continue
        finish = state.finished_at or end_of_running or state.started_at
        start_ms = _ms(state.started_at)
        # A zero-length bar does not render: draw at least one millisecond.
        end_ms = max(_ms(finish), start_ms + 1)
        tag = _GANTT_TAG.get(state.status)
        name = _gantt_text(f"{step.id} {step.tool}")
        head = f"{tag}, t{i}" if tag else f"t{i}"
        sections.setdefault(step.server, []).append(f"    {name} :{head}, {start_ms}, {end_ms}")
    for server, tasks in sections.items():
        lines.append(f"    section {_gantt_text(server)}")
        lines.extend(tasks)
    if not_started:
        lines.append(f"    %% not started: {_gantt_text(' '.join(not_started), limit=400)}")
    if timing is not None and timing.critical_path:
        lines.extend(_critical_path_section(timing))
    return "\n".join(lines) + "\n"


def _critical_path_section(timing: RunAnalysis) -> list[str]:
    """The critical path as Gantt bars: waiting, retries, waiting for the server, running."""
    share = timing.critical_path_s / timing.duration_s if timing.duration_s else 0.0
    lines = [
        f"    %% where the time went: running {timing.running_s:.3f} s, waiting for a slot "
        f"{timing.waiting_s:.3f} s, retries {timing.retry_s:.3f} s "
        f"({timing.retries} retries over {timing.steps_run} steps)",
        f"    %% critical path: {timing.critical_path_steps} steps, "
        f"{timing.critical_path_s:.3f} s ({share:.0%} of the run)",
        f"    section {_gantt_text(f'critical path {timing.critical_path_s:.2f} s')}",
    ]
    for i, step in enumerate(timing.critical_path):
        last_try = _ms(step.started_at) + round(step.retry_s * 1000)
        pieces = (
            ("waiting", "done, ", _ms(step.ready_at), _ms(step.started_at)),
            ("retries", "crit, ", _ms(step.started_at), last_try),
            ("waiting", "done, ", last_try, _ms(step.called_at)),
            (
                f"{step.tool} ({step.share * 100:.0f} pct of the run)",
                "",
                _ms(step.called_at),
                _ms(step.finished_at),
            ),
        )
        for j, (what, tag, start, end) in enumerate(pieces):
            if end - start >= 1:
                name = _gantt_text(f"{step.id} {what}")
                lines.append(f"    {name} :{tag}c{i}p{j}, {start}, {end}")
    if timing.critical_path_omitted:
        lines.append(f"    %% {timing.critical_path_omitted} shorter steps of the path not drawn")
    return lines
