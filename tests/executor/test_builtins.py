"""The built-in steps of server `taskorch`, called as the scheduler calls any tool."""

from __future__ import annotations

from typing import Any

import pytest

from executor.builtins import BUILTIN_SERVER, BuiltinCaller, builtin_tools
from executor.catalog import Catalog
from executor.errors import ErrorKind, ToolCallError
from executor.plan import Step
from executor.validate import validate_plan

pytestmark = pytest.mark.anyio


async def _call(tool: str, **arguments: Any) -> Any:
    result = await BuiltinCaller().call(BUILTIN_SERVER, tool, arguments)
    assert not result.is_error, result.text()
    return result.output()


async def _error(tool: str, **arguments: Any) -> str:
    result = await BuiltinCaller().call(BUILTIN_SERVER, tool, arguments)
    assert result.is_error
    return result.text()


async def test_extract_finds_converts_and_lists_every_match() -> None:
    out = await _call(
        "extract", text="The sum of 2 and 3 is 5.", pattern=r"is (-?\d+)", type="number"
    )
    assert out == {"found": True, "value": 5, "matches": [5], "groups": ["5"], "named": {}}
    many = await _call("extract", text="a1 b22 c333", pattern=r"\d+", type="integer")
    assert many["value"] == 1 and many["matches"] == [1, 22, 333] and many["groups"] == []
    named = await _call("extract", text="Commit: ABC", pattern=r"commit: (?P<id>\w+)", flags="i")
    assert named["value"] == "ABC" and named["named"] == {"id": "ABC"}
    none = await _call("extract", text="nothing", pattern=r"\d")
    assert none == {"found": False, "value": None, "matches": [], "groups": [], "named": {}}
    as_json = await _call("extract", text='x={"a": [1]};', pattern=r"x=(.*);", type="json")
    assert as_json["value"] == {"a": [1]}
    assert (await _call("extract", text="ok: yes", pattern=r"ok: (\w+)", type="boolean"))[
        "value"
    ] is True


async def test_extract_says_what_is_wrong() -> None:
    assert "not a valid regular expression" in await _error("extract", text="x", pattern="(")
    message = await _error("extract", text="n=5a", pattern=r"n=(\w+)", type="number")
    assert "'5a' is not a number" in message


async def test_select_split_join_and_format() -> None:
    assert await _call("select", value={"items": [{"name": "a"}]}, path="items.0.name") == {
        "value": "a"
    }
    assert await _call("select", value='{"k": [1, 2]}', path="k.1") == {"value": 2}
    assert await _call("select", value=[1], path="") == {"value": [1]}
    assert "no key 'x'" in await _error("select", value={"a": 1}, path="x")
    assert "not JSON" in await _error("select", value="plain", path="a")
    lines = await _call("split_lines", text=" a \n\n b\r\nc")
    assert lines == {"lines": ["a", "b", "c"], "count": 3}
    kept = await _call("split_lines", text="a\n\nb", keep_empty=True, strip=False)
    assert kept["lines"] == ["a", "", "b"]
    assert await _call("join", items=["a", 1, {"b": None}], separator=", ") == {
        "text": 'a, 1, {"b":null}'
    }
    filled = await _call(
        "format", template="{{x}} {name} has {n.0} {n}", values={"name": "é", "n": [3]}
    )
    assert filled == {"text": "{x} é has 3 [3]"}
    assert "'missing'" in await _error("format", template="{missing}", values={"a": 1})
    # Fields are paths into `values`, never attributes of Python objects.
    assert "cannot be read" in await _error("format", template="{a.__class__}", values={"a": 1})
    assert "not a field" in await _error("format", template="a { b", values={})


async def test_arguments_are_checked_at_run_time_like_any_tool() -> None:
    caller = BuiltinCaller()
    with pytest.raises(ToolCallError) as bad:
        await caller.call(BUILTIN_SERVER, "extract", {"text": "x"})
    assert bad.value.kind is ErrorKind.INVALID_ARGUMENTS and "pattern" in str(bad.value)
    with pytest.raises(ToolCallError) as extra:
        await caller.call(BUILTIN_SERVER, "join", {"items": [], "sep": ","})
    assert "sep" in str(extra.value)
    with pytest.raises(ToolCallError) as unknown:
        await caller.call(BUILTIN_SERVER, "grep", {})
    assert unknown.value.kind is ErrorKind.TOOL_UNAVAILABLE and "extract" in str(unknown.value)
    with pytest.raises(ToolCallError) as elsewhere:
        await caller.call("fs", "read", {})
    assert elsewhere.value.kind is ErrorKind.TOOL_UNAVAILABLE


async def test_the_catalog_lists_them_and_plans_are_validated_against_them() -> None:
    catalog = await BuiltinCaller().catalog()
    assert {t.name for t in catalog.tools_of(BUILTIN_SERVER)} == {
        "extract",
        "select",
        "split_lines",
        "join",
        "format",
    }
    for info in builtin_tools():
        assert info.annotations.read_only and info.output_schema is not None
    steps = [
        Step(id="a", server="taskorch", tool="extract", arguments={"text": "x", "patern": "y"}),
        Step(id="b", server="taskorch", tool="join", arguments={"items": "${a.matches}"}),
    ]
    problems = validate_plan(steps, Catalog(builtin_tools()))
    assert {(p.step_id, p.code) for p in problems} == {("a", "invalid_arguments")}
    assert any("patern" in p.message for p in problems)
