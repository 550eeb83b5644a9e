"""Agent policies and limits, driven as a host would: over MCP, against real servers.

What was approved is what runs: the agent's effective policy and limits are
part of the plan hash and are the ones the run uses; a policy tightened after
approval, or a server's `denied_tools`, still stops the call before it is
made; the operator's config agents cannot be replaced from the MCP face; deny
globs ignore case; and there is one default step limit.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from server.config import load_config
from server.mcp import build_server
from server.service import TaskOrchestrator
from tests.e2e.support import structured, tool_text, write_config
from tests.fixtures.launch import MCP_FIXTURE

PUT_THEN_DELETE = [
    {"id": "put", "server": "notes", "tool": "put", "arguments": {"key": "diary", "text": "x"}},
    {"id": "wipe", "server": "notes", "tool": "delete", "arguments": {"key": "${put.key}"}},
]
FAST_RETRY = {"initial_interval_s": 0.01, "maximum_interval_s": 0.01, "jitter": 0}


def _fixture(*extra: str) -> dict[str, Any]:
    return {"command": sys.executable, "args": [str(MCP_FIXTURE), "--name", "alpha", *extra]}


def _delete_all(marker: Path) -> dict[str, Any]:
    arguments = {"marker": str(marker)}
    return {"id": "d", "server": "alpha", "tool": "Delete_all", "arguments": arguments}


@asynccontextmanager
async def _client(tmp_path: Path, **config: Any) -> AsyncIterator[Client]:
    path = write_config(tmp_path, **config)
    async with (
        TaskOrchestrator(load_config(path), db_path=tmp_path / "t.db") as orch,
        Client(build_server(orch)) as client,
    ):
        yield client


async def _call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    return structured(await client.call_tool(tool, arguments))


async def _error(client: Client, tool: str, **arguments: Any) -> str:
    result = await client.call_tool(tool, arguments)
    assert result.is_error, result.structured_content
    return tool_text(result)


async def _approved(client: Client, **create: Any) -> dict[str, Any]:
    plan = await _call(client, "create_plan", **create)
    confirmed = await _call(
        client, "confirm_plan", plan_id=plan["plan_id"], plan_hash=plan["plan_hash"]
    )
    assert confirmed["approved"] is True
    return plan


@pytest.mark.anyio
async def test_a_policy_tightened_after_approval_stops_the_call(tmp_path: Path) -> None:
    # On main the agent was read again at run time but its policy never checked:
    # `wipe` ran and the note was gone.
    async with _client(tmp_path, servers=("notes",)) as client:
        await _call(client, "add_agent", name="ops")
        plan = await _approved(client, query="save, delete", agent="ops", steps=PUT_THEN_DELETE)
        await _call(client, "add_agent", name="ops", deny=["notes.delete"])
        report = await _call(client, "execute_plan", plan_id=plan["plan_id"])
    steps = {s["id"]: s for s in report["steps"]}
    assert report["status"] == "failed"
    assert steps["put"]["status"] == "succeeded"
    assert steps["wipe"]["status"] == "failed"
    assert steps["wipe"]["error"]["kind"] == "authorization"
    assert "'notes.delete'" in steps["wipe"]["error"]["message"]
    assert "agent 'ops'" in steps["wipe"]["error"]["message"]
    assert (tmp_path / "notes" / "diary.note").read_text(encoding="utf-8") == "x"


@pytest.mark.anyio
async def test_add_agent_cannot_replace_or_shadow_a_config_agent(tmp_path: Path) -> None:
    # On main add_agent replaced the operator's agent and lifted its deny.
    agents = {"ops": {"tool_policy": {"deny": ["notes.delete"]}}}
    async with _client(tmp_path, servers=("notes",), agents=agents) as client:
        for name in ("ops", "OPS"):
            message = await _error(client, "add_agent", name=name)
            assert "'ops' is defined in the config file" in message
            assert str(tmp_path / "config.json") in message
        refused = await _error(
            client, "create_plan", query="delete", agent="ops", steps=PUT_THEN_DELETE
        )
        assert "not allowed" in refused
        listed = await _call(client, "list_agents")
    assert [a["name"] for a in listed["agents"]] == ["ops"]
    assert listed["agents"][0]["tool_policy"]["deny"] == ["notes.delete"]


@pytest.mark.anyio
async def test_deny_globs_ignore_case(tmp_path: Path) -> None:
    # On main `delete_*` did not match `Delete_all`: both plans were accepted.
    marker = tmp_path / "deleted"
    step = _delete_all(marker)
    servers = {"alpha": {**_fixture(), "denied_tools": ["delete_*"]}, "beta": _fixture()}
    agents = {"ops": {"tool_policy": {"deny": ["beta.delete_*"]}}}
    async with _client(tmp_path, servers=(), extra_servers=servers, agents=agents) as client:
        listed = await _call(client, "list_tools")
        names = {(t["server"], t["tool"]) for t in listed["tools"]}
        assert ("alpha", "Delete_all") not in names
        assert ("beta", "Delete_all") in names
        hidden = await _error(client, "create_plan", query="wipe", steps=[step])
        assert "Delete_all" in hidden
        on_beta = {**step, "server": "beta"}
        denied = await _error(client, "create_plan", query="wipe", agent="ops", steps=[on_beta])
        assert "denied by the pattern 'beta.delete_*'" in denied
    assert not marker.exists()


@pytest.mark.anyio
async def test_a_server_denial_is_checked_before_the_call(tmp_path: Path) -> None:
    # Approved while the server allowed the tool; the operator then denies it. On main
    # the pool's filter was case-sensitive and the tool ran.
    marker = tmp_path / "deleted"
    step = _delete_all(marker)
    async with _client(tmp_path, servers=(), extra_servers={"alpha": _fixture()}) as client:
        plan = await _approved(client, query="wipe", steps=[step])
    denied = {"alpha": {**_fixture(), "denied_tools": ["delete_*"]}}
    async with _client(tmp_path, servers=(), extra_servers=denied) as client:
        report = await _call(client, "execute_plan", plan_id=plan["plan_id"])
    (only,) = report["steps"]
    assert only["status"] == "failed"
    assert only["error"]["kind"] == "authorization"
    assert "denied_tools" in only["error"]["message"]
    assert not marker.exists()


@pytest.mark.anyio
async def test_approval_covers_the_agents_policy_and_the_run_uses_it(tmp_path: Path) -> None:
    # On main plan_hash covered the agent's name only: the same steps under a changed
    # agent had the same hash, and the run used the changed retry policy (3 attempts).
    steps = [{"id": "e", "server": "stats", "tool": "evaluate", "arguments": {"expression": "1/0"}}]
    async with _client(tmp_path, servers=("stats",)) as client:
        await _call(client, "add_agent", name="ops", retry={**FAST_RETRY, "maximum_attempts": 1})
        first = await _approved(client, query="divide", agent="ops", steps=steps)
        await _call(client, "add_agent", name="ops", retry={**FAST_RETRY, "maximum_attempts": 3})
        second = await _call(client, "create_plan", query="divide", agent="ops", steps=steps)
        assert first["plan_hash"] != second["plan_hash"]
        report = await _call(client, "execute_plan", plan_id=first["plan_id"])
    (only,) = report["steps"]
    assert only["status"] == "failed"
    assert only["error"]["kind"] == "tool_error"
    assert only["attempts"] == 1


def _many(n: int) -> list[dict[str, Any]]:
    return [
        {"id": f"s{i}", "server": "text", "tool": "slugify", "arguments": {"text": f"t {i}"}}
        for i in range(n)
    ]


@pytest.mark.anyio
async def test_one_default_step_limit(tmp_path: Path) -> None:
    # On main the built-in default agent allowed 50 steps while the config said 200.
    async with _client(tmp_path, servers=("text",)) as client:
        plan = await _call(client, "create_plan", query="sixty", steps=_many(60))
        assert plan["status"] == "awaiting_confirmation"
        await _call(client, "add_agent", name="plain")
        named = await _call(client, "create_plan", query="sixty", agent="plain", steps=_many(60))
        assert named["status"] == "awaiting_confirmation"
        too_many = await _error(client, "create_plan", query="many", steps=_many(201))
        assert "201 steps but at most 200 are allowed" in too_many
    # A config that lowers the limit lowers it for the default agent too.
    low = tmp_path / "low"
    low.mkdir()
    async with _client(low, servers=("text",), limits={"max_steps": 30}) as client:
        too_many = await _error(client, "create_plan", query="many", steps=_many(31))
        assert "31 steps but at most 30 are allowed" in too_many
