"""Approval survives a restart: the input-required round's requestState outlives the process.

On 2026-07-28 `execute_plan` on an unapproved plan answers with an
`InputRequiredResult` (the approval question) and an opaque, sealed
`requestState`. The host answers with another `tools/call`. When taskorch
restarted in between, main refused the answer ("Invalid or expired
requestState"): the sealing key lived only in the process. It is kept in the
store now.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import ElicitRequestParams, ElicitResult, InputRequiredResult

from tests.e2e.support import http_server, structured, write_config

pytestmark = pytest.mark.anyio


async def _never(context: Any, params: ElicitRequestParams) -> ElicitResult:
    raise AssertionError("the question is answered by hand in this test")


async def test_an_approval_answered_after_a_restart_is_taken(tmp_path: Path) -> None:
    config = write_config(tmp_path, servers=("text",))
    db = tmp_path / "t.db"
    steps = [{"id": "a", "server": "text", "tool": "slugify", "arguments": {"text": "Hi There"}}]
    with http_server(config, db) as url:
        async with Client(streamable_http_client(url), elicitation_callback=_never) as client:
            plan = structured(await client.call_tool("create_plan", {"query": "s", "steps": steps}))
            asked = await client.session.call_tool(
                "execute_plan", {"plan_id": plan["plan_id"]}, allow_input_required=True
            )
    assert isinstance(asked, InputRequiredResult), asked
    assert asked.request_state is not None
    assert asked.input_requests is not None
    [key] = asked.input_requests
    answer = {key: ElicitResult(action="accept", content={"approve": True, "reason": "ok"})}
    with http_server(config, db) as url:
        async with Client(streamable_http_client(url), elicitation_callback=_never) as client:
            result = await client.session.call_tool(
                "execute_plan",
                {"plan_id": plan["plan_id"]},
                input_responses=answer,  # type: ignore[arg-type]
                request_state=asked.request_state,
                allow_input_required=True,
            )
    assert not isinstance(result, InputRequiredResult)
    report = structured(result)
    assert report["status"] == "completed", report
    assert report["steps"][0]["output"] == {"slug": "hi-there"}
