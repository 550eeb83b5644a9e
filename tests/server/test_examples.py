"""The example downstream servers, over stdio as taskorch runs them."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters

from executor.downstream.specs import StdioServerSpec
from server.config import load_config
from server.demo import EXAMPLE_SERVERS, child_env, demo_config, demo_plan, repo_root
from tests.e2e.support import structured, tool_text


@asynccontextmanager
async def _server(name: str, *args: str) -> AsyncIterator[Client]:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", EXAMPLE_SERVERS[name], *args],
        env=child_env(),
        cwd=str(repo_root()),
    )
    async with Client(params) as client:
        yield client


async def _call(client: Client, tool: str, **args: Any) -> dict[str, Any]:
    return structured(await client.call_tool(tool, args))


@pytest.mark.anyio
@pytest.mark.parametrize("name", sorted(EXAMPLE_SERVERS))
async def test_every_tool_is_described_annotated_and_typed(name: str, tmp_path: Path) -> None:
    args = ("--data-dir", str(tmp_path)) if name == "notes" else ()
    async with _server(name, *args) as client:
        tools = (await client.list_tools()).tools
    assert len(tools) >= 4
    for tool in tools:
        assert tool.description, tool.name
        assert tool.annotations is not None and tool.annotations.read_only_hint is not None
        assert tool.annotations.open_world_hint is False  # nothing here leaves the machine
        assert tool.output_schema is not None, tool.name


@pytest.mark.anyio
async def test_text_tools() -> None:
    text = (
        "Cats sleep most of the day. A dog guards the house at night. "
        "Cats and dogs both like food. The cat purrs when fed."
    )
    async with _server("text") as client:
        counted = await _call(client, "word_count", text=text)
        assert counted["words"] == 24
        assert counted["sentences"] == 4
        summary = await _call(client, "summarize", text=text, max_sentences=2)
        assert summary["kept"] == 2 and summary["total"] == 4
        # Kept sentences come in their original order.
        order = [text.index(s) for s in summary["sentences"]]
        assert order == sorted(order)
        keywords = await _call(client, "keywords", text=text, top_k=2)
        assert keywords["words"] == ["cat", "dog"]  # plurals folded into the singular
        assert keywords["keywords"][0] == {"word": "cat", "count": 3}
        slug = await _call(client, "slugify", text="  Hello, Wörld! Ça va?  ", max_length=14)
        assert slug["slug"] == "hello-world-ca"
        bad = await client.call_tool("slugify", {"text": "x", "separator": "/"})
        assert bad.is_error


@pytest.mark.anyio
async def test_stats_tools_and_safe_evaluation() -> None:
    async with _server("stats") as client:
        described = await _call(client, "describe", values=[2, 4, 4, 4, 5, 5, 7, 9])
        assert described["mean"] == 5.0
        assert described["median"] == 4.5
        assert described["stdev"] == pytest.approx(2.138, abs=1e-3)
        assert (await _call(client, "percentile", values=[1, 2, 3, 4], q=50))["value"] == 2.5
        value = await _call(client, "evaluate", expression="2 * (3 + 4) ** 2 / sqrt(16)")
        assert value["value"] == 24.5
        for hostile in ("__import__('os').system('true')", "(1).__class__", "9**9**9", "1/0"):
            result = await client.call_tool("evaluate", {"expression": hostile})
            assert result.is_error, hostile
            assert "cannot evaluate" in tool_text(result)
        seen: list[float] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen.append(progress)

        total = structured(
            await client.call_tool(
                "running_total",
                {"values": [1, 2, 3], "delay_s": 0},
                progress_callback=on_progress,
            )
        )
        assert total == {"total": 6.0, "partial_sums": [1.0, 3.0, 6.0]}
        assert seen == [1.0, 2.0, 3.0]


@pytest.mark.anyio
async def test_clock_tools() -> None:
    async with _server("clock") as client:
        now = await _call(client, "now", timezone="Europe/Paris")
        assert now["timezone"] == "Europe/Paris"
        moved = await _call(
            client, "convert_time", time="2025-01-15T12:00:00+00:00", to_timezone="Asia/Tokyo"
        )
        assert moved["iso"] == "2025-01-15T21:00:00+09:00"
        later = await _call(client, "add_duration", time="2025-02-28T23:30:00+00:00", minutes=45)
        assert later["date"] == "2025-03-01"
        days = await _call(client, "business_days", start="2025-01-06", end="2025-01-20")
        assert days == {"business_days": 10, "calendar_days": 14}
        month = await _call(client, "month_calendar", year=2025, month=2)
        assert month["weeks"][0] == [0, 0, 0, 0, 0, 1, 2]
        bad = await client.call_tool("now", {"timezone": "Mars/Olympus"})
        assert bad.is_error and "IANA" in tool_text(bad)


@pytest.mark.anyio
async def test_notes_tools_keep_notes_under_the_data_dir(tmp_path: Path) -> None:
    async with _server("notes", "--data-dir", str(tmp_path)) as client:
        assert (await _call(client, "put", key="todo", text="milk"))["created"] is True
        appended = await _call(client, "append", key="todo", text="eggs")
        assert appended["created"] is False
        assert (await _call(client, "get", key="todo"))["text"] == "milk\neggs"
        assert (await _call(client, "get", key="none"))["found"] is False
        assert (await _call(client, "list_notes"))["keys"] == ["todo"]
        assert (await _call(client, "delete", key="todo"))["deleted"] is True
        assert (await _call(client, "delete", key="todo"))["deleted"] is False
        escape = await client.call_tool("put", {"key": "../outside", "text": "x"})
        assert escape.is_error
    assert not (tmp_path.parent / "outside.note").exists()
    assert [p async for p in anyio.Path(tmp_path).iterdir()] == []


def test_example_config_and_plan_are_valid() -> None:
    root = repo_root()
    config = load_config(root / "examples" / "config.json", env={"HOME": "/home/someone"})
    assert set(config.servers) == set(EXAMPLE_SERVERS)
    for name, spec in config.servers.items():
        assert isinstance(spec, StdioServerSpec)
        assert spec.args[:2] == ("-m", EXAMPLE_SERVERS[name])
    demo = demo_config(Path("/tmp/x"))
    assert set(demo["mcpServers"]) == set(EXAMPLE_SERVERS)
    plan = demo_plan()
    assert json.loads((root / "server" / "examples" / "plan.json").read_text()) == plan
    ids = [s["id"] for s in plan["steps"]]
    assert len(ids) == len(set(ids))
