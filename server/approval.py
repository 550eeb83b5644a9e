"""The approval question: what a person reads before a plan may run.

One text for every place a person approves (the MCP elicitation dialog, the
CLI prompt). Everything in it that a caller or a downstream server chose is
escaped onto its own line, so a query cannot print a step list or a hash of
its own; every step is listed (past `ALL_STEPS_UP_TO`, every step that is not
read-only or reaches the open world, and a count of the rest, by tool); each
step says what its tool declares (read-only, writes, DESTRUCTIVE, open-world,
or unknown when the catalog lacks it); whatever is shortened says by how much;
and the last line names the `plan_hash` the answer approves.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from typing import Any

from executor.catalog import Catalog, ToolInfo
from executor.plan import Plan, Step

__all__ = ["ALL_STEPS_UP_TO", "QUOTE_LIMIT", "VALUE_LIMIT", "approval_text", "one_line"]

ALL_STEPS_UP_TO = 30
"""Plans with at most this many steps are listed whole."""
QUOTE_LIMIT = 500
"""Characters of the query and of the strategy shown."""
VALUE_LIMIT = 120
"""Characters of each argument value shown (of its JSON text; of a string's text)."""
_KEY_LIMIT = 60
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(char: str) -> str:
    """`char`, or an escape for it when it could break, hide or reorder a line."""
    if char in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[char]
    category = unicodedata.category(char)
    # Controls, format characters (bidi overrides, zero-width), surrogates, private
    # use and unassigned code points, and every separator but the plain space.
    if category[0] == "C" or (category[0] == "Z" and char != " "):
        code = ord(char)
        return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
    return char


def one_line(text: str) -> str:
    """`text` with everything that could break, hide or reorder the line escaped."""
    out = "".join(_escaped(c) for c in text)
    # A combining mark at the end would draw over whatever follows the text.
    if out and unicodedata.category(out[-1])[0] == "M":
        out = out[:-1] + f"\\u{ord(out[-1]):04x}"
    return out


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
