"""The MCP face in process: tool shapes, errors, approval by elicitation, host planning."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, Literal

import anyio
import pytest
from mcp import Client
from mcp.client.session import ClientRequestContext
from mcp_types import (
    CreateMessageRequestParams,
    CreateMessageResult,
    ElicitRequestParams,
    ElicitResult,
    ErrorData,
    TextContent,
)

from server.mcp import TaskorchServer
from tests.e2e.support import structured, tool_text

Mode = Literal["legacy", "auto"]
MODES: list[Mode] = ["legacy", "auto"]  # 2025-11-25 and 2026-07-28

READ_ONLY_STEPS = [
    {"id": "count", "server": "text", "tool": "word_count", "arguments": {"text": "a b c. d e."}},
    {"id": "slug", "server": "text", "tool": "slugify", "arguments": {"text": "${count.words} w"}},
]
WRITE_STEPS = [
    {"id": "put", "server": "notes", "tool": "put", "arguments": {"key": "k", "text": "v"}},
    {"id": "get", "server": "notes", "tool": "get", "arguments": {"key": "${put.key}"}},
]


async def _create(client: Client, steps: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return structured(
        await client.call_tool("create_plan", {"query": "test plan", "steps": steps, **extra})
    )


@pytest.mark.anyio
async def test_tools_have_descriptions_annotations_and_output_schemas(
    server: TaskorchServer,
) -> None:
    async with Client(server) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == {
        "create_plan",
        "confirm_plan",
        "execute_plan",
        "get_progress",
        "cancel_execution",
        "get_plan",
        "get_step_output",
        "list_plans",
        "list_tools",
        "list_agents",
        "add_agent",
        "get_stats",
    }
    for tool in tools.values():
        assert tool.description and len(tool.description) > 40, tool.name
        assert tool.title, tool.name
        assert tool.output_schema is not None and tool.output_schema["type"] == "object"
        hints = tool.annotations
        assert hints is not None
        assert None not in (
            hints.read_only_hint,
            hints.destructive_hint,
            hints.idempotent_hint,
            hints.open_world_hint,
        ), tool.name
    params = {name: set(t.input_schema["properties"]) for name, t in tools.items()}
    assert {"query", "steps", "agent", "session_id"} <= params["create_plan"]
    assert params["confirm_plan"] == {"plan_id", "approve", "plan_hash", "reason"}
    assert params["execute_plan"] == {"plan_id", "wait", "on_interrupted"}
    assert params["get_progress"] == {"plan_id"}
    assert tools["create_plan"].input_schema["required"] == ["query"]
    # Resolver-filled parameters are not arguments a caller could forge.
    assert "planned" not in params["create_plan"]
    assert "approval" not in params["execute_plan"]
    assert tools["get_plan"].annotations.read_only_hint is True  # type: ignore[union-attr]
    assert tools["execute_plan"].annotations.destructive_hint is True  # type: ignore[union-attr]
    progress_props = set(tools["get_progress"].output_schema["properties"])  # type: ignore[index]
    assert {"plan_id", "status", "total", "completed", "failed", "running", "percent"} <= (
        progress_props
    )
    assert {"elapsed_s", "eta_s"} <= progress_props


@pytest.mark.anyio
async def test_bad_input_is_a_tool_error_that_says_what_to_fix(server: TaskorchServer) -> None:
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("get_plan", {"plan_id": "nope"}, "no plan with id 'nope'"),
        ("get_progress", {"plan_id": "nope"}, "no plan with id 'nope'"),
        ("create_plan", {"query": "   ", "steps": READ_ONLY_STEPS}, "query is empty"),
        (
            "create_plan",
            {
                "query": "q",
                "steps": [
                    {"id": "a", "server": "text", "tool": "slugify", "arguments": {"text": "${b}"}},
                    {"id": "b", "server": "text", "tool": "slugify", "arguments": {"text": "${a}"}},
                ],
            },
            "cycle",
        ),
        (
            "create_plan",
            {"query": "q", "steps": [{"id": "a", "server": "text", "tool": "slugfy"}]},
            "slugify",
        ),
        ("create_plan", {"query": "q"}, "pass `steps`"),
        ("create_plan", {"query": "q", "steps": READ_ONLY_STEPS, "agent": "ghost"}, "no agent"),
        ("add_agent", {"name": "bad name!"}, "agent is not valid"),
        ("list_plans", {"status": ["sleeping"]}, "status"),
        ("execute_plan", {"plan_id": "nope"}, "no plan with id 'nope'"),
        ("cancel_execution", {"plan_id": "nope"}, "no plan with id 'nope'"),
        ("confirm_plan", {"plan_id": 5}, "plan_id"),
        ("list_tools", {"server": "ghost"}, "no server named 'ghost'"),
    ]
    async with Client(server) as client:
        for name, args, expected in cases:
            result = await client.call_tool(name, args)
            assert result.is_error, (name, args)
            assert expected in tool_text(result), (name, tool_text(result))
        plan = await _create(client, READ_ONLY_STEPS)
        wrong = await client.call_tool(
            "confirm_plan", {"plan_id": plan["plan_id"], "plan_hash": "v1:0000"}
        )
        assert wrong.is_error
        assert plan["plan_hash"] in tool_text(wrong)
        assert "changed" in tool_text(wrong)
        # And the server keeps serving.
        assert structured(await client.call_tool("list_plans", {}))["count"] == 1


def _approver(
    action: Literal["accept", "decline", "cancel"], approve: bool = True
) -> tuple[list[str], Any]:
    asked: list[str] = []

    async def elicit(
        context: ClientRequestContext, params: ElicitRequestParams
    ) -> ElicitResult | ErrorData:
        asked.append(params.message)
        if action == "accept":
            return ElicitResult(action="accept", content={"approve": approve, "reason": "ok"})
        return ElicitResult(action=action)

    return asked, elicit


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_execute_asks_the_user_through_elicitation(
    server: TaskorchServer, mode: Mode
) -> None:
    asked, elicit = _approver("accept")
    async with Client(server, mode=mode, elicitation_callback=elicit) as client:
        plan = await _create(client, WRITE_STEPS)
        assert plan["status"] == "awaiting_confirmation"
        report = structured(await client.call_tool("execute_plan", {"plan_id": plan["plan_id"]}))
        assert report["status"] == "completed"
        assert len(asked) == 1
        assert plan["plan_hash"] in asked[0]
        assert "notes.put" in asked[0]
        # An approved plan is not asked about again.
        again = structured(await client.call_tool("get_plan", {"plan_id": plan["plan_id"]}))
        assert again["approved"] is True
    events = await server.orchestrator.store.get_events(plan["plan_id"])
    confirmed = [e for e in events if e.kind.value == "plan_confirmed"]
    assert confirmed and confirmed[0].data["plan_hash"] == plan["plan_hash"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("action", "approve"), [("decline", True), ("accept", False)], ids=["decline", "say-no"]
)
async def test_refusing_in_the_dialog_rejects_the_plan(
    server: TaskorchServer, action: Literal["accept", "decline"], approve: bool
) -> None:
    _, elicit = _approver(action, approve)
    async with Client(server, elicitation_callback=elicit) as client:
        plan = await _create(client, WRITE_STEPS)
        report = structured(await client.call_tool("execute_plan", {"plan_id": plan["plan_id"]}))
        assert report["status"] == "rejected"
        assert report["finished"] is True
        assert all(s["status"] == "pending" for s in report["steps"])


@pytest.mark.anyio
async def test_dismissing_the_dialog_leaves_the_plan_awaiting(server: TaskorchServer) -> None:
    _, elicit = _approver("cancel")
    async with Client(server, elicitation_callback=elicit) as client:
        plan = await _create(client, WRITE_STEPS)
        result = await client.call_tool("execute_plan", {"plan_id": plan["plan_id"]})
        assert result.is_error
        assert "confirm_plan" in tool_text(result)
        view = structured(await client.call_tool("get_plan", {"plan_id": plan["plan_id"]}))
        assert view["status"] == "awaiting_confirmation"


@pytest.mark.anyio
async def test_without_elicitation_confirm_plan_is_the_way(server: TaskorchServer) -> None:
    async with Client(server) as client:
        plan = await _create(client, WRITE_STEPS)
        refused = await client.call_tool("execute_plan", {"plan_id": plan["plan_id"]})
        assert refused.is_error
        assert "confirm it before executing" in tool_text(refused)
        structured(
            await client.call_tool(
                "confirm_plan", {"plan_id": plan["plan_id"], "plan_hash": plan["plan_hash"]}
            )
        )
        report = structured(await client.call_tool("execute_plan", {"plan_id": plan["plan_id"]}))
        assert report["status"] == "completed"
        outputs = {s["id"]: s["output"] for s in report["steps"]}
        assert outputs["get"] == {"key": "k", "found": True, "text": "v"}
        # Confirming twice is harmless; rejecting afterwards is refused with a reason.
        again = await client.call_tool("confirm_plan", {"plan_id": plan["plan_id"]})
        assert not again.is_error
        late = await client.call_tool(
            "confirm_plan", {"plan_id": plan["plan_id"], "approve": False}
        )
        assert late.is_error
        assert "completed" in tool_text(late)


@pytest.mark.anyio
async def test_read_only_agent_auto_approves_only_read_only_plans(
    server: TaskorchServer,
) -> None:
    async with Client(server) as client:
        agent = structured(
            await client.call_tool(
                "add_agent",
                {"name": "reader", "auto_approve": "read_only", "deny": ["notes.delete"]},
            )
        )
        assert agent["auto_approve"] == "read_only"
        reading = await _create(client, READ_ONLY_STEPS, agent="reader")
        assert reading["status"] == "confirmed"
        assert reading["approved"] is True
        writing = await _create(client, WRITE_STEPS, agent="reader")
        assert writing["status"] == "awaiting_confirmation"
        denied = await client.call_tool(
            "create_plan",
            {
                "query": "q",
                "agent": "reader",
                "steps": [
                    {"id": "d", "server": "notes", "tool": "delete", "arguments": {"key": "k"}}
                ],
            },
        )
        assert denied.is_error
        assert "notes.delete" in tool_text(denied) or "not allowed" in tool_text(denied)
        agents = structured(await client.call_tool("list_agents", {}))
        assert [a["name"] for a in agents["agents"]] == ["reader"]


def _sampler(answers: list[dict[str, Any]]) -> tuple[list[CreateMessageRequestParams], Any]:
    seen: list[CreateMessageRequestParams] = []

    async def sample(
        context: ClientRequestContext, params: CreateMessageRequestParams
    ) -> CreateMessageResult:
        seen.append(params)
        answer = answers[min(len(seen), len(answers)) - 1]
        return CreateMessageResult(
            role="assistant",
            content=TextContent(type="text", text=json.dumps(answer)),
            model="fake-host-model",
        )

    return seen, sample


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_host_model_plans_when_no_steps_and_no_model(
    server: TaskorchServer, mode: Mode, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TASKORCH_MODEL", raising=False)
    bad = {
        "strategy": "guess",
        "steps": [{"id": "s", "server": "text", "tool": "word_cnt", "arguments": {"text": "x"}}],
    }
    good = {"strategy": "count then slug", "steps": READ_ONLY_STEPS}
    seen, sample = _sampler([bad, good])
    async with Client(server, mode=mode, sampling_callback=sample) as client:
        plan = structured(
            await client.call_tool("create_plan", {"query": "count the words, make a slug"})
        )
    assert plan["strategy"] == "count then slug"
    assert [s["id"] for s in plan["steps"]] == ["count", "slug"]
    assert plan["status"] == "awaiting_confirmation"
    # The first answer named a tool that does not exist: the repair round said so.
    assert len(seen) == 2
    repair_prompt = json.dumps([m.model_dump(mode="json") for m in seen[1].messages])
    assert "word_cnt" in repair_prompt
    # Read as the file holds them: the planning-model calls are kept for accounting.
    assert isinstance(server.orchestrator.db_path, Path)
    with sqlite3.connect(server.orchestrator.db_path) as conn:
        rows = conn.execute(
            "SELECT attempt, errors FROM planner_attempts WHERE plan_id = ? ORDER BY id",
            (plan["plan_id"],),
        ).fetchall()
    assert [attempt for attempt, _ in rows] == [1, 2]
    assert json.loads(rows[0][1]) and not json.loads(rows[1][1])


@pytest.mark.anyio
async def test_cancel_execution_stops_a_running_plan(server: TaskorchServer) -> None:
    slow = [
        {
            "id": "slow",
            "server": "stats",
            "tool": "running_total",
            "arguments": {"values": list(range(40)), "delay_s": 0.25},
        },
        {
            "id": "after",
            "server": "stats",
            "tool": "evaluate",
            "arguments": {"expression": "${slow.total} + 1"},
        },
    ]
    async with Client(server) as client:
        plan = await _create(client, slow)
        structured(await client.call_tool("confirm_plan", {"plan_id": plan["plan_id"]}))
        started = structured(
            await client.call_tool("execute_plan", {"plan_id": plan["plan_id"], "wait": False})
        )
        assert started["status"] == "executing"
        for _ in range(200):
            progress = structured(
                await client.call_tool("get_progress", {"plan_id": plan["plan_id"]})
            )
            if progress["running"]:
                break
            await anyio.sleep(0.02)
        assert progress["running_steps"] == ["slow"]
        cancelled = structured(
            await client.call_tool("cancel_execution", {"plan_id": plan["plan_id"]})
        )
        assert cancelled["status"] == "cancelled"
        assert {s["id"]: s["status"] for s in cancelled["steps"]} == {
            "slow": "cancelled",
            "after": "cancelled",
        }
        # Cancelling again changes nothing.
        again = structured(await client.call_tool("cancel_execution", {"plan_id": plan["plan_id"]}))
        assert again["status"] == "cancelled"


@pytest.mark.anyio
async def test_running_a_failed_plan_again_reruns_only_what_failed(
    server: TaskorchServer,
) -> None:
    steps = [
        {"id": "ok", "server": "text", "tool": "word_count", "arguments": {"text": "a b"}},
        {
            "id": "bad",
            "server": "stats",
            "tool": "evaluate",
            "arguments": {"expression": "1/0"},
            "retry": {"maximum_attempts": 1},
            "on_error": "continue",
        },
    ]
    async with Client(server) as client:
        plan = await _create(client, steps)
        structured(await client.call_tool("confirm_plan", {"plan_id": plan["plan_id"]}))
        first = structured(await client.call_tool("execute_plan", {"plan_id": plan["plan_id"]}))
        assert first["status"] == "failed"
        by_id = {s["id"]: s for s in first["steps"]}
        assert by_id["bad"]["error"]["kind"] == "tool_error"
        assert "division by zero" in by_id["bad"]["error"]["message"]
        assert "re-runs only what failed" in first["message"]
        second = structured(await client.call_tool("execute_plan", {"plan_id": plan["plan_id"]}))
        attempts = {s["id"]: s["attempts"] for s in second["steps"]}
        assert attempts == {"ok": 1, "bad": 2}


@pytest.mark.anyio
async def test_revise_makes_a_new_version_that_needs_its_own_approval(
    server: TaskorchServer,
) -> None:
    async with Client(server) as client:
        first = await _create(client, READ_ONLY_STEPS)
        structured(
            await client.call_tool(
                "confirm_plan", {"plan_id": first["plan_id"], "approve": False, "reason": "no"}
            )
        )
        revised = await _create(client, READ_ONLY_STEPS[:1], revise=first["plan_id"])
        assert revised["plan_id"] == first["plan_id"]
        assert revised["version"] == 2
        assert revised["status"] == "awaiting_confirmation"
        assert revised["plan_hash"] != first["plan_hash"]
        # The old hash does not approve the new content.
        stale = await client.call_tool(
            "confirm_plan", {"plan_id": first["plan_id"], "plan_hash": first["plan_hash"]}
        )
        assert stale.is_error
        old = structured(
            await client.call_tool("get_plan", {"plan_id": first["plan_id"], "version": 1})
        )
        assert old["status"] == "rejected"


@pytest.mark.anyio
async def test_list_tools_shows_every_downstream_tool_with_its_hints(
    server: TaskorchServer,
) -> None:
    async with Client(server) as client:
        listed = structured(await client.call_tool("list_tools", {}))
        only_notes = structured(await client.call_tool("list_tools", {"server": "notes"}))
    tools = {(t["server"], t["tool"]): t for t in listed["tools"]}
    assert ("text", "summarize") in tools
    assert ("stats", "running_total") in tools
    assert tools[("text", "slugify")]["read_only"] is True
    assert tools[("notes", "put")]["read_only"] is False
    assert tools[("notes", "put")]["idempotent"] is True
    assert tools[("notes", "append")]["idempotent"] is False
    assert tools[("text", "keywords")]["output_schema"]["properties"]["words"]["type"] == "array"
    assert listed["servers_down"] == []
    assert {t["server"] for t in only_notes["tools"]} == {"notes"}


@pytest.mark.anyio
async def test_approval_in_the_dialog_binds_to_the_content_shown(server: TaskorchServer) -> None:
    orch = server.orchestrator
    revised: list[str] = []

    async def elicit(
        context: ClientRequestContext, params: ElicitRequestParams
    ) -> ElicitResult | ErrorData:
        # While the user looks at the question, the plan gets a new version.
        plan_id = params.message.split("plan ", 1)[1].split()[0]
        newer = await orch.create_task_plan("changed", steps=WRITE_STEPS[:1], revise=plan_id)
        revised.append(newer.plan_hash)
        return ElicitResult(action="accept", content={"approve": True})

    async with Client(server, mode="legacy", elicitation_callback=elicit) as client:
        plan = await _create(client, WRITE_STEPS)
        result = await client.call_tool("execute_plan", {"plan_id": plan["plan_id"]})
        assert result.is_error
        assert "changed since it was reviewed" in tool_text(result)
        latest = structured(await client.call_tool("get_plan", {"plan_id": plan["plan_id"]}))
    # The answer approved what was shown, so the unseen version stays unapproved.
    assert latest["version"] == 2
    assert latest["plan_hash"] == revised[0]
    assert latest["status"] == "awaiting_confirmation"
