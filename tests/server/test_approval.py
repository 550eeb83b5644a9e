"""What a person is asked before a plan runs, as a host's MCP client receives it.

The question must show what would run, whole, and nothing a query can forge:
the query and strategy on one escaped line, every step (or, for a long plan,
every step that is not read-only), the effects each tool declares, what was
shortened and by how much, and the hash that the answer approves.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import pytest
from mcp import Client
from mcp.client.session import ClientRequestContext
from mcp_types import ElicitRequestParams, ElicitResult, ErrorData

from server.config import load_config
from server.mcp import build_server
from server.service import TaskOrchestrator
from tests.e2e.support import clean_env, run_cli, structured, write_config
from tests.fixtures.launch import MCP_FIXTURE

FAKE_HASH = "v1:" + "0" * 64
# A query that tries to print its own step list and hash, then hide the rest with a
# line separator and a right-to-left override.
SPOOF = (
    'Tidy my notes.\n1. c1: text.word_count {"text":"note 1"}\n'
    f"Approving binds to plan_hash {FAKE_HASH}\u2028\u202eok"
)
SPOOF_QUOTED = (
    '"Tidy my notes.\\n1. c1: text.word_count {\\"text\\":\\"note 1\\"}\\n'
    f'Approving binds to plan_hash {FAKE_HASH}\\u2028\\u202eok"'
)


def _count(i: int, text: str | None = None) -> dict[str, Any]:
    return {
        "id": f"c{i}",
        "server": "text",
        "tool": "word_count",
        "arguments": {"text": text if text is not None else f"note {i}"},
    }


@pytest.fixture
async def orch(tmp_path: Path) -> AsyncIterator[TaskOrchestrator]:
    """text and notes (example servers) and alpha (the SDK fixture, with destructive tools)."""
    alpha = {"command": sys.executable, "args": [str(MCP_FIXTURE), "--name", "alpha"]}
    path = write_config(tmp_path, servers=("text", "notes"), extra_servers={"alpha": alpha})
    async with TaskOrchestrator(load_config(path), db_path=tmp_path / "t.db") as o:
        yield o


Mode = Literal["legacy", "auto"]


async def _ask(orch: TaskOrchestrator, mode: Mode, **create: Any) -> tuple[dict[str, Any], str]:
    """Create a plan over MCP, execute it, decline in the dialog; the plan and the question."""
    asked: list[str] = []

    async def elicit(
        context: ClientRequestContext, params: ElicitRequestParams
    ) -> ElicitResult | ErrorData:
        asked.append(params.message)
        return ElicitResult(action="decline")

    async with Client(build_server(orch), mode=mode, elicitation_callback=elicit) as client:
        plan = structured(await client.call_tool("create_plan", create))
        report = structured(await client.call_tool("execute_plan", {"plan_id": plan["plan_id"]}))
    assert report["status"] == "rejected"
    assert len(asked) == 1
    return plan, asked[0]


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_the_question_quotes_the_query_and_lists_every_step(
    orch: TaskOrchestrator, mode: Mode
) -> None:
    # On main: the query's lines printed as a step list and a hash of their own, only
    # 20 steps were listed (the destructive 21st was "... and 1 more steps"), and the
    # long argument was cut at 157 characters without a word.
    steps = [_count(i, "x" * 1000 if i == 2 else None) for i in range(1, 21)]
    steps.append({"id": "wipe", "server": "alpha", "tool": "delete_everything"})
    plan, question = await _ask(
        orch, mode, query=SPOOF, strategy="Count words.\nNothing is deleted.", steps=steps
    )
    listed = [
        f'{i}. c{i} text.word_count [read-only] {{"text": "note {i}"}}'
        for i in range(1, 21)
        if i != 2
    ]
    listed.insert(
        1,
        '2. c2 text.word_count [read-only] {"text": "' + "x" * 120 + '"…[880 more characters]}',
    )
    assert question == "\n".join(
        [
            f"Approve plan {plan['plan_id']} version 1? 21 steps, 1 not read-only.",
            f"Query: {SPOOF_QUOTED}",
            'Strategy: "Count words.\\nNothing is deleted."',
            "Agent: default",
            "Steps:",
            *listed,
            "21. wipe alpha.delete_everything [DESTRUCTIVE, open-world] {}",
            f"Approving binds to plan_hash {plan['plan_hash']}: a changed plan needs a new "
            "approval.",
        ]
    )


@pytest.mark.anyio
async def test_a_long_plan_lists_every_step_that_is_not_read_only(orch: TaskOrchestrator) -> None:
    # On main the 60-step plan was refused (the default agent allowed 50 steps); had it
    # not been, only its first 20 steps would have been shown.
    steps = [_count(i) for i in range(1, 61)]
    steps[11] = {
        "id": "add",
        "server": "notes",
        "tool": "append",
        "arguments": {"key": "log", "text": "hello"},
    }
    steps[44] = {"id": "wipe", "server": "notes", "tool": "delete", "arguments": {"key": "diary"}}
    plan, question = await _ask(orch, "legacy", query="tidy up", strategy="s", steps=steps)
    assert question == "\n".join(
        [
            f"Approve plan {plan['plan_id']} version 1? 60 steps, 2 not read-only.",
            'Query: "tidy up"',
            'Strategy: "s"',
            "Agent: default",
            "Steps that are not read-only or reach the open world (2 of 60; not listed: "
            "58 read-only: 58 × text.word_count):",
            '12. add notes.append [writes] {"key": "log", "text": "hello"}',
            '45. wipe notes.delete [DESTRUCTIVE] {"key": "diary"}',
            f"Approving binds to plan_hash {plan['plan_hash']}: a changed plan needs a new "
            "approval.",
        ]
    )


def test_the_cli_shows_the_same_question_before_it_asks(tmp_path: Path) -> None:
    # On main `taskorch run` printed the query raw (its newlines became lines of their
    # own) and arguments cut at 100 characters without saying so.
    config = write_config(tmp_path, servers=("text", "notes"))
    plan_file = tmp_path / "plan.json"
    steps = [
        _count(1, "y" * 300),
        {"id": "wipe", "server": "notes", "tool": "delete", "arguments": {"key": "diary"}},
    ]
    plan_file.write_text(json.dumps({"query": SPOOF, "strategy": "s", "steps": steps}))
    db = tmp_path / "t.db"
    env = clean_env()
    done = run_cli("run", str(plan_file), "--config", str(config), "--db", str(db), env=env)
    # Without a terminal the prompt reads end-of-file: nothing is approved or run.
    assert "Approve plan " in done.stdout, done.stdout + done.stderr
    question = done.stdout[done.stdout.index("Approve plan ") :]
    lines = question.splitlines()
    assert lines[1] == f"Query: {SPOOF_QUOTED}"
    assert lines[2:6] == [
        'Strategy: "s"',
        "Agent: default",
        "Steps:",
        '1. c1 text.word_count [read-only] {"text": "' + "y" * 120 + '"…[180 more characters]}',
    ]
    assert lines[6] == '2. wipe notes.delete [DESTRUCTIVE] {"key": "diary"}'
    assert lines[7].startswith("Approving binds to plan_hash v")
    assert FAKE_HASH not in "\n".join(line for line in lines if not line.startswith("Query: "))
