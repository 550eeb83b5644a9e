"""The constrained answer schema: what it accepts, what it refuses, what it is made of."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import jsonschema
import pytest

from executor.catalog import Catalog, ToolInfo
from planner import grammar_safe, plan_schema
from planner.schema import (
    DESCRIPTION_CHARS,
    MAX_ORDERED_STEPS,
    REFERENCE_PATTERN,
    STRATEGY_CHARS,
    ordered_step_limit,
)
from tests.planner.test_litellm import GOOD

# What llama.cpp's JSON-Schema-to-grammar converter understands well.
_SAFE_KEYWORDS = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "prefixItems",
        "minItems",
        "maxItems",
        "enum",
        "anyOf",
        "pattern",
        "minLength",
        "maxLength",
        "$ref",
        "$defs",
    }
)


def _valid(schema: dict[str, Any], answer: Any) -> bool:
    return jsonschema.Draft202012Validator(schema).is_valid(answer)


def _keywords(node: Any, found: set[str]) -> set[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            found.add(key)
            if key in ("properties", "$defs"):
                for sub in value.values():
                    _keywords(sub, found)
            elif key == "enum":
                continue
            else:
                _keywords(value, found)
    elif isinstance(node, list):
        for item in node:
            _keywords(item, found)
    return found


@pytest.mark.parametrize("ordered", [False, True], ids=["generic", "ordered"])
def test_the_schema_accepts_a_good_plan_and_refuses_unknown_tools(
    catalog: Catalog, ordered: bool
) -> None:
    schema = plan_schema(list(catalog), max_steps=10, ordered=ordered)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert _valid(schema, GOOD)

    unknown = copy.deepcopy(GOOD)
    unknown["steps"][0]["tool"] = "get_time"
    assert not _valid(schema, unknown)

    swapped = copy.deepcopy(GOOD)  # a real tool name under the wrong server
    swapped["steps"][0]["server"] = "notes"
    assert not _valid(schema, swapped)

    extra = copy.deepcopy(GOOD)
    extra["steps"][0]["retries"] = 3
    assert not _valid(schema, extra)

    assert not _valid(schema, {"strategy": "x", "steps": []})
    assert not _valid(schema, {"steps": GOOD["steps"]})


@pytest.mark.parametrize("ordered", [False, True], ids=["generic", "ordered"])
def test_references_may_stand_for_any_argument_type(catalog: Catalog, ordered: bool) -> None:
    schema = plan_schema(list(catalog), max_steps=10, ordered=ordered)
    add = {
        "id": "s2",
        "server": "math",
        "tool": "add",
        "description": "",
        "arguments": {"a": "${s1.count}", "b": 2},
        "depends_on": ["s1"],
    }
    plan = {"strategy": "x", "steps": [GOOD["steps"][0], add]}
    assert _valid(schema, plan)
    add["arguments"] = {"a": "two", "b": 2}  # a string, not a reference
    assert not _valid(schema, plan)
    add["arguments"] = {"a": "${s1} and more", "b": 2}  # not one whole reference
    assert not _valid(schema, plan)
    add["arguments"] = {"a": 1}  # a required argument missing
    assert not _valid(schema, plan)


def test_ordered_schema_makes_bad_dependencies_impossible(catalog: Catalog) -> None:
    schema = plan_schema(list(catalog), max_steps=10, ordered=True)
    first = copy.deepcopy(GOOD)
    first["steps"][0]["depends_on"] = ["s1"]  # itself
    assert not _valid(schema, first)
    forward = copy.deepcopy(GOOD)
    forward["steps"][0]["depends_on"] = ["s2"]  # a later step
    assert not _valid(schema, forward)
    renamed = copy.deepcopy(GOOD)
    renamed["steps"][0]["id"] = "fetch"
    assert not _valid(schema, renamed)
    too_many = {"strategy": "x", "steps": [GOOD["steps"][0]] * 11}
    assert not _valid(schema, too_many)


def test_ordered_step_limit_keeps_the_schema_bounded() -> None:
    assert ordered_step_limit(5, 50) == MAX_ORDERED_STEPS
    assert ordered_step_limit(5, 3) == 3
    assert ordered_step_limit(40, 50) == 6  # 240 branches / 40 tools
    assert ordered_step_limit(1000, 50) == 1


def test_the_generic_schema_bounds_the_step_list(catalog: Catalog) -> None:
    schema = plan_schema(list(catalog), max_steps=3)
    assert schema["properties"]["steps"]["maxItems"] == 3
    assert not _valid(schema, {"strategy": "x", "steps": [GOOD["steps"][0]] * 4})
    assert plan_schema(list(catalog), max_steps=10_000)["properties"]["steps"]["maxItems"] == 32


def test_no_tools_is_an_error() -> None:
    with pytest.raises(ValueError, match="no tools to plan with"):
        plan_schema([], max_steps=5)


def _awkward_tool() -> ToolInfo:
    return ToolInfo(
        server="odd",
        name="everything",
        input_schema={
            "type": "object",
            "$defs": {
                "Node": {
                    "type": "object",
                    "properties": {"child": {"$ref": "#/$defs/Node"}, "name": {"type": "string"}},
                },
                "Mode": {"enum": ["fast", "slow"], "description": "how"},
            },
            "properties": {
                "node": {"$ref": "#/$defs/Node"},
                "mode": {"$ref": "#/$defs/Mode"},
                "when": {"type": "string", "format": "date-time", "pattern": "^\\d{4}-"},
                "title": {"type": "string", "maxLength": 5000, "minLength": 1},
                "maybe": {"type": ["integer", "null"], "default": None},
                "either": {"oneOf": [{"type": "integer", "minimum": 0}, {"type": "boolean"}]},
                "merged": {"allOf": [{"type": "object", "properties": {"x": {"type": "number"}}}]},
                "never": {"not": {"type": "string"}},
                "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
                "anything": True,
            },
            "required": ["node"],
            "additionalProperties": False,
        },
    )


def test_grammar_safe_keeps_only_what_grammar_converters_understand() -> None:
    tool = _awkward_tool()
    schema = plan_schema([tool], max_steps=4)
    assert _keywords(schema, set()) <= _SAFE_KEYWORDS
    # No backslash escapes anywhere: llama.cpp's grammar parser refuses `\$` and friends.
    patterns = [v for k, v in _walk(schema) if k == "pattern"]
    assert patterns
    assert all("\\" not in p for p in patterns)


def _walk(node: Any) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            out.append((key, value))
            out.extend(_walk(value))
    elif isinstance(node, list):
        for item in node:
            out.extend(_walk(item))
    return out


def test_grammar_safe_inlines_refs_and_stops_at_recursion() -> None:
    args = grammar_safe(_awkward_tool().input_schema, top=True)
    props = args["properties"]
    assert props["mode"] == {"enum": ["fast", "slow"]}
    node = props["node"]
    assert node["type"] == "object"
    assert node["properties"]["child"] == {}  # the recursive $ref: any value
    assert props["when"] == {"type": "string"}  # format and pattern dropped
    assert props["title"] == {"type": "string", "minLength": 1}  # huge maxLength dropped
    assert props["maybe"] == {"anyOf": [{"type": "integer"}, {"type": "null"}]}
    assert props["either"] == {"anyOf": [{"type": "integer"}, {"type": "boolean"}]}
    assert props["merged"]["properties"] == {"x": {"type": "number"}}
    assert props["anything"] == {}
    assert args["required"] == ["node"]
    assert args["additionalProperties"] is False


def test_grammar_safe_keeps_arguments_an_object() -> None:
    assert grammar_safe({"type": "string"}, top=True) == {"type": "object"}
    assert grammar_safe({}, top=True) == {"type": "object"}


def test_the_reference_pattern_matches_whole_references_only() -> None:
    import re

    pattern = re.compile(REFERENCE_PATTERN)
    assert pattern.match("${s1}")
    assert pattern.match("${step_2.items.0.name}")
    assert not pattern.match("x ${s1}")
    assert not pattern.match("${1s}")
    assert not pattern.match("${s1.}")


def test_the_schema_is_deterministic(catalog: Catalog) -> None:
    one = json.dumps(plan_schema(list(catalog), max_steps=5, ordered=True))
    two = json.dumps(plan_schema(list(catalog), max_steps=5, ordered=True))
    assert one == two


def test_the_first_ordered_step_can_hold_no_reference(catalog: Catalog) -> None:
    schema = plan_schema(list(catalog), max_steps=10, ordered=True)
    one = copy.deepcopy(GOOD)
    one["steps"] = one["steps"][:1]
    assert _valid(schema, one)
    one["steps"][0]["arguments"]["timezone"] = "${s1.zone}"
    assert not _valid(schema, one)
    one["steps"][0]["arguments"]["timezone"] = "Costs $5, not ${s1}"
    assert not _valid(schema, one)
    one["steps"][0]["arguments"]["timezone"] = "Costs $5"
    assert _valid(schema, one)
    # The second step may read the first.
    assert _valid(schema, GOOD)


def _patterns(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["pattern"]] if isinstance(node.get("pattern"), str) else []
        return found + [p for key, v in node.items() if key != "enum" for p in _patterns(v)]
    if isinstance(node, list):
        return [p for item in node for p in _patterns(item)]
    return []


@pytest.mark.parametrize("ordered", [False, True], ids=["generic", "ordered"])
def test_no_pattern_lets_a_string_run_on_past_its_closing_quote(
    catalog: Catalog, ordered: bool
) -> None:
    # A grammar converter matches a pattern against a string's raw characters: one
    # that admits `"` lets the model leave the string and write any JSON inside it.
    patterns = set(_patterns(plan_schema(list(catalog), max_steps=10, ordered=ordered)))
    assert patterns
    for pattern in patterns:
        for inside in ('a"b', "a\\b", "a\nb", '"'):
            assert not re.search(pattern, inside), (pattern, inside)


@pytest.mark.parametrize("ordered", [False, True], ids=["generic", "ordered"])
def test_the_model_s_own_text_is_bounded(catalog: Catalog, ordered: bool) -> None:
    schema = plan_schema(list(catalog), max_steps=10, ordered=ordered)
    assert schema["properties"]["strategy"]["maxLength"] == STRATEGY_CHARS
    answer = copy.deepcopy(GOOD)
    assert _valid(schema, answer)
    answer["strategy"] = "x" * (STRATEGY_CHARS + 1)
    assert not _valid(schema, answer)
    answer = copy.deepcopy(GOOD)
    answer["steps"][0]["description"] = "x" * (DESCRIPTION_CHARS + 1)
    assert not _valid(schema, answer)
