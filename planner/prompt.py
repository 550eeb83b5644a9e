"""The planning prompt: instructions, the tools shown, the session, the plan to revise.

Everything here is a pure function of its inputs, so the same request renders
the same prompt byte for byte: a host answering a sampling request over several
rounds (MCP 2026-07-28) is shown exactly the question it answered before.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from executor.catalog import ToolInfo
from executor.plan import Plan
from executor.policy import AgentConfig
from planner.models import ChatMessage, Revision, SessionEntry

__all__ = [
    "HISTORY_ENTRIES",
    "build_messages",
    "estimate_tokens",
    "example_exchange",
    "plan_as_answer",
    "render_tool",
    "repair_message",
    "schema_instruction",
]

HISTORY_ENTRIES = 5
"""Earlier plans of a session shown in the prompt (the most recent ones)."""
_HISTORY_CHARS = 300
_TOOL_DESCRIPTION_CHARS = 240
_ARG_DESCRIPTION_CHARS = 80
_MAX_ARGS_SHOWN = 12
_MAX_ENUM_SHOWN = 8
_MAX_EXAMPLE_ARGS = 3

_RULES = """\
You are the planner of taskorch. You turn a request into a plan of tool calls and \
answer with the plan as one JSON object, {{"strategy": ..., "steps": [...]}}, and nothing else.

Rules:
- "strategy": one or two sentences saying how the plan gets the result.
- Each step calls one tool from the list below: write its "server" and its "tool" \
exactly as listed, as two separate fields.
- "id": s1 for the first step, s2 for the second, and so on.
- "arguments": an object with the tool's arguments; give every required one.
- To use an earlier step's output, write a reference as a JSON string: "${{s1}}" is \
the whole output of step s1, keeping its type; "${{s1.items.0.name}}" walks into it \
by keys and array indexes; inside longer text, "Total: ${{s2.count}}" inserts it as \
text. Write "$$" for a literal "$".
- "depends_on": ids of the earlier steps that must finish first (a reference already \
counts); a step depends only on steps before it. Steps that do not depend on each \
other run in parallel.
- "description": what the step is for, in a few words.
- Use as few steps as the request needs, at most {max_steps}, and end the answer \
when the request is done. Use only the listed tools."""


def estimate_tokens(text: str) -> int:
    """A cheap token estimate: about four characters per token."""
    return math.ceil(len(text) / 4)


def build_messages(
    *,
    query: str,
    agent: AgentConfig,
    tools: Sequence[ToolInfo],
    max_steps: int,
    history: Sequence[SessionEntry] = (),
    revision: Revision | None = None,
    example_tool: ToolInfo | None = None,
) -> list[ChatMessage]:
    """Render the system and user messages for one planning request.

    Args:
        query: What the user asked for.
        agent: Supplies the system prompt, the personality and the description.
        tools: The tools shown (already filtered by policy and shortlisted).
        max_steps: The step limit the plan must respect.
        history: Earlier plans of the session; the last `HISTORY_ENTRIES` are shown.
        revision: The plan to revise and the user's feedback, if revising.
        example_tool: The tool the example answer calls (default: the first shown);
            `planner.shortlist.closest` picks the one nearest the request.

    Raises:
        ValueError: `tools` is empty.
    """
    if not tools:
        raise ValueError("no tools to plan with: the catalog is empty or the policy allows none")
    parts: list[str] = []
    if agent.system_prompt.strip():
        parts.append(agent.system_prompt.strip())
    if agent.description.strip():
        parts.append(f"You plan for the agent {agent.name!r}: {agent.description.strip()}")
    if agent.personality.strip():
        parts.append(f"Personality: {agent.personality.strip()}")
    parts.append(_RULES.format(max_steps=max_steps))
    parts.append("Tools you may use:\n" + "\n".join(render_tool(t) for t in tools))
    if history:
        parts.append(_render_history(history[-HISTORY_ENTRIES:]))
    system = "\n\n".join(parts)

    user: list[str] = []
    if revision is not None:
        user.append(_render_revision(revision))
    user.append(f"Request: {query.strip()}")
    user.append("Answer with the JSON plan only.")
    example_request, example = example_exchange(example_tool or tools[0])
    return [
        ChatMessage(role="system", content=system),
        ChatMessage(role="user", content=example_request),
        ChatMessage(role="assistant", content=json.dumps(example, ensure_ascii=False)),
        ChatMessage(role="user", content="\n\n".join(user)),
    ]


def example_exchange(tool: ToolInfo) -> tuple[str, dict[str, Any]]:
    """A made-up request for `tool` and its one-step answer, shown before the real one.

    A small model copies the example's names, so the example names a tool it may
    call: the caller picks the one that looks closest to the request, and a copy
    is then a fair first guess rather than a plan for something else. The
    exchange comes after the system message, which every request of a session
    then shares (a local server reuses that evaluated prefix).

    Returns:
        The request's text and the answer.
    """
    arguments = _example_arguments(tool.input_schema)
    given = ", ".join(f"{name} {json.dumps(value)}" for name, value in arguments.items())
    request = f"Request: {tool.title or tool.name}" + (f" with {given}" if given else "")
    return request, {
        "strategy": f"Call {tool.name}.",
        "steps": [
            {
                "id": "s1",
                "server": tool.server,
                "tool": tool.name,
                "description": _clip(tool.title or tool.name, 40),
                "arguments": arguments,
                "depends_on": [],
            }
        ],
    }


def _example_arguments(schema: Mapping[str, Any]) -> dict[str, Any]:
    """Placeholder values for a tool's required arguments."""
    props = schema.get("properties")
    if not isinstance(props, Mapping):
        return {}
    out: dict[str, Any] = {}
    for name in [r for r in schema.get("required") or () if r in props][:_MAX_EXAMPLE_ARGS]:
        prop = props[name] if isinstance(props[name], Mapping) else {}
        out[name] = _example_value(prop)
    return out


def _example_value(schema: Mapping[str, Any]) -> Any:
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    kind = schema.get("type")
    kind = next((k for k in kind if k != "null"), None) if isinstance(kind, list) else kind
    if kind in ("number", "integer"):
        return 2
    if kind == "boolean":
        return True
    if kind == "array":
        items = schema.get("items")
        inner = items if isinstance(items, Mapping) else {}
        return [_example_value(inner)]
    if kind == "object":
        return {}
    return "example"


def repair_message(problems: Iterable[object], *, truncated: bool = False) -> str:
    """The message that sends a rejected plan's problems back to the model."""
    lines = "\n".join(f"- {p}" for p in problems)
    cut = (
        "Your answer was cut off before it ended: write a shorter plan (fewer steps, "
        "shorter descriptions).\n"
        if truncated
        else ""
    )
    return (
        f"{cut}The plan was rejected. Problems:\n{lines}\n\n"
        "Fix every problem and answer with the whole corrected JSON plan "
        "(strategy and all steps), and nothing else."
    )


def schema_instruction(schema: Mapping[str, Any]) -> str:
    """The schema as prompt text, for backends that cannot constrain decoding."""
    text = json.dumps(schema, separators=(",", ":"), ensure_ascii=False)
    return f"The answer must be a JSON object that validates against this JSON Schema:\n{text}"


def render_tool(tool: ToolInfo) -> str:
    """One tool as one prompt line: server, tool, what it does and its arguments."""
    description = _clip(" ".join(tool.description.split()), _TOOL_DESCRIPTION_CHARS)
    line = f'- server "{tool.server}", tool "{tool.name}"'
    if description:
        line += f": {description}"
    args = _render_arguments(tool.input_schema)
    return f"{line} Arguments: {args}." if args else f"{line} Arguments: none."


def _render_arguments(schema: Mapping[str, Any]) -> str:
    props = schema.get("properties")
    if not isinstance(props, Mapping) or not props:
        return ""
    required = set(schema.get("required") or ())
    rendered: list[str] = []
    for name, prop in list(props.items())[:_MAX_ARGS_SHOWN]:
        prop = prop if isinstance(prop, Mapping) else {}
        kind = _type_name(prop, schema)
        flags = f"{kind}, required" if name in required else kind
        text = f"{name} ({flags})"
        desc = prop.get("description")
        if isinstance(desc, str) and desc.strip():
            text += " - " + _clip(" ".join(desc.split()), _ARG_DESCRIPTION_CHARS)
        rendered.append(text)
    more = len(props) - _MAX_ARGS_SHOWN
    if more > 0:
        rendered.append(f"and {more} more")
    return "; ".join(rendered)


def _type_name(schema: Mapping[str, Any], root: Mapping[str, Any], depth: int = 0) -> str:
    if depth > 3:
        return "any"
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        node: Any = root
        for part in ref[2:].split("/"):
            node = node.get(part) if isinstance(node, Mapping) else None
        if isinstance(node, Mapping):
            return _type_name(node, root, depth + 1)
        return "any"
    if "const" in schema:
        return json.dumps(schema["const"], ensure_ascii=False)
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        shown = " | ".join(json.dumps(v, ensure_ascii=False) for v in enum[:_MAX_ENUM_SHOWN])
        return shown + (" | ..." if len(enum) > _MAX_ENUM_SHOWN else "")
    for keyword in ("anyOf", "oneOf"):
        options = schema.get(keyword)
        if isinstance(options, list) and options:
            names = [_type_name(o, root, depth + 1) for o in options if isinstance(o, Mapping)]
            return " | ".join(dict.fromkeys(names))
    type_ = schema.get("type")
    if isinstance(type_, list):
        return " | ".join(str(t) for t in type_)
    if type_ == "array":
        items = schema.get("items")
        inner = _type_name(items, root, depth + 1) if isinstance(items, Mapping) else "any"
        return f"array of {inner}"
    if isinstance(type_, str):
        return type_
    return "object" if "properties" in schema else "any"


def _render_history(entries: Sequence[SessionEntry]) -> str:
    lines = ["Earlier in this session (oldest first):"]
    for e in entries:
        text = f'"{e.query.strip()}" ({e.status.value})'
        if e.strategy:
            text += f": {e.strategy.strip()}"
        if e.outcome:
            text += f" Outcome: {e.outcome.strip()}"
        lines.append("- " + _clip(" ".join(text.split()), _HISTORY_CHARS))
    return "\n".join(lines)


def _render_revision(revision: Revision) -> str:
    old = json.dumps(plan_as_answer(revision.plan), ensure_ascii=False)
    feedback = revision.feedback.strip() or "(none given: improve the plan)"
    return (
        f"You are revising an earlier plan (status: {revision.plan.status.value}).\n"
        f"Earlier plan: {old}\n"
        f"The user's feedback: {feedback}\n"
        "Keep every step the feedback does not ask to change, with the same tool and "
        "arguments; change, add or remove only what the feedback asks for."
    )


def plan_as_answer(plan: Plan) -> dict[str, Any]:
    """A stored plan in the answer shape, `{strategy, steps}`."""
    return {
        "strategy": plan.strategy,
        "steps": [
            {
                "id": s.id,
                "server": s.server,
                "tool": s.tool,
                "description": s.description or "",
                "arguments": s.arguments,
                "depends_on": list(s.depends_on),
            }
            for s in plan.steps
        ],
    }


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."
