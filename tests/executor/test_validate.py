"""Static validation of plans: structure, graph, tools, policy and argument schemas."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from executor.catalog import Catalog, ToolInfo
from executor.errors import PlanValidationError
from executor.graph import Graph
from executor.plan import Step
from executor.policy import ToolPolicy
from executor.validate import (
    Problem,
    check_arguments,
    checked_graph,
    parse_steps,
    validate_plan,
)
from executor.validate.arguments import _checkable, _lenient_class, compiled
from executor.validate.fast import FastAcceptor

TIME_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"timezone": {"type": "string", "minLength": 1}},
    "required": ["timezone"],
    "additionalProperties": False,
}
CONVERT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "time": {"type": "string", "pattern": "^[0-9]{2}:[0-9]{2}$"},
        "source_timezone": {"type": "string"},
        "target_timezone": {"type": "string"},
        "options": {
            "type": "object",
            "properties": {"depth": {"type": "integer", "minimum": 0}},
        },
    },
    "required": ["time", "source_timezone", "target_timezone"],
}


def catalog(*extra: ToolInfo) -> Catalog:
    return Catalog(
        [
            ToolInfo(server="time", name="get_current_time", input_schema=TIME_SCHEMA),
            ToolInfo(server="time", name="convert_time", input_schema=CONVERT_SCHEMA),
            ToolInfo(server="fs", name="read_file"),
            ToolInfo(server="fs", name="delete.file"),
            *extra,
        ]
    )


def step(step_id: str, server: str = "fs", tool: str = "read_file", **fields: Any) -> Step:
    return Step.model_validate({"id": step_id, "server": server, "tool": tool, **fields})


def codes(problems: list[Problem]) -> list[tuple[str | None, str]]:
    return [(p.step_id, p.code) for p in problems]


def only(problems: list[Problem], code: str) -> Problem:
    matching = [p for p in problems if p.code == code]
    assert len(matching) == 1, problems
    return matching[0]


# ----------------------------------------------------------------- Problem


def test_problem_str() -> None:
    assert str(Problem("s2", "cycle", "fix it")) == "step 's2': fix it"
    assert str(Problem(None, "empty_plan", "add steps")) == "add steps"


def test_every_problem_is_reported_at_once() -> None:
    steps = [step("a", depends_on=["x"]), step("a", tool="nope")]
    error = PlanValidationError(list(validate_plan(steps, catalog())))
    assert {getattr(p, "code", None) for p in error.problems} == {
        "duplicate_id",
        "unknown_dependency",
        "unknown_tool",
    }
    assert "3 problem(s)" in str(error)
    assert "- step 'a': depends_on names 'x'" in str(error)


# ----------------------------------------------------------------- plan-level


def test_valid_plan_has_no_problems() -> None:
    steps = [
        step("now", "time", "get_current_time", arguments={"timezone": "Europe/Paris"}),
        step(
            "convert",
            "time",
            "convert_time",
            arguments={
                "time": "${now.time}",
                "source_timezone": "Europe/Paris",
                "target_timezone": "Asia/Tokyo",
            },
        ),
        step("read", depends_on=["convert"]),
    ]
    assert validate_plan(steps, catalog(), ToolPolicy(), max_steps=3) == []


def test_empty_plan() -> None:
    problems = validate_plan([], catalog())
    assert codes(problems) == [(None, "empty_plan")]
    assert "add at least one step" in problems[0].message


def test_too_many_steps_is_reported_with_the_rest() -> None:
    steps = [step(f"s{i}") for i in range(5)] + [step("bad", tool="nope")]
    problems = validate_plan(steps, catalog(), max_steps=4)
    assert codes(problems) == [(None, "too_many_steps"), ("bad", "unknown_tool")]
    assert "6 steps but at most 4" in problems[0].message
    assert validate_plan(steps[:4], catalog(), max_steps=4) == []


def test_duplicate_ids() -> None:
    steps = [step("a"), step("b"), step("a"), step("a"), step("b")]
    problems = validate_plan(steps)
    assert codes(problems) == [("a", "duplicate_id"), ("b", "duplicate_id")]
    assert "used by 3 steps (at positions 0, 2, 3)" in problems[0].message
    assert "give each step its own id" in problems[0].message


# ----------------------------------------------------------------- dependencies


def test_unknown_dependency_and_unknown_reference_are_told_apart() -> None:
    steps = [
        step("fetch"),
        step("use", arguments={"path": "${fetsh.path}", "n": ["${ghost}"]}, depends_on=["nope"]),
    ]
    problems = validate_plan(steps)
    assert sorted(codes(problems)) == [
        ("use", "unknown_dependency"),
        ("use", "unknown_reference"),
        ("use", "unknown_reference"),
    ]
    dep = only(problems, "unknown_dependency")
    assert "depends_on names 'nope'" in dep.message
    refs = [p.message for p in problems if p.code == "unknown_reference"]
    assert any(
        "'${fetsh.path}' in arguments.path" in m and "did you mean 'fetch'?" in m for m in refs
    )
    assert any("'${ghost}' in arguments.n[0]" in m for m in refs)


def test_reference_also_listed_in_depends_on_is_reported_once() -> None:
    steps = [step("a", arguments={"x": "${b.y}"}, depends_on=["b"])]
    assert codes(validate_plan(steps)) == [("a", "unknown_reference")]


def test_cycle_is_named_as_a_path() -> None:
    steps = [step("a", depends_on=["b"]), step("b", depends_on=["c"]), step("c", depends_on=["a"])]
    problem = only(validate_plan(steps), "cycle")
    assert problem.step_id == "a"
    assert "a -> b -> c -> a" in problem.message
    assert "remove one of these dependencies" in problem.message


def test_self_dependency_is_a_cycle() -> None:
    problem = only(validate_plan([step("a", depends_on=["a"])]), "cycle")
    assert "step 'a' depends on itself" in problem.message
    assert "remove 'a' from its own depends_on" in problem.message


def test_cycle_through_references() -> None:
    steps = [
        step("a", arguments={"x": "${b.out}"}),
        step("b", arguments={"y": "text ${a}"}),
        step("c", depends_on=["a"]),  # behind the cycle, but not on it
    ]
    problems = validate_plan(steps)
    assert codes(problems) == [("a", "cycle")]
    message = problems[0].message
    assert "a -> b -> a" in message
    assert "'a' reads '${b.out}'" in message
    assert "'b' reads '${a}'" in message


def test_each_cycle_is_reported() -> None:
    steps = [
        step("a", depends_on=["b"]),
        step("b", depends_on=["a"]),
        step("ok"),
        step("x", depends_on=["y", "ok"]),
        step("y", depends_on=["z"]),
        step("z", depends_on=["x"]),
    ]
    messages = [p.message for p in validate_plan(steps) if p.code == "cycle"]
    assert len(messages) == 2
    assert "a -> b -> a" in messages[0]
    assert "x -> y -> z -> x" in messages[1]


def test_shortest_cycle_is_shown() -> None:
    # One strongly connected component with several cycles through 'a'.
    steps = [
        step("a", depends_on=["b", "d"]),
        step("b", depends_on=["c"]),
        step("c", depends_on=["a"]),
        step("d", depends_on=["a"]),
    ]
    problem = only(validate_plan(steps), "cycle")
    assert "a -> d -> a" in problem.message


def test_long_cycle_without_recursion_and_abbreviated() -> None:
    n = 5000
    steps = [step(f"s{i}", depends_on=[f"s{(i + 1) % n}"]) for i in range(n)]
    problem = only(validate_plan(steps), "cycle")
    assert problem.message.startswith("the steps form a cycle s0 -> s1 -> ")
    assert "more steps" in problem.message
    assert f"s{n - 1} -> s0," in problem.message
    assert len(problem.message) < 600


# ----------------------------------------------------------------- topological order


def test_topological_order_puts_dependencies_first_and_is_stable() -> None:
    steps = [
        step("d", depends_on=["b", "c"]),
        step("b", depends_on=["a"]),
        step("c"),
        step("a"),
        step("e", depends_on=["ghost"]),  # unknown ids are not in the graph
    ]
    order = list(Graph(steps).order)
    assert order == ["c", "a", "e", "b", "d"]
    assert list(Graph(steps).order) == order


def test_topological_order_raises_on_cycle_and_duplicates() -> None:
    with pytest.raises(PlanValidationError, match="a -> b -> a"):
        checked_graph([step("a", depends_on=["b"]), step("b", depends_on=["a"])])
    with pytest.raises(PlanValidationError, match="used by 2 steps"):
        checked_graph([step("a"), step("a")])


def random_dag(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    raw = []
    for i in range(n):
        deps = rng.sample(range(i), k=min(i, 2))
        args: dict[str, Any] = {"timezone": f"${{s{deps[0]}.tz}}" if deps else "UTC"}
        raw.append(
            {
                "id": f"s{i}",
                "server": "time",
                "tool": "get_current_time",
                "arguments": args,
                "depends_on": [f"s{d}" for d in deps[1:]],
            }
        )
    return raw


def test_random_dag_of_1000_steps_passes() -> None:
    steps, problems = parse_steps(random_dag(1000, seed=3))
    assert problems == []
    assert validate_plan(steps, catalog(), ToolPolicy(allow=("time",)), max_steps=1000) == []
    order = checked_graph(steps).order
    position = {s: i for i, s in enumerate(order)}
    assert len(order) == 1000
    assert all(position[d] < position[s.id] for s in steps for d in s.depends_on)


def test_random_dag_with_a_back_edge_names_its_cycle() -> None:
    raw = random_dag(300, seed=5)
    # s0 -> s299 -> s0, with every other step of the DAG hanging off it.
    raw[0]["depends_on"] = ["s299"]
    raw[299]["depends_on"] = ["s0"]
    steps, _ = parse_steps(raw)
    problem = only(validate_plan(steps), "cycle")
    assert problem.message.startswith("the steps form a cycle s0 -> s299 -> s0")


# ----------------------------------------------------------------- tools and policy


def test_unknown_tool_suggests_close_names() -> None:
    problems = validate_plan([step("a", "time", "get_time")], catalog())
    problem = only(problems, "unknown_tool")
    assert "the server 'time' has no tool 'get_time'" in problem.message
    assert "did you mean 'time.get_current_time'" in problem.message


def test_unknown_server_lists_servers() -> None:
    problem = only(validate_plan([step("a", "tim", "convert_time")], catalog()), "unknown_tool")
    assert "there is no server 'tim' (servers: 'fs', 'time')" in problem.message
    assert "did you mean 'time.convert_time'" in problem.message  # best first


def test_unknown_tool_without_close_names_lists_the_servers_tools() -> None:
    problem = only(validate_plan([step("a", "fs", "zzzzzz")], catalog()), "unknown_tool")
    assert "use one of its tools ('delete.file', 'read_file')" in problem.message


@pytest.mark.parametrize(
    ("server", "tool"),
    [("time", "time__convert_time"), ("time__convert_time", "x"), ("time", "time.convert_time")],
)
def test_alias_or_dotted_name_in_one_field(server: str, tool: str) -> None:
    problem = only(validate_plan([step("a", server, tool)], catalog()), "unknown_tool")
    assert "did you mean 'time.convert_time'?" in problem.message
    assert "server 'time' and tool 'convert_time' as separate fields" in problem.message


def test_tool_not_allowed_says_why() -> None:
    policy = ToolPolicy(allow=("*",), deny=("fs.delete*",))
    problems = validate_plan([step("a", "fs", "delete.file"), step("b")], catalog(), policy)
    problem = only(problems, "tool_not_allowed")
    assert problem.step_id == "a"
    assert "'fs.delete.file' is not allowed (denied by the pattern 'fs.delete*')" in problem.message


def test_policy_without_catalog() -> None:
    problems = validate_plan([step("a", "web", "get")], policy=ToolPolicy(allow=("fs",)))
    assert codes(problems) == [("a", "tool_not_allowed")]
    assert "not matched by any allowed pattern ('fs')" in problems[0].message


def test_unknown_tool_is_not_also_reported_as_not_allowed() -> None:
    problems = validate_plan([step("a", "web", "get")], catalog(), ToolPolicy(allow=("fs",)))
    assert codes(problems) == [("a", "unknown_tool")]


def test_suggestions_leave_out_tools_the_policy_refuses() -> None:
    policy = ToolPolicy(deny=("time.get_current_time",))
    problem = only(
        validate_plan([step("a", "time", "get_time")], catalog(), policy), "unknown_tool"
    )
    assert "get_current_time" not in problem.message
    assert "'time.convert_time'" in problem.message


# ----------------------------------------------------------------- argument schemas


def test_every_schema_error_with_its_path() -> None:
    steps = [
        step(
            "c",
            "time",
            "convert_time",
            arguments={"time": "noon", "source_timezone": 5, "options": {"depth": -1}},
        )
    ]
    messages = [p.message for p in validate_plan(steps, catalog()) if p.code == "invalid_arguments"]
    assert len(messages) == 4, messages
    joined = "\n".join(messages)
    assert "requires the argument(s) 'target_timezone'" in joined
    assert "arguments.options.depth does not fit" in joined and "-1 is less than" in joined
    assert "arguments.source_timezone does not fit" in joined and "5 is not of type" in joined
    assert "arguments.time does not fit" in joined and "does not match" in joined


def test_unexpected_argument_suggests_the_right_name() -> None:
    steps = [step("a", "time", "get_current_time", arguments={"time_zone": "UTC"})]
    messages = [p.message for p in validate_plan(steps, catalog())]
    assert any(
        "takes no argument(s) 'time_zone' (did you mean 'time_zone' -> 'timezone'?)" in m
        and "its arguments are 'timezone'" in m
        for m in messages
    ), messages


def test_missing_nested_key_names_the_path() -> None:
    schema = {
        "type": "object",
        "properties": {"q": {"type": "object", "required": ["text"]}},
    }
    cat = catalog(ToolInfo(server="x", name="t", input_schema=schema))
    problems = validate_plan([step("a", "x", "t", arguments={"q": {}})], cat)
    assert "arguments.q lacks the key(s) 'text'" in only(problems, "invalid_arguments").message


def test_draft_is_chosen_by_dollar_schema() -> None:
    # Boolean exclusiveMaximum only means something in draft 4.
    draft4 = {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "type": "object",
        "properties": {"n": {"type": "number", "maximum": 5, "exclusiveMaximum": True}},
    }
    cat = catalog(ToolInfo(server="x", name="t", input_schema=draft4))
    problems = validate_plan([step("a", "x", "t", arguments={"n": 5})], cat)
    assert (
        "5 is greater than or equal to the maximum of 5"
        in only(problems, "invalid_arguments").message
    )
    assert validate_plan([step("a", "x", "t", arguments={"n": 4})], cat) == []


def test_invalid_or_unresolvable_schemas_are_not_held_against_the_plan() -> None:
    cat = catalog(
        ToolInfo(server="x", name="bad", input_schema={"type": "no-such-type"}),
        ToolInfo(server="x", name="ref", input_schema={"$ref": "https://example.invalid/s.json"}),
    )
    steps = [step("a", "x", "bad", arguments={"n": 1}), step("b", "x", "ref", arguments={})]
    assert validate_plan(steps, cat) == []


def test_validators_are_cached_per_schema() -> None:
    assert compiled(CONVERT_SCHEMA) is compiled(dict(CONVERT_SCHEMA))


# --------------------------------------------------------- references in schema checks

REF_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "n": {"type": "integer", "minimum": 1},
        "word": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 5},
        "unit": {"enum": ["c", "f"]},
        "price": {"type": "string", "pattern": r"^\$[0-9]+$", "maxLength": 3},
        "ids": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "uniqueItems": True},
        "either": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
        "point": {
            "type": "object",
            "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
            "required": ["x", "y"],
            "additionalProperties": False,
        },
        "fixed": {"const": {"k": 1}},
        "never": False,
        "notstr": {"not": {"type": "string"}},
        "cond": {
            "if": {"properties": {"kind": {"const": "a"}}},
            "then": {"required": ["a"]},
            "else": {"required": ["b"]},
        },
    },
    "required": ["n"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        # A whole reference can be any type: no check on the value.
        ({"n": "${up.count}"}, None),
        ({"n": "${up}", "unit": "${up.unit}", "word": "${up.w}"}, None),
        # ... and it makes a required key present.
        ({"n": "${up.n}", "point": {"x": "${up.x}", "y": 2}}, None),
        ({"n": 1, "point": {"x": "${up.x}"}}, "lacks the key(s) 'y'"),
        # ... but a key the schema forbids stays forbidden.
        ({"n": 1, "extra": "${up}"}, "takes no argument(s) 'extra'"),
        ({"n": 1, "point": {"x": 1, "y": 1, "z": "${up}"}}, "'z' was unexpected"),
        # (jsonschema drops the path of errors from a `false` subschema.)
        ({"n": 1, "never": "${up}"}, "False schema does not allow '${up}'"),
        # Interpolated text is certainly a string: its type is checked ...
        ({"n": "count ${up.n}"}, "is not of type 'integer'"),
        # ... its content is not.
        ({"n": 1, "word": "${up.a}${up.b}-X", "unit": "x${up}"}, None),
        # `$$` is a literal '$', checked as the tool will receive it.
        ({"n": 1, "price": "$$12"}, None),
        ({"n": 1, "price": "$$123"}, "is too long"),
        ({"n": 1, "price": "12"}, "does not match"),
        # Arrays: items that are references can be anything; counts are literal.
        ({"n": 1, "ids": ["${up.a}", 2]}, None),
        ({"n": 1, "ids": ["${up.a}", "${up.a}"]}, None),
        ({"n": 1, "ids": ["${up.a}"]}, "is too short"),
        ({"n": 1, "ids": ["${up.a}", "two"]}, "'two' is not of type 'integer'"),
        # oneOf: a reference passes both branches, which proves nothing.
        ({"n": 1, "either": "${up}"}, None),
        ({"n": 1, "either": 1.5}, "is not valid under any"),
        # Keywords an unknown value could flip are left to run time.
        ({"n": 1, "fixed": {"k": "${up.k}"}}, None),
        ({"n": 1, "fixed": {"k": 2}}, "was expected"),
        ({"n": 1, "notstr": "${up}"}, None),
        ({"n": 1, "cond": {"kind": "${up.kind}"}}, None),
        ({"n": 1, "cond": {"kind": "a"}}, "lacks the key(s) 'a'"),
        # Literal values next to references are still checked.
        ({"n": 0, "word": "${up.w}"}, "0 is less than the minimum of 1"),
        ({"n": "${up}", "unit": "k"}, "'k' is not one of"),
    ],
)
def test_references_in_schema_checks(arguments: dict[str, Any], error: str | None) -> None:
    cat = catalog(ToolInfo(server="x", name="t", input_schema=REF_SCHEMA))
    steps = [step("up"), step("s", "x", "t", arguments=arguments)]
    problems = validate_plan(steps, cat)
    if error is None:
        assert problems == []
    else:
        assert [p.code for p in problems] == ["invalid_arguments"], problems
        assert error in problems[0].message, problems[0].message


# The fast acceptor must never accept what the full check refuses.

json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(-5, 5, allow_nan=False)
    | st.sampled_from(["a", "abc", "Z9", "", "${up}", "${up.k}", "x${up}", "$$1", "$$", "a$b"])
)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["a", "b", "c"]), inner, max_size=3)
    ),
    max_leaves=8,
)
type_names = st.sampled_from(["null", "boolean", "integer", "number", "string", "array", "object"])


def schema_nodes(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    keywords = st.fixed_dictionaries(
        {},
        optional={
            "type": type_names | st.lists(type_names, min_size=1, max_size=3, unique=True),
            "enum": st.lists(json_leaf, min_size=1, max_size=3),
            "const": json_leaf,
            "properties": st.dictionaries(st.sampled_from(["a", "b", "c"]), inner, max_size=3),
            "required": st.lists(st.sampled_from(["a", "b", "c"]), unique=True, max_size=3),
            "additionalProperties": st.booleans() | inner,
            "items": inner,
            "minItems": st.integers(0, 3),
            "maxItems": st.integers(0, 3),
            "minProperties": st.integers(0, 3),
            "maxProperties": st.integers(0, 3),
            "minimum": st.integers(-3, 3),
            "maximum": st.integers(-3, 3),
            "exclusiveMinimum": st.integers(-3, 3) | st.floats(-3, 3),
            "exclusiveMaximum": st.integers(-3, 3),
            "minLength": st.integers(0, 3),
            "maxLength": st.integers(0, 3),
            "pattern": st.sampled_from(["^a", "b", "^[a-z]*$", r"^\$"]),
            "format": st.just("email"),
            "title": st.just("t"),
        },
    )
    return keywords


schemas: st.SearchStrategy[Any] = st.recursive(
    st.just({}) | st.just(True), schema_nodes, max_leaves=6
)


@settings(
    derandomize=True, max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(schema=schemas, value=json_value)
def test_fast_acceptor_never_accepts_what_jsonschema_refuses(schema: Any, value: Any) -> None:
    fast = FastAcceptor.compile(schema, root=True)
    assert fast is not None  # every generated keyword is one it handles
    if not fast.accepts(value):
        return
    steps = [step("up"), step("s", "x", "t", arguments={"v": value})]
    wrapper = {"type": "object", "properties": {"v": schema}}
    cat = catalog(ToolInfo(server="x", name="t", input_schema=wrapper))
    # Drop the fast path to see what the full check alone says.
    validators = compiled(wrapper)
    assert validators is not None
    full = _lenient_class(type(validators.plain))(wrapper)
    errors = list(full.iter_errors(_checkable({"v": value})))
    assert errors == [], (schema, value, errors)
    assert validate_plan(steps, cat) == []


# The placeholder rules must never refuse arguments that some run-time value
# would make valid: take a valid concrete value, put references where some of
# its parts were, and the check must still pass.

concrete_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.floats(-3, 3, allow_nan=False)
    | st.text(st.sampled_from("abZ9 "), max_size=3)
)
concrete_value = st.recursive(
    concrete_leaf,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["a", "b", "c"]), inner, max_size=3)
    ),
    max_leaves=8,
)


def rich_nodes(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    subschemas = st.lists(inner, min_size=1, max_size=3)
    extra = st.fixed_dictionaries(
        {},
        optional={
            "oneOf": subschemas,
            "anyOf": subschemas,
            "allOf": subschemas,
            "not": inner,
            "if": inner,
            "then": inner,
            "else": inner,
            "uniqueItems": st.booleans(),
            "contains": inner,
            "maxContains": st.integers(0, 2),
            "prefixItems": subschemas,
            "dependentRequired": st.dictionaries(
                st.sampled_from(["a", "b"]), st.lists(st.sampled_from(["b", "c"]), max_size=2)
            ),
            "patternProperties": st.dictionaries(st.sampled_from(["^a", "b"]), inner, max_size=1),
            "unevaluatedProperties": st.booleans(),
        },
    )
    return st.tuples(schema_nodes(inner), extra).map(lambda pair: {**pair[0], **pair[1]})


rich_schemas: st.SearchStrategy[Any] = st.recursive(
    st.just({}) | st.booleans(), rich_nodes, max_leaves=6
)


def with_references(value: Any, data: st.DataObject) -> Any:
    choice = data.draw(st.integers(0, 5))
    if choice == 0:
        return "${up.part}"  # whole reference: this value, of any type, at run time
    if choice == 1 and isinstance(value, str) and value:
        return value[0] + "${up.rest}"  # interpolation that can yield this string
    if isinstance(value, dict):
        return {k: with_references(v, data) for k, v in value.items()}
    if isinstance(value, list):
        return [with_references(v, data) for v in value]
    return value


@settings(
    derandomize=True, max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(schema=rich_schemas, value=concrete_value, data=st.data())
def test_references_never_cause_false_errors(schema: Any, value: Any, data: st.DataObject) -> None:
    if not Draft202012Validator(schema).is_valid(value):
        return
    templated = with_references(value, data)
    lenient = _lenient_class(Draft202012Validator)(schema)
    errors = list(lenient.iter_errors(_checkable(templated)))
    assert errors == [], (schema, value, templated, errors)


def test_fast_acceptor_declines_what_it_does_not_know() -> None:
    assert FastAcceptor.compile({"type": "object", "patternProperties": {}}, root=True) is None
    assert FastAcceptor.compile({"$ref": "#/$defs/x"}, root=True) is None
    assert FastAcceptor.compile({"properties": {"a": {"oneOf": []}}}, root=True) is None
    draft4 = {"$schema": "http://json-schema.org/draft-04/schema#", "type": "object"}
    assert FastAcceptor.compile(draft4, root=True) is None
    draft7 = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object"}
    assert FastAcceptor.compile(draft7, root=True) is not None
    fast = FastAcceptor.compile(TIME_SCHEMA, root=True)
    assert fast is not None
    assert fast.accepts({"timezone": "UTC"})
    assert fast.accepts({"timezone": "${up.tz}"})
    assert not fast.accepts({"timezone": ""})
    assert not fast.accepts({"timezone": "UTC", "x": 1})
    assert not fast.accepts({"timezone": "${bad ref}"})


# ----------------------------------------------------------------- parse_steps


def test_parse_steps_builds_valid_steps() -> None:
    steps, problems = parse_steps(
        [{"id": "a", "server": "s", "tool": "t"}, {"id": "b", "server": "s", "tool": "t"}]
    )
    assert problems == []
    assert [s.id for s in steps] == ["a", "b"]


def test_parse_steps_reports_every_field() -> None:
    steps, problems = parse_steps(
        [
            {"id": "ok", "server": "s", "tool": "t"},
            {
                "id": "b",
                "server": "",
                "tool": "t",
                "args": {},
                "depends_on": "a",
                "on_error": "ignore",
                "retry": {"initial_interval_s": 5, "maximum_interval_s": 1},
            },
        ]
    )
    assert [s.id for s in steps] == ["ok"]
    assert {p.step_id for p in problems} == {"b"}
    assert {p.code for p in problems} == {"invalid_step"}
    text = "\n".join(str(p) for p in problems)
    assert "step 'b': 'server' is not valid" in text
    assert "a step has no field 'args' (did you mean 'arguments'?): remove it" in text
    assert "'depends_on' is not valid" in text and 'such as ["s1"]' in text
    assert "'on_error' is not valid" in text and "write 'fail' or 'continue'" in text
    assert "maximum_interval_s (1.0) must be at least initial_interval_s (5.0)" in text
    assert len(problems) == 5


def test_parse_steps_without_a_usable_id_names_the_position() -> None:
    _, problems = parse_steps([{"server": "s", "tool": "t"}, {"id": "9x", "server": "s"}])
    assert problems[0].step_id is None
    assert str(problems[0]).startswith("steps[0]: the required field 'id' is missing")
    assert {p.step_id for p in problems[1:]} == {"9x"}
    assert any("starts with a letter" in p.message for p in problems[1:])
    assert any("the required field 'tool' is missing" in p.message for p in problems[1:])


def test_parse_steps_rejects_non_objects() -> None:
    raw: list[Any] = [["a"], "step", None]
    steps, problems = parse_steps(raw)
    assert steps == []
    assert [p.message.split(",")[0] for p in problems] == [
        "steps[0] is an array",
        "steps[1] is a string",
        "steps[2] is null",
    ]
    assert all(p.code == "invalid_step" for p in problems)


def test_parse_steps_reports_bad_references_with_paths_and_other_fields() -> None:
    steps, problems = parse_steps(
        [
            {
                "id": "a",
                "server": "s",
                "tool": "t",
                "arguments": {"q": "${not ok}", "list": ["fine", "${open"]},
                "timeout_s": 0,
            }
        ]
    )
    assert steps == []
    assert codes(problems) == [
        ("a", "bad_reference"),
        ("a", "bad_reference"),
        ("a", "invalid_step"),
    ]
    assert problems[0].message.startswith("arguments.q: malformed reference '${not ok}'")
    assert problems[1].message.startswith("arguments.list[1]: unclosed reference")
    assert "'timeout_s' is not valid" in problems[2].message


def test_parse_steps_accepts_any_mapping() -> None:
    class Frozen(dict[str, Any]):
        pass

    steps, problems = parse_steps([Frozen(id="a", server="s", tool="t")])
    assert problems == [] and steps[0].id == "a"


# ----------------------------------------------------------------- references and output schemas

NOTE_OUTPUT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "content": {"type": "string"},
        "meta": {
            "type": "object",
            "properties": {"size": {"type": "integer"}},
            "additionalProperties": False,
        },
        "lines": {"type": "array", "items": {"type": "object", "properties": {"n": {}}}},
        "extra": {"type": "object", "additionalProperties": {"type": "integer"}},
        "either": {"anyOf": [{"type": "string"}, {"type": "object"}]},
    },
    "required": ["content"],
}


def note_reader(output_schema: dict[str, Any] | None = NOTE_OUTPUT) -> ToolInfo:
    return ToolInfo(server="fs", name="read_note", output_schema=output_schema)


@pytest.mark.parametrize(
    ("reference", "error"),
    [
        ("${rd}", None),
        ("${rd.content}", None),
        ("${rd.meta.size}", None),
        ("${rd.lines.0.n.deep}", None),
        ("${rd.extra.anything}", None),
        ("${rd.either.anything}", None),
        ("text ${rd.content} inside", None),
        ("${rd.contents}", "did you mean '${rd.content}'"),
        ("text ${rd.contents} inside", "reads 'contents'"),
        ("${rd.meta.bytes}", "'rd.meta' has only 'size'"),
        ("${rd.lines.first}", "'first' is not an index"),
        ("${rd.content.0}", "is a string"),
        ("${rd.meta.size.x}", "is an integer"),
        ("${rd.extra.k.x}", "is an integer"),
    ],
)
def test_references_are_checked_against_the_producers_output_schema(
    reference: str, error: str | None
) -> None:
    steps = [
        step("rd", "fs", "read_note"),
        step("use", arguments={"x": {"y": [reference]}}),
    ]
    problems = validate_plan(steps, catalog(note_reader()))
    if error is None:
        assert problems == []
        return
    problem = only(problems, "invalid_reference")
    assert problem.step_id == "use"
    assert "arguments.x.y[0]" in problem.message and "'fs.read_note'" in problem.message
    assert error in problem.message


@pytest.mark.parametrize(
    "schema",
    [
        None,
        {"type": "object", "additionalProperties": True},
        {"type": "object", "properties": {"a": {}}, "patternProperties": {"^c": {}}},
        {"$ref": "#/$defs/x", "$defs": {"x": {"type": "object"}}},
        {"type": "object", "properties": {"a": {}}, "allOf": [{"properties": {"contents": {}}}]},
    ],
    ids=["no_schema", "open", "pattern", "ref", "all_of"],
)
def test_an_output_schema_that_cannot_rule_a_key_out_accepts_it(
    schema: dict[str, Any] | None,
) -> None:
    steps = [step("rd", "fs", "read_note"), step("use", arguments={"x": "${rd.contents}"})]
    assert validate_plan(steps, catalog(note_reader(schema))) == []


def test_content_blocks_stay_reachable_when_the_schema_does_not_name_content() -> None:
    # `${s.content...}` may address the tool's content blocks (see ARCHITECTURE.md).
    schema = {"type": "object", "properties": {"text": {"type": "string"}}}
    steps = [step("rd", "fs", "read_note"), step("use", arguments={"x": "${rd.content.0.text}"})]
    assert validate_plan(steps, catalog(note_reader(schema))) == []


# ----------------------------------------------------------------- arguments as sent


def test_resolved_arguments_are_checked_literally() -> None:
    info = ToolInfo(server="time", name="get_current_time", input_schema=TIME_SCHEMA)
    assert check_arguments(info, {"timezone": "UTC"}) == []
    # Resolved values are data: a "${...}" in them is text, not a reference.
    assert check_arguments(info, {"timezone": "${s1}"}) == []
    problems = check_arguments(info, {"timezone": 3})
    assert len(problems) == 1 and "arguments.timezone" in problems[0]
    integer = ToolInfo(
        server="t", name="n", input_schema={"properties": {"n": {"type": "integer"}}}
    )
    (problem,) = check_arguments(integer, {"n": "${s1}"})
    assert "'${s1}' is not of type 'integer'" in problem
    assert check_arguments(ToolInfo(server="t", name="any"), {"n": "${s1}"}) == []
