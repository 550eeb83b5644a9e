"""The whole flow through the MCP SDK's `Client`, over stdio, to `taskorch serve` as a child."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from tests.e2e.support import plan_steps, serve_params, structured, tool_text, write_config


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["auto", "legacy"], ids=["2026-07-28", "2025-11-25"])
async def test_create_confirm_execute_progress_and_resources(tmp_path: Path, mode: str) -> None:
    config = write_config(tmp_path)
    async with Client(serve_params(config, tmp_path / "t.db"), mode=mode) as client:
        assert client.protocol_version == ("2025-11-25" if mode == "legacy" else "2026-07-28")
        listed = await client.list_tools()
        names = {t.name for t in listed.tools}
        assert {"create_plan", "confirm_plan", "execute_plan", "get_progress"} <= names

        plan = structured(
            await client.call_tool(
                "create_plan", {"query": "analyse the release note", "steps": plan_steps()}
            )
        )
        assert plan["status"] == "awaiting_confirmation"
        assert plan["approved"] is False
        by_id = {s["id"]: s for s in plan["steps"]}
        # The fan-out: three analyses after one read; the references added the dependencies.
        assert {i for i, s in by_id.items() if s["depends_on"] == ["read"]} == {
            "count",
            "keywords",
            "summary",
        }

        # Executing before approval is refused and says what to do.
        early = await client.call_tool("execute_plan", {"plan_id": plan["plan_id"]})
        assert early.is_error
        assert "confirm" in tool_text(early)

        confirmed = structured(
            await client.call_tool(
                "confirm_plan", {"plan_id": plan["plan_id"], "plan_hash": plan["plan_hash"]}
            )
        )
        assert confirmed["status"] == "confirmed"

        notes: list[tuple[float, float | None, str | None]] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            notes.append((progress, total, message))

        report = structured(
            await client.call_tool(
                "execute_plan", {"plan_id": plan["plan_id"]}, progress_callback=on_progress
            )
        )
        assert report["status"] == "completed", report["message"]
        assert report["finished"] is True
        outputs = {s["id"]: s["output"] for s in report["steps"]}
        # Data flowed: the slug is built from the top keyword and the date of `today`.
        top = outputs["keywords"]["words"][0]
        assert outputs["slug"]["slug"] == f"digest-{top}-{outputs['today']['date']}"
        assert outputs["per_sentence"]["value"] == round(
            outputs["count"]["words"] / outputs["count"]["sentences"], 1
        )
        assert outputs["save"]["key"] == outputs["slug"]["slug"]

        # Progress: increasing, out of the step count, with the downstream's own progress.
        values = [p for p, _, _ in notes]
        assert values == sorted(values) and len(set(values)) == len(values)
        assert all(t == len(plan["steps"]) for _, t, _ in notes)
        assert values[-1] == pytest.approx(len(plan["steps"]))
        messages = [m or "" for _, _, m in notes]
        assert any("tally (stats.running_total): added 2 of 4" in m for m in messages)
        assert any(m.endswith("save (notes.put): succeeded") for m in messages)

        progress = structured(await client.call_tool("get_progress", {"plan_id": plan["plan_id"]}))
        assert progress["percent"] == 100.0
        assert progress["completed"] == progress["total"] == len(plan["steps"])
        assert progress["eta_s"] == 0.0

        doc = await client.read_resource(f"plan://{plan['plan_id']}")
        assert json.loads(doc.contents[0].text)["status"] == "completed"  # type: ignore[union-attr]
        graph = await client.read_resource(f"plan://{plan['plan_id']}/graph")
        graph_text = graph.contents[0].text  # type: ignore[union-attr]
        assert graph_text.startswith("flowchart TD")
        assert f"class {','.join(f's{i}' for i in range(len(plan['steps'])))} succeeded" in (
            graph_text
        )
        timeline = await client.read_resource(f"plan://{plan['plan_id']}/timeline")
        timeline_text = timeline.contents[0].text  # type: ignore[union-attr]
        assert timeline_text.startswith("gantt")
        assert "    section notes" in timeline_text
        assert ":done, t9, " in timeline_text

        templates = await client.list_resource_templates()
        assert {t.uri_template for t in templates.resource_templates} == {
            "plan://{plan_id}",
            "plan://{plan_id}/graph",
            "plan://{plan_id}/timeline",
            "plan://{plan_id}/steps/{step_id}/output",
            "plan://{plan_id}/steps/{step_id}/output/{path}",
            "plan://{plan_id}/steps/{step_id}/content/{index}",
        }
        with pytest.raises(MCPError):
            await client.read_resource("plan://no-such-plan")

        plans = structured(await client.call_tool("list_plans", {}))
        assert [p["plan_id"] for p in plans["plans"]] == [plan["plan_id"]]
        assert plans["plans"][0]["status"] == "completed"


@pytest.mark.anyio
async def test_execute_without_waiting_then_follow_with_get_progress(tmp_path: Path) -> None:
    config = write_config(tmp_path, servers=("stats",))
    steps = [
        {
            "id": "slow",
            "server": "stats",
            "tool": "running_total",
            "arguments": {"values": [1, 2, 3, 4, 5, 6, 7, 8], "delay_s": 0.05},
        },
        {
            "id": "half",
            "server": "stats",
            "tool": "evaluate",
            "arguments": {"expression": "${slow.total} / 2"},
        },
    ]
    async with Client(serve_params(config, tmp_path / "t.db")) as client:
        plan = structured(await client.call_tool("create_plan", {"query": "sum", "steps": steps}))
        structured(await client.call_tool("confirm_plan", {"plan_id": plan["plan_id"]}))
        started = structured(
            await client.call_tool("execute_plan", {"plan_id": plan["plan_id"], "wait": False})
        )
        assert started["status"] == "executing"
        assert started["finished"] is False
        assert "get_progress" in started["message"]
        seen = set()
        for _ in range(400):
            progress = structured(
                await client.call_tool("get_progress", {"plan_id": plan["plan_id"]})
            )
            seen.add(progress["status"])
            if progress["status"] == "completed":
                break
            await anyio.sleep(0.05)
        assert progress["status"] == "completed"
        final = structured(await client.call_tool("get_plan", {"plan_id": plan["plan_id"]}))
        assert {s["id"]: s["output"] for s in final["steps"]}["half"]["value"] == 18.0
