"""Approval: the question a person reads, the rule that approves unasked, the decision.

`record_decision` approves (binding the approval to one `plan_hash`) or rejects
the latest version of a plan; `auto_approves` is an agent's `read_only` rule.
`approval_text` is the one question for every place a person approves (the MCP
elicitation dialog, the CLI prompt): whatever a caller or a server chose is
escaped onto its own line, every step not read-only is listed with what its
tool declares, every cut says how much it left out, and the last line names
the `plan_hash` the answer approves.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import TYPE_CHECKING, Any

from executor import ApprovalError, Catalog, Plan, PlanStatus, Step, ToolInfo, TransitionError
from executor.policy import AgentConfig, AutoApprove
from executor.records import Event, EventKind
from server.text import one_line

if TYPE_CHECKING:
    from executor import Store

__all__ = [
    "ALL_STEPS_UP_TO",
    "QUOTE_LIMIT",
    "VALUE_LIMIT",
    "approval_text",
    "auto_approves",
    "one_line",
    "record_decision",
]

ALL_STEPS_UP_TO = 30
"""Plans with at most this many steps are listed whole."""
QUOTE_LIMIT = 500
"""Characters of the query and of the strategy shown."""
VALUE_LIMIT = 120
"""Characters of each argument value shown (of its JSON text; of a string's text)."""
_KEY_LIMIT = 60
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def _more(hidden: int) -> str:
    return f"…[{hidden} more character{'s' if hidden != 1 else ''}]"


def _quoted(text: str, limit: int) -> str:
    """`text` in double quotes, escaped onto one line, cut at `limit` characters (said so)."""
    shown = text[:limit]
    body = one_line(shown.replace("\\", "\\\\").replace('"', '\\"'))
    if len(text) > limit:
        return f'"{body}"{_more(len(text) - limit)}'
    return f'"{body}"'


def _json(value: Any) -> str:
    return one_line(json.dumps(value, ensure_ascii=False))


def _value(value: Any) -> str:
    """An argument value as JSON on one line, cut at `VALUE_LIMIT` (said so)."""
    if isinstance(value, str):
        # Cut the string itself, so that what is shown in quotes is a true prefix.
        return _quoted(value, VALUE_LIMIT) if len(value) > VALUE_LIMIT else _json(value)
    text = _json(value)
    return text if len(text) <= VALUE_LIMIT else text[:VALUE_LIMIT] + _more(len(text) - VALUE_LIMIT)


def _arguments(arguments: dict[str, Any]) -> str:
    parts = []
    for key, value in arguments.items():
        name = _quoted(key, _KEY_LIMIT) if len(key) > _KEY_LIMIT else _json(key)
        parts.append(f"{name}: {_value(value)}")
    return "{" + ", ".join(parts) + "}"


def _name(text: str) -> str:
    # Server and tool names come from the config and from downstream servers.
    return text if _PLAIN_NAME.match(text) else _quoted(text, _KEY_LIMIT)


def _marks(info: ToolInfo | None) -> str:
    if info is None:
        return "[effects unknown: not in the catalog]"
    hints = info.annotations
    marks = ["read-only" if hints.read_only else "DESTRUCTIVE" if hints.destructive else "writes"]
    if hints.open_world:
        marks.append("open-world")
    return "[" + ", ".join(marks) + "]"


def _needs_listing(info: ToolInfo | None) -> bool:
    return info is None or not info.annotations.read_only or info.annotations.open_world


def _step_line(position: int, step: Step, info: ToolInfo | None) -> str:
    tool = f"{_name(step.server)}.{_name(step.tool)}"
    return f"{position}. {step.id} {tool} {_marks(info)} {_arguments(step.arguments)}"


def _most_first(item: tuple[str, int]) -> tuple[int, str]:
    return (-item[1], item[0])


def approval_text(plan: Plan, catalog: Catalog) -> str:
    """The question put to a person before `plan` runs.

    Args:
        plan: The plan version to approve.
        catalog: The tool catalog, for what each tool declares it does.
    """
    infos = [catalog.get(s.server, s.tool) for s in plan.steps]
    writers = sum(1 for info in infos if info is None or not info.annotations.read_only)
    total = len(plan.steps)
    noun = "step" if total == 1 else "steps"
    lines = [
        f"Approve plan {plan.id} version {plan.version}? {total} {noun}, {writers} not read-only.",
        f"Query: {_quoted(plan.query, QUOTE_LIMIT)}",
    ]
    if plan.strategy:
        lines.append(f"Strategy: {_quoted(plan.strategy, QUOTE_LIMIT)}")
    lines.append(f"Agent: {plan.agent or 'default'}")
    listed = [i for i, info in enumerate(infos) if _needs_listing(info)]
    if total <= ALL_STEPS_UP_TO or len(listed) == total:
        listed = list(range(total))
        lines.append("Steps:")
    else:
        rest = Counter(
            f"{_name(plan.steps[i].server)}.{_name(plan.steps[i].tool)}"
            for i in range(total)
            if not _needs_listing(infos[i])
        )
        tools = ", ".join(f"{n} × {name}" for name, n in sorted(rest.items(), key=_most_first))
        lines.append(
            f"Steps that are not read-only or reach the open world ({len(listed)} of {total}; "
            f"not listed: {total - len(listed)} read-only: {tools}):"
        )
    lines.extend(_step_line(i + 1, plan.steps[i], infos[i]) for i in listed)
    lines.append(
        f"Approving binds to plan_hash {plan.plan_hash}: a changed plan needs a new approval."
    )
    return "\n".join(lines)


def auto_approves(agent: AgentConfig, plan: Plan, catalog: Catalog) -> bool:
    """Whether `agent` approves `plan` unasked: its rule is `read_only` and every tool is."""
    if agent.auto_approve is not AutoApprove.READ_ONLY:
        return False
    for step in plan.steps:
        info = catalog.get(step.server, step.tool)
        if info is None or not info.annotations.read_only:
            return False
    return True


async def record_decision(
    store: Store, plan_id: str, approve: bool, plan_hash: str | None, reason: str | None
) -> Plan:
    """Approve or reject the latest version of a plan; asked twice, the answer is the same.

    Args:
        store: Where the plan is.
        plan_id: The plan.
        approve: `True` to approve, `False` to reject.
        plan_hash: The hash the user reviewed; refused when the plan differs.
            `None` decides on the latest version as it is.
        reason: Why, kept in the event log.

    Raises:
        NotFoundError: No such plan.
        ApprovalError: The hash does not match, or the plan is past approval.
    """
    plan = await store.get_plan(plan_id)
    if plan_hash is not None and plan_hash != plan.plan_hash:
        raise ApprovalError(
            f"plan {plan.id!r} is now version {plan.version} with plan_hash "
            f"{plan.plan_hash!r}, not the {plan_hash!r} given: the plan changed since it "
            "was reviewed; read it again (get_plan) and confirm with its current plan_hash"
        )
    target = PlanStatus.CONFIRMED if approve else PlanStatus.REJECTED
    if plan.status is target or (approve and plan.is_approved):
        return plan
    if plan.status is PlanStatus.REJECTED:
        # The engine's words, which running a rejected plan answers too; imported
        # here so that deciding on a plan does not load the engine.
        from executor.run import rejected_message

        raise ApprovalError(rejected_message(plan))
    if plan.status not in (PlanStatus.DRAFT, PlanStatus.AWAITING_CONFIRMATION):
        what = "approved" if approve else "rejected"
        hint = (
            "cancel_execution stops it"
            if plan.status in (PlanStatus.CONFIRMED, PlanStatus.EXECUTING)
            else "create_plan makes a new one"
        )
        raise ApprovalError(
            f"plan {plan.id!r} is {plan.status.value}: only a plan awaiting confirmation "
            f"can be {what}; {hint}"
        )
    kind = EventKind.PLAN_CONFIRMED if approve else EventKind.PLAN_REJECTED
    event = Event(
        plan_id=plan.id,
        kind=kind,
        data={"version": plan.version, "plan_hash": plan.plan_hash, "reason": reason or ""},
    )
    try:
        return await store.update_plan_status(
            plan.id,
            plan.version,
            target,
            approved_hash=plan.plan_hash if approve else None,
            events=[event],
        )
    except TransitionError:
        # Someone else decided first; answer with what they decided.
        current = await store.get_plan(plan.id, plan.version)
        if current.status is target:
            return current
        raise ApprovalError(
            f"plan {plan.id!r} became {current.status.value} meanwhile; "
            "it can no longer be confirmed or rejected"
        ) from None
