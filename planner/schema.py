"""The JSON Schema a plan answer must fit, built per request.

`{strategy, steps}`, each step one `anyOf` branch per tool shown (`server` and
`tool` single-value enums, `arguments` the tool's input schema), so that a
grammar-constrained decoder can only write tools that exist. Input schemas are
adapted: a value that is not a plain string may also be one whole reference, and
only the subset llama.cpp's grammar converter handles is kept (local `$ref`s
inlined). What is dropped is still checked: validation after decoding reads the
full schema, and the repair loop sends any violation back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from executor.catalog import ToolInfo

__all__ = [
    "ANSWER_BUDGET_CAP",
    "DESCRIPTION_CHARS",
    "MAX_ORDERED_STEPS",
    "MAX_SCHEMA_STEPS",
    "NO_REFERENCE_PATTERN",
    "REFERENCE_PATTERN",
    "SCHEMA_STEP_ID_PATTERN",
    "STRATEGY_CHARS",
    "answer_budget",
    "grammar_safe",
    "ordered_step_limit",
    "plan_schema",
]

SCHEMA_STEP_ID_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]*$"
"""Step ids a constrained model may write (the 64-character cap is left to validation:
counted repetitions expand into grammar rules)."""

REFERENCE_PATTERN = r"^[$][{][A-Za-z_][A-Za-z0-9_-]*([.][A-Za-z0-9_-]+)*[}]$"
"""A string that is exactly one `${step.path}` reference.

Written with character classes, not backslash escapes: llama.cpp's grammar
parser refuses an escaped `\\$`, and a server can die of it.
"""

NO_REFERENCE_PATTERN = r'^([^$"\\\x00-\x1f]|[$][^{"\\\x00-\x1f])*[$]?$'
"""A string holding no `${` (so no reference); a lone `$` is fine.

A grammar converter matches a pattern against the string's raw characters, so a
negated class must leave out `"`, `\\` and control characters: otherwise the
"string" never has to end, and the model writes whatever it likes, unknown
servers included, inside what the grammar takes for one string (llama.cpp did).
Such a string holds no quote or backslash.
"""

STRATEGY_CHARS = 200
"""Longest strategy a constrained answer may write: a bound ends a small model's
ramble (it would otherwise run on inside the string up to the token limit)."""
DESCRIPTION_CHARS = 60
"""Longest step description a constrained answer may write."""

MAX_SCHEMA_STEPS = 32
"""Cap on `maxItems` of the step list: larger counts bloat a decoder's grammar."""
MAX_ORDERED_STEPS = 12
"""Cap on the steps of an ordered schema (each position has its own branches)."""
_ORDERED_BRANCH_BUDGET = 240
"""Most (position, tool) branches an ordered schema may have."""

_MAX_DEPTH = 6
"""Nesting below which argument schemas are replaced by "any value"."""
_MAX_BOUND = 32
"""Length and size bounds above this are dropped (they expand into grammar rules)."""

_DEFS = "#/$defs/"
_IGNORE, _ALLOW, _FORBID = "ignore", "allow", "forbid"
_REFERENCE = {"$ref": _DEFS + "reference"}
_REFERENCE_DEF = {"type": "string", "pattern": REFERENCE_PATTERN}
_JSON_TYPES = frozenset({"string", "number", "integer", "boolean", "object", "array", "null"})


ANSWER_BUDGET_CAP = 4096
"""Most tokens a derived answer budget asks for."""
_STRATEGY_TOKENS = 80
_STEP_TOKENS = 48
"""One step's keys, id, dependencies and a short description."""
_ARGUMENT_TOKENS = 24
"""One argument: its name and a short value."""


def answer_budget(
    tools: Sequence[ToolInfo], *, max_steps: int, ordered: bool = False, copied_text: str = ""
) -> int:
    """The default `max_tokens`: room for the longest plan the schema allows.

    That is the strategy plus as many steps as the schema lets through (the
    agent's step limit, capped as `plan_schema` caps it), each as wide as a call
    of the widest tool shown, plus the text the answer may copy into arguments;
    at most `ANSWER_BUDGET_CAP`.

    Args:
        tools: The tools shown to the model.
        max_steps: The agent's step limit.
        ordered: Whether the ordered schema is used (it allows fewer steps).
        copied_text: What the answer may copy (the query; a plan being revised).
    """
    if not tools:
        raise ValueError("no tools to plan with: the catalog is empty or the policy allows none")
    steps = (
        ordered_step_limit(len(tools), max_steps)
        if ordered
        else max(1, min(max_steps, MAX_SCHEMA_STEPS))
    )
    widest = max(_step_tokens(t) for t in tools)
    # Copied text costs about a token per three characters once escaped as JSON.
    copied = len(copied_text) // 3
    return min(ANSWER_BUDGET_CAP, _STRATEGY_TOKENS + steps * widest + copied)


def _step_tokens(tool: ToolInfo) -> int:
    props = tool.input_schema.get("properties")
    arguments = min(len(props), 12) if isinstance(props, Mapping) else 0
    names = (len(tool.server) + len(tool.name)) // 3
    return _STEP_TOKENS + names + arguments * _ARGUMENT_TOKENS


def plan_schema(
    tools: Sequence[ToolInfo], *, max_steps: int, ordered: bool = False
) -> dict[str, Any]:
    """Build the answer schema for a plan over exactly these tools.

    Shared pieces (a step id, the dependency list, a reference, each tool's
    arguments when ordered) are `$defs`, so a branch adds little of its own.

    Args:
        tools: The tools the model may use (already filtered and shortlisted).
        max_steps: The agent's step limit; the schema caps it at `MAX_SCHEMA_STEPS`
            (`MAX_ORDERED_STEPS` when ordered).
        ordered: Fix the step ids to `s1, s2, ...` in order and let each step
            depend only on the steps before it, so that decoding cannot produce
            an unknown dependency, a self-dependency or a cycle. The schema grows
            with tools times steps; meant for grammar-constrained local models,
            which need it most.

    Returns:
        A JSON Schema (draft 2020-12 subset) of `{strategy, steps}`.

    Raises:
        ValueError: `tools` is empty: a plan needs at least one tool to call.
    """
    if not tools:
        raise ValueError("no tools to plan with: the catalog is empty or the policy allows none")
    if ordered:
        return _ordered_schema(tools, max_steps)
    limit = max(1, min(max_steps, MAX_SCHEMA_STEPS))
    branches = [_step_branch(t) for t in tools]
    step: dict[str, Any] = branches[0] if len(branches) == 1 else {"anyOf": branches}
    return _envelope(
        {"type": "array", "items": step, "minItems": 1, "maxItems": limit},
        {
            "id": {"type": "string", "pattern": SCHEMA_STEP_ID_PATTERN},
            "depends_on": {
                "type": "array",
                "items": {"$ref": _DEFS + "id"},
                "maxItems": limit,
            },
            "reference": _REFERENCE_DEF,
        },
    )


def _envelope(steps: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "strategy": {"type": "string", "minLength": 1, "maxLength": STRATEGY_CHARS},
            "steps": steps,
        },
        "required": ["strategy", "steps"],
        "additionalProperties": False,
        "$defs": defs,
    }


def _step_branch(
    tool: ToolInfo,
    *,
    id_schema: dict[str, Any] | None = None,
    arguments: dict[str, Any] | None = None,
    depends_on: dict[str, Any] | None = None,
) -> dict[str, Any]:
    if arguments is None:
        arguments = grammar_safe(tool.input_schema, references=True, top=True)
    return {
        "type": "object",
        "properties": {
            "id": id_schema or {"$ref": _DEFS + "id"},
            "server": {"type": "string", "enum": [tool.server]},
            "tool": {"type": "string", "enum": [tool.name]},
            "description": {"type": "string", "maxLength": DESCRIPTION_CHARS},
            "arguments": arguments,
            "depends_on": depends_on or {"$ref": _DEFS + "depends_on"},
        },
        "required": ["id", "server", "tool", "description", "arguments", "depends_on"],
        "additionalProperties": False,
    }


def ordered_step_limit(tool_count: int, max_steps: int) -> int:
    """Steps an ordered schema allows: within `MAX_ORDERED_STEPS` and the branch budget."""
    by_budget = max(1, _ORDERED_BRANCH_BUDGET // max(tool_count, 1))
    return max(1, min(max_steps, MAX_ORDERED_STEPS, by_budget))


def _ordered_schema(tools: Sequence[ToolInfo], max_steps: int) -> dict[str, Any]:
    limit = ordered_step_limit(len(tools), max_steps)
    defs: dict[str, Any] = {"reference": _REFERENCE_DEF}
    for i, tool in enumerate(tools):
        defs[f"args{i}"] = grammar_safe(tool.input_schema, references=True, top=True)
        # The first step has no earlier step to read: no reference can be right there.
        defs[f"first{i}"] = grammar_safe(tool.input_schema, forbid_references=True, top=True)
    for position in range(1, limit + 1):
        earlier = [f"s{n}" for n in range(1, position)]
        depends: dict[str, Any] = (
            {"type": "array", "items": {"enum": earlier}, "maxItems": len(earlier)}
            if earlier
            # `[]` as a constant: an empty array is the only choice for the first step.
            else {"enum": [[]]}
        )
        branches = [
            _step_branch(
                tool,
                id_schema={"type": "string", "enum": [f"s{position}"]},
                arguments={"$ref": f"{_DEFS}{'first' if position == 1 else 'args'}{i}"},
                depends_on=depends,
            )
            for i, tool in enumerate(tools)
        ]
        defs[f"step{position}"] = branches[0] if len(branches) == 1 else {"anyOf": branches}
    # One alternative per length: grammar converters read `prefixItems` as a tuple
    # of exactly that many items, so each length is spelled out.
    lengths = [
        {
            "type": "array",
            "prefixItems": [{"$ref": f"{_DEFS}step{n}"} for n in range(1, count + 1)],
            "minItems": count,
            "maxItems": count,
        }
        for count in range(1, limit + 1)
    ]
    steps: dict[str, Any] = lengths[0] if len(lengths) == 1 else {"anyOf": lengths}
    return _envelope(steps, defs)


def grammar_safe(
    schema: Mapping[str, Any] | bool,
    *,
    references: bool = False,
    forbid_references: bool = False,
    top: bool = False,
) -> dict[str, Any]:
    """Reduce a JSON Schema to the subset grammar converters handle.

    Args:
        schema: A tool's input schema (or any JSON Schema).
        references: Let every value that is not a plain string also be one
            whole `${...}` reference (`{"$ref": "#/$defs/reference"}`, which
            `plan_schema` defines).
        forbid_references: Let no string hold a `${...}` (free strings get the
            `NO_REFERENCE_PATTERN`); wins over `references`.
        top: The schema is a tool's whole arguments: keep it an object, never
            a reference.

    Returns:
        A new schema; `{}` (any value) where nothing safe could be kept.
    """
    root = schema if isinstance(schema, Mapping) else {}
    refs = _FORBID if forbid_references else _ALLOW if references else _IGNORE
    converted = _convert(schema, root, references=refs, depth=0, seen=())
    if top:
        if converted.get("type") not in (None, "object"):
            # Arguments are always an object, whatever the server declared.
            return {"type": "object"}
        converted.setdefault("type", "object")
        return converted
    return converted


def _convert(
    schema: Any,
    root: Mapping[str, Any],
    *,
    references: str,
    depth: int,
    seen: tuple[str, ...],
) -> dict[str, Any]:
    if not isinstance(schema, Mapping) or depth > _MAX_DEPTH:
        # `true`, `false` and anything unreadable: let validation after decoding judge.
        return {}
    ref = schema.get("$ref")
    if isinstance(ref, str):
        target = _resolve_local(ref, root)
        if target is None or ref in seen:
            # Unknown or recursive: accept any value here and let validation judge.
            return {}
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return _convert(merged, root, references=references, depth=depth, seen=(*seen, ref))

    def sub(value: Any) -> dict[str, Any]:
        return _convert(value, root, references=references, depth=depth + 1, seen=seen)

    for keyword in ("anyOf", "oneOf"):
        options = schema.get(keyword)
        if isinstance(options, list) and options:
            branches = [sub(o) for o in options]
            if any(b == {} for b in branches):
                return {}
            return {"anyOf": branches}
    all_of = schema.get("allOf")
    if isinstance(all_of, list) and len(all_of) == 1:
        rest = {k: v for k, v in schema.items() if k != "allOf"}
        return _convert({**all_of[0], **rest}, root, references=references, depth=depth, seen=seen)

    type_ = schema.get("type")
    if isinstance(type_, list):
        kinds = [t for t in type_ if t in _JSON_TYPES]
        if not kinds:
            return {}
        if len(kinds) > 1:
            return {"anyOf": [sub({**schema, "type": t}) for t in kinds]}
        type_ = kinds[0]

    out = _typed(schema, type_, sub)
    if references == _FORBID and _is_free_string(out):
        return {"type": "string", "pattern": NO_REFERENCE_PATTERN}
    if references == _ALLOW and not _is_plain_string(out):
        return {"anyOf": [out, _REFERENCE]} if out else out
    return out


def _typed(schema: Mapping[str, Any], type_: Any, sub: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "const" in schema:
        return {"enum": [schema["const"]]}
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        out["enum"] = list(schema["enum"])
        if type_ in _JSON_TYPES:
            out["type"] = type_
        return out
    if type_ not in _JSON_TYPES:
        if "properties" in schema:
            type_ = "object"
        elif "items" in schema:
            type_ = "array"
        else:
            return {}
    out["type"] = type_
    if type_ == "object":
        props = schema.get("properties")
        if isinstance(props, Mapping) and props:
            out["properties"] = {str(k): sub(v) for k, v in props.items()}
            required = [r for r in schema.get("required", []) if r in out["properties"]]
            if required:
                out["required"] = required
        extra = schema.get("additionalProperties")
        if extra is False:
            out["additionalProperties"] = False
    elif type_ == "array":
        items = schema.get("items")
        if isinstance(items, Mapping):
            out["items"] = sub(items)
        _bounds(schema, out, "minItems", "maxItems")
    elif type_ == "string":
        _bounds(schema, out, "minLength", "maxLength")
    return out


def _bounds(schema: Mapping[str, Any], out: dict[str, Any], low: str, high: str) -> None:
    lo, hi = schema.get(low), schema.get(high)
    if isinstance(lo, int) and not isinstance(lo, bool) and 0 < lo <= _MAX_BOUND:
        out[low] = lo
    if isinstance(hi, int) and not isinstance(hi, bool) and 0 <= hi <= _MAX_BOUND:
        out[high] = hi


def _is_plain_string(schema: Mapping[str, Any]) -> bool:
    """A string schema a reference already satisfies (no enum, no length bounds)."""
    return schema.get("type") == "string" and set(schema) == {"type"}


def _is_free_string(schema: Mapping[str, Any]) -> bool:
    """A string schema that admits a reference (it has no enum or pattern of its own)."""
    return schema.get("type") == "string" and not set(schema) - {"type", "minLength", "maxLength"}


def _resolve_local(ref: str, root: Mapping[str, Any]) -> Mapping[str, Any] | None:
    if not ref.startswith("#/"):
        return None
    node: Any = root
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node if isinstance(node, Mapping) else None
