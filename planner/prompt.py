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

# Made-up tools, named so as not to collide with real ones: a small model copies
# an example's names when it can, and constrained decoding then refuses them.
_EXAMPLE = {
    "strategy": "Search the wiki, then mail the first hit's title.",
    "steps": [
        {
            "id": "s1",
            "server": "wiki",
            "tool": "search_pages",
            "description": "Find the page",
            "arguments": {"text": "release notes"},
            "depends_on": [],
        },
        {
            "id": "s2",
            "server": "mail",
            "tool": "send_summary",
            "description": "Mail its title",
            "arguments": {"to": "team", "body": "See: ${s1.hits.0.title}"},
            "depends_on": ["s1"],
        },
    ],
}

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
- Use as few steps as the request needs, at most {max_steps}. Use only the listed tools.

Example (its tools are made up; use only the tools listed below):
{example}"""


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
) -> list[ChatMessage]:
    """Render the system and user messages for one planning request.

    Args:
        query: What the user asked for.
        agent: Supplies the system prompt, the personality and the description.
        tools: The tools shown (already filtered by policy and shortlisted).
        max_steps: The step limit the plan must respect.
        history: Earlier plans of the session; the last `HISTORY_ENTRIES` are shown.
        revision: The plan to revise and the user's feedback, if revising.
    """
    parts: list[str] = []
    if agent.system_prompt.strip():
        parts.append(agent.system_prompt.strip())
    if agent.description.strip():
        parts.append(f"You plan for the agent {agent.name!r}: {agent.description.strip()}")
    if agent.personality.strip():
        parts.append(f"Personality: {agent.personality.strip()}")
    example = json.dumps(_EXAMPLE, ensure_ascii=False)
    parts.append(_RULES.format(max_steps=max_steps, example=example))
    parts.append("Tools you may use:\n" + "\n".join(render_tool(t) for t in tools))
    if history:
        parts.append(_render_history(history[-HISTORY_ENTRIES:]))
    system = "\n\n".join(parts)

    user: list[str] = []
    if revision is not None:
        user.append(_render_revision(revision))
    user.append(f"Request: {query.strip()}")
    user.append("Answer with the JSON plan only.")
    return [
        ChatMessage(role="system", content=system),
        ChatMessage(role="user", content="\n\n".join(user)),
    ]


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
