"""Fuzz every tool's arguments through a real stdio session to `taskorch serve`.

However wrong the arguments, the server answers: a result, or a tool error
that says something specific (never the SDK's bare "Error executing tool X",
which is what an unexpected exception in a tool turns into), and it still
answers afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client
from mcp_types import CallToolResult

from tests.e2e.support import serve_params, tool_text, write_config

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**40), max_value=2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=24)
)
JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
TEMPLATES = st.sampled_from(
    ["${a}", "${a.b.0}", "x ${b} y", "${", "${}", "$${a}", "${a..b}", "${0bad}", "$$", "${a}${a}"]
)
STEP = st.fixed_dictionaries(
    {
        "id": st.sampled_from(["a", "b", "c", "end", "", "1x", "a b"]) | st.text(max_size=10),
        "server": st.sampled_from(["text", "nope", ""]) | st.text(max_size=6),
        "tool": st.sampled_from(["slugify", "word_count", "keywords", "x"]) | st.text(max_size=6),
    },
    optional={
        "arguments": st.dictionaries(
            st.sampled_from(["text", "top_k", "max_length"]) | st.text(max_size=6),
            JSON | TEMPLATES,
            max_size=3,
        ),
        "depends_on": st.lists(st.sampled_from(["a", "b", "zz"]) | st.text(max_size=4), max_size=3),
        "on_error": st.sampled_from(["fail", "continue", "explode"]),
        "timeout_s": st.sampled_from([0, -1, 0.5, 1e308]),
        "retry": st.dictionaries(
            st.sampled_from(["maximum_attempts", "jitter", "x"]), JSON, max_size=2
        ),
    },
)


def _typed(name: str, schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values of roughly the declared type, so that calls get past argument validation."""
    if name == "steps":
        return st.lists(STEP, min_size=1, max_size=4)
    if "anyOf" in schema:
        return st.one_of([_typed(name, s) for s in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    match schema.get("type"):
        case "string":
            return st.sampled_from(["a", "", "plan", "text"]) | st.text(max_size=16) | TEMPLATES
        case "integer":
            return st.integers(min_value=-3, max_value=600)
        case "number":
            return st.floats(allow_nan=False, allow_infinity=False)
        case "boolean":
            return st.booleans()
        case "null":
            return st.none()
        case "array":
            return st.lists(JSON_SCALARS, max_size=3)
    return JSON


def _tool_args(schema: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    props: dict[str, Any] = schema.get("properties", {})
    required = set(schema.get("required", []))

    def value(name: str) -> st.SearchStrategy[Any]:
        typed = _typed(name, props[name])
        # Mostly well-typed, so that most calls reach the tool's own checks.
        return st.one_of(typed, typed, typed, JSON)

    known = st.fixed_dictionaries(
        {p: value(p) for p in sorted(props) if p in required},
        optional={p: value(p) for p in sorted(props) if p not in required},
    )
    noise = st.dictionaries(st.text(max_size=8), JSON, max_size=1)
    return st.tuples(known, noise, st.booleans()).map(
        lambda kn: {**kn[1], **kn[0]} if kn[2] else kn[0]
    )


@pytest.fixture
def session(tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    config = write_config(tmp_path, servers=("text",))
    with anyio.from_thread.start_blocking_portal("asyncio") as portal:
        with portal.wrap_async_context_manager(
            Client(serve_params(config, tmp_path / "t.db"))
        ) as client:
            yield portal, client


def test_fuzzed_arguments_never_crash_a_tool_or_the_server(session: tuple[Any, Any]) -> None:
    portal, client = session
    tools = portal.call(client.list_tools).tools
    schemas = {t.name: t.input_schema for t in tools}
    calls = st.sampled_from(sorted(schemas)).flatmap(
        lambda name: st.tuples(st.just(name), _tool_args(schemas[name]))
    )
    outcomes: dict[str, int] = {"ok": 0, "error": 0}

    async def call(name: str, args: dict[str, Any]) -> CallToolResult:
        # Hang guard only: every call here is quick.
        with anyio.fail_after(60):
            result: CallToolResult = await client.call_tool(name, args)
            return result

    @settings(
        max_examples=300,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(calls)
    def check(case: tuple[str, dict[str, Any]]) -> None:
        name, args = case
        result = portal.call(call, name, args)
        if result.is_error:
            text = tool_text(result)
            outcomes["error"] += 1
            print("ERR", name, text[:150].replace(chr(10), " "))
            assert text.strip(), (name, args)
            # The bare SDK message means an unexpected exception escaped the tool.
            assert text.strip() != f"Error executing tool {name}", (name, args)
        else:
            outcomes["ok"] += 1
            assert result.structured_content is not None, (name, args)

    check()
    assert outcomes["error"] > 0 and outcomes["ok"] > 0, outcomes
    # Still serving.
    assert len(portal.call(client.list_tools).tools) == len(schemas)
    listed = portal.call(call, "list_plans", {})
    assert not listed.is_error


def test_fuzzed_plans_get_precise_problems_or_a_plan(session: tuple[Any, Any]) -> None:
    """Well-formed calls with random steps: the deepest path, through parsing and validation."""
    portal, client = session
    outcomes: dict[str, int] = {"ok": 0, "error": 0}
    valid = st.lists(
        st.text(alphabet="abcdefgh_", min_size=1, max_size=6), min_size=1, max_size=4, unique=True
    ).map(
        lambda ids: [
            {"id": i, "server": "text", "tool": "slugify", "arguments": {"text": f"step {i}"}}
            for i in ids
        ]
    )

    async def create(steps: list[dict[str, Any]]) -> CallToolResult:
        with anyio.fail_after(60):
            result: CallToolResult = await client.call_tool(
                "create_plan", {"query": "fuzz", "steps": steps}
            )
            return result

    @settings(
        max_examples=150,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(valid | st.lists(STEP, min_size=0, max_size=5))
    def check(steps: list[dict[str, Any]]) -> None:
        result = portal.call(create, steps)
        text = tool_text(result)
        if result.is_error:
            outcomes["error"] += 1
            assert text.strip() != "Error executing tool create_plan", steps
            # Either argument validation or the plan's own problems, each named.
            assert "validation error" in text or "problem" in text or "plan" in text, text
        else:
            outcomes["ok"] += 1
            plan = result.structured_content
            assert plan is not None and plan["status"] == "awaiting_confirmation"

    check()
    assert outcomes["error"] > 0 and outcomes["ok"] > 0, outcomes
