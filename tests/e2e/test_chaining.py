"""Chaining: taskorch A has taskorch B as a downstream server, and a plan in A drives B."""

from __future__ import annotations

from pathlib import Path

import pytest
from mcp import Client

from tests.e2e.support import (
    serve_params,
    structured,
    taskorch_server_entry,
    write_config,
)


@pytest.mark.anyio
async def test_a_plan_in_a_creates_confirms_and_runs_a_plan_in_b(tmp_path: Path) -> None:
    inner_dir = tmp_path / "b"
    inner_dir.mkdir()
    inner_config = write_config(inner_dir, servers=("text",))
    outer_dir = tmp_path / "a"
    outer_dir.mkdir()
    outer_config = write_config(
        outer_dir,
        servers=(),
        extra_servers={"inner": taskorch_server_entry(inner_config, inner_dir / "b.db")},
    )
    # B's own plan: its second step reads the first's output. `$$` keeps A from
    # resolving the reference itself: B receives the literal `${title.slug}`.
    inner_steps = [
        {"id": "title", "server": "text", "tool": "slugify", "arguments": {"text": "Chained Run"}},
        {
            "id": "count",
            "server": "text",
            "tool": "word_count",
            "arguments": {"text": "slug is $${title.slug}"},
        },
    ]
    outer_steps = [
        {
            "id": "make",
            "server": "inner",
            "tool": "create_plan",
            "arguments": {"query": "a plan made by another taskorch", "steps": inner_steps},
        },
        {
            "id": "approve",
            "server": "inner",
            "tool": "confirm_plan",
            "arguments": {"plan_id": "${make.plan_id}", "plan_hash": "${make.plan_hash}"},
        },
        {
            "id": "run",
            "server": "inner",
            "tool": "execute_plan",
            "arguments": {"plan_id": "${approve.plan_id}"},
        },
    ]
    async with Client(serve_params(outer_config, outer_dir / "a.db")) as client:
        catalog = structured(await client.call_tool("list_tools", {"server": "inner"}))
        assert {t["tool"] for t in catalog["tools"]} >= {"create_plan", "execute_plan"}
        plan = structured(
            await client.call_tool("create_plan", {"query": "drive B", "steps": outer_steps})
        )
        assert {s["id"]: s["depends_on"] for s in plan["steps"]} == {
            "make": [],
            "approve": ["make"],
            "run": ["approve"],
        }
        structured(
            await client.call_tool(
                "confirm_plan", {"plan_id": plan["plan_id"], "plan_hash": plan["plan_hash"]}
            )
        )
        messages: list[str] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            messages.append(message or "")

        report = structured(
            await client.call_tool(
                "execute_plan", {"plan_id": plan["plan_id"]}, progress_callback=on_progress
            )
        )
    assert report["status"] == "completed", report
    outputs = {s["id"]: s["output"] for s in report["steps"]}
    assert outputs["make"]["status"] == "awaiting_confirmation"
    assert outputs["approve"]["status"] == "confirmed"
    inner_report = outputs["run"]
    assert inner_report["status"] == "completed"
    inner_outputs = {s["id"]: s["output"] for s in inner_report["steps"]}
    assert inner_outputs["title"] == {"slug": "chained-run"}
    assert inner_outputs["count"]["words"] == 3  # "slug is chained-run"
    # B's own progress reached A's caller, forwarded through A.
    assert any(m.startswith("run (inner.execute_plan): count (text.word_count)") for m in messages)
