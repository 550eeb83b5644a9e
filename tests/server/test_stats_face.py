"""Statistics as a host and a person see them: `get_stats`, `stats://` resources, `get_plan`'s
timing, the timeline's critical path, and `taskorch stats` — after real plans ran against a
slow and a flaky fixture server (the engine fixture over stdio, under two names).

Counts are exact; durations are bounded by what the fixtures were asked to do.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp_types import TextResourceContents

from executor.plan import utc_now
from executor.records import ToolCallStats
from executor.stats import Stats
from server.config import load_config
from server.mcp import build_server
from server.service import TaskOrchestrator
from server.stats_view import RESOURCE_ROWS, render_stats_chart, render_stats_json, stats_view
from tests.e2e.support import clean_env, run_cli, structured, tool_text, write_config
from tests.executor.scheduler_support import ENGINE_SERVER

RETRY = {"initial_interval_s": 0.01, "maximum_interval_s": 0.02, "maximum_attempts": 3}


def _config(tmp_path: Path) -> Path:
    engine = {"command": sys.executable, "args": [str(ENGINE_SERVER)]}
    return write_config(tmp_path, servers=(), extra_servers={"slow": engine, "flaky": engine})


def _plans(state: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Two plans: three sleeps then a step that fails once; and a step that always fails."""
    flaky_args = {"key": "once", "n": 1, "state_dir": str(state)}
    first = [
        {"id": "a", "server": "slow", "tool": "sleep", "arguments": {"ms": 50}},
        {"id": "b", "server": "slow", "tool": "sleep", "arguments": {"ms": 100}},
        {"id": "c", "server": "slow", "tool": "sleep", "arguments": {"ms": 300}},
        {
            "id": "f",
            "server": "flaky",
            "tool": "flaky",
            "arguments": flaky_args,
            "depends_on": ["c"],
            "retry": RETRY,
        },
    ]
    second = [
        {
            "id": "never",
            "server": "flaky",
            "tool": "flaky",
            "arguments": {**flaky_args, "key": "never", "n": 9},
            "retry": RETRY,
        }
    ]
    return first, second


@pytest.fixture
async def orch(tmp_path: Path) -> AsyncIterator[TaskOrchestrator]:
    config = load_config(_config(tmp_path))
    async with TaskOrchestrator(config, db_path=tmp_path / "t.db") as o:
        yield o


async def _run(client: Client, steps: list[dict[str, Any]]) -> dict[str, Any]:
    plan = structured(await client.call_tool("create_plan", {"query": "stats", "steps": steps}))
    structured(await client.call_tool("confirm_plan", {"plan_id": plan["plan_id"]}))
    return structured(await client.call_tool("execute_plan", {"plan_id": plan["plan_id"]}))


async def _read(client: Client, uri: str) -> str:
    result = await client.read_resource(uri)
    (content,) = result.contents
    assert isinstance(content, TextResourceContents)
    return content.text


@pytest.mark.anyio
async def test_get_stats_resources_and_plan_timing_report_what_the_plans_did(
    orch: TaskOrchestrator, tmp_path: Path
) -> None:
    first, second = _plans(tmp_path)
    async with Client(build_server(orch)) as client:
        done = await _run(client, first)
        assert done["status"] == "completed"
        assert (await _run(client, second))["status"] == "failed"

        stats = structured(await client.call_tool("get_stats", {}))
        slow_only = structured(await client.call_tool("get_stats", {"server": "slow"}))
        recent = structured(await client.call_tool("get_stats", {"since": "1d"}))
        short = structured(await client.call_tool("get_stats", {"limit": 1}))
        bad_since = await client.call_tool("get_stats", {"since": "last tuesday"})
        ghost = await client.call_tool("get_stats", {"server": "ghost"})
        no_rows = await client.call_tool("get_stats", {"limit": 0})
        tools_json = json.loads(await _read(client, "stats://tools"))
        servers_json = json.loads(await _read(client, "stats://servers"))
        chart = await _read(client, "stats://chart")
        plan = structured(await client.call_tool("get_plan", {"plan_id": done["plan_id"]}))
        timeline = await _read(client, f"plan://{done['plan_id']}/timeline")
        listed = {r.uri for r in (await client.list_resources()).resources}

    assert {"stats://tools", "stats://servers", "stats://chart"} <= listed

    tools = {(t["server"], t["tool"]): t for t in stats["tools"]}
    assert set(tools) == {("slow", "sleep"), ("flaky", "flaky")}
    sleeps, flakies = tools[("slow", "sleep")], tools[("flaky", "flaky")]
    assert (sleeps["calls"], sleeps["succeeded"], sleeps["failed"], sleeps["retries"]) == (
        3,
        3,
        0,
        0,
    )
    assert 0.1 <= sleeps["p50_s"] <= sleeps["p95_s"] == sleeps["max_s"]
    assert sleeps["max_s"] >= 0.3
    # f: 1 failure then a success; never: 3 failures.
    assert (flakies["calls"], flakies["succeeded"], flakies["failed"], flakies["retries"]) == (
        5,
        1,
        4,
        3,
    )
    assert flakies["failed_by_kind"] == {"tool_error": 4}
    assert flakies["last_failure"]["step_id"] == "never"
    assert "flaky failure 3 of 9" in flakies["last_failure"]["message"]
    assert flakies["last_failure"]["at"] is not None
    # Least reliable first.
    assert [t["tool"] for t in stats["tools"]] == ["flaky", "sleep"]
    servers = {s["server"]: s for s in stats["servers"]}
    assert [s["server"] for s in stats["servers"]] == ["flaky", "slow"]
    assert (servers["flaky"]["calls"], servers["flaky"]["failed"]) == (5, 4)
    assert (servers["slow"]["calls"], servers["slow"]["failed"]) == (3, 0)
    assert servers["slow"]["restarts"] == 0 and servers["slow"]["down_s"] == 0

    assert [t["tool"] for t in slow_only["tools"]] == ["sleep"]
    assert [s["server"] for s in slow_only["servers"]] == ["slow"]
    assert recent["since"] is not None and recent["tools"] == stats["tools"]
    assert len(short["tools"]) == 1 and short["tools_omitted"] == 1
    assert bad_since.is_error and "since must be a duration" in tool_text(bad_since)
    assert ghost.is_error and "no server named 'ghost'" in tool_text(ghost)
    assert no_rows.is_error and "limit" in tool_text(no_rows)

    # The resources say the same as the tool.
    assert tools_json["tools"] == stats["tools"] and tools_json["omitted"] == 0
    assert servers_json["servers"] == stats["servers"]
    assert chart.startswith("xychart-beta\n")
    # Slowest p95 first: the sleeps (300 ms at p95) before the flaky tool (no sleep at all).
    assert '"slow.sleep", "flaky.flaky"' in chart
    assert f"bar [{sleeps['p95_s']:.4f}".rstrip("0") in chart

    timing = plan["timing"]
    assert timing is not None
    assert (timing["steps_run"], timing["attempts"], timing["retries"]) == (4, 5, 1)
    path = [s["id"] for s in timing["critical_path"]]
    assert path == ["c", "f"]
    c, f = timing["critical_path"]
    assert c["running_s"] >= 0.3 and f["attempts"] == 2 and f["retry_s"] > 0
    assert f["ready_at"] == c["finished_at"]
    assert timing["critical_retry_s"] == pytest.approx(f["retry_s"], abs=1e-5)
    assert 0 < c["share"] + f["share"] <= 1

    assert "section critical path" in timeline
    assert "c sleep" in timeline and "f retries" in timeline
    assert "where the time went" in timeline


@pytest.mark.anyio
async def test_a_plan_that_never_ran_has_no_timing(orch: TaskOrchestrator) -> None:
    steps = [{"id": "a", "server": "slow", "tool": "sleep", "arguments": {"ms": 1}}]
    async with Client(build_server(orch)) as client:
        plan = structured(await client.call_tool("create_plan", {"query": "q", "steps": steps}))
        shown = structured(await client.call_tool("get_plan", {"plan_id": plan["plan_id"]}))
        chart = await _read(client, "stats://chart")
        stats = structured(await client.call_tool("get_stats", {}))
    assert shown["timing"] is None
    assert stats["tools"] == []
    # Planning started both servers (to check the steps against their tools): they
    # are known, up, and were never called.
    assert {(s["server"], s["calls"], s["restarts"], s["down_s"]) for s in stats["servers"]} == {
        ("slow", 0, 0, 0),
        ("flaky", 0, 0, 0),
    }
    assert "no successful calls yet" in chart


def _table_rows(text: str, first_cell: str) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if cells and cells[0] == first_cell:
            rows.append(cells)
    return rows


@pytest.mark.anyio
async def test_taskorch_stats_prints_the_figures_as_tables(tmp_path: Path) -> None:
    config_path = _config(tmp_path)
    db = tmp_path / "t.db"
    first, second = _plans(tmp_path)
    ids = []
    async with TaskOrchestrator(load_config(config_path), db_path=db) as orch:
        for steps in (first, second):
            plan = await orch.create_task_plan("stats", steps=steps)
            await orch.confirm_task_plan(plan.plan_id, plan_hash=plan.plan_hash)
            await orch.execute_task_plan(plan.plan_id)
            ids.append(plan.plan_id)
    common = ["--config", str(config_path), "--db", str(db)]
    env = clean_env()

    shown = run_cli("stats", *common, env=env)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    # tool, calls, ok, failed (by kind), retries, p50, p95, max, last failure
    (flaky_row,) = _table_rows(out, "flaky.flaky")
    assert flaky_row[1:5] == ["5", "1", "4 (tool_error 4)", "3"]
    assert "flaky failure 3 of 9" in flaky_row[8]
    (sleep_row,) = _table_rows(out, "slow.sleep")
    assert sleep_row[1:5] == ["3", "3", "0", "0"]
    # Least reliable first, in both tables.
    assert out.index("flaky.flaky") < out.index("slow.sleep")
    (flaky_server,) = _table_rows(out, "flaky")
    assert flaky_server[1:5] == ["5", "4", "80%", "0"]
    (slow_server,) = _table_rows(out, "slow")
    assert slow_server[1:6] == ["3", "0", "0%", "0", "0"]

    one = run_cli("stats", "--server", "slow", "--since", "1d", *common, env=env)
    assert one.returncode == 0, one.stderr
    assert _table_rows(one.stdout, "slow.sleep") and not _table_rows(one.stdout, "flaky.flaky")

    as_json = run_cli("stats", "--json", "--limit", "1", *common, env=env)
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert [t["tool"] for t in data["tools"]] == ["flaky"] and data["tools_omitted"] == 1

    timeline = run_cli("show", ids[0], "--timeline", *common, env=env)
    assert timeline.returncode == 0, timeline.stderr
    assert "section critical path" in timeline.stdout and "f retries" in timeline.stdout

    bad = run_cli("stats", "--since", "soon", *common, env=env)
    assert bad.returncode == 2
    assert "since must be a duration back from now" in bad.stderr


def test_resources_are_bounded_and_chart_labels_cannot_break_out() -> None:
    now = utc_now()
    tools = [
        ToolCallStats(
            server="s", tool=f't{i:02d}"] ; click', calls=1, succeeded=1, failed=0, p50_s=i, p95_s=i
        )
        for i in range(RESOURCE_ROWS + 7)
    ]
    stats = Stats(since=None, until=now, tools=tools, servers=[])
    body = json.loads(render_stats_json(stats, "tools"))
    assert len(body["tools"]) == RESOURCE_ROWS and body["omitted"] == 7
    # Within a budget, fewer rows (and the rest counted) until the answer fits.
    budget = 8_000
    view = stats_view(stats, limit=len(tools), budget_bytes=budget)
    assert 0 < len(view.tools) < len(tools)
    assert len(view.tools) + view.tools_omitted == len(tools)
    assert 2 * len(view.model_dump_json()) <= budget
    text = render_stats_json(stats, "tools", budget_bytes=budget)
    assert len(text.encode()) <= budget
    assert len(json.loads(text)["tools"]) + json.loads(text)["omitted"] == len(tools)
    chart = render_stats_chart(stats)
    axis = next(line for line in chart.splitlines() if "x-axis" in line)
    # Fifteen labels, slowest first, each quoted once: nothing inside can end one early.
    assert axis.count('"') == 2 * 15
    assert '"s.t56 click"' in axis and ";" not in axis and "]" not in axis[:-1]
