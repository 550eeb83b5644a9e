"""A hostile or broken downstream server, seen by a host through `taskorch serve` over stdio.

One floods stdout and stderr: its log on disk stays under the cap, the dropped
lines are counted, and taskorch keeps serving. Others print their environment
and echo their secrets back in every way they can: no secret reaches the
database, an answer, a resource, taskorch's own log or the server's log file.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.client.stdio import stdio_client
from mcp_types import TextResourceContents

from tests.e2e.support import serve_params, structured, tool_text, write_config
from tests.fixtures.launch import MCP_FIXTURE, TINY_SERVER, network_server

pytestmark = pytest.mark.anyio

LOG_CAP_BYTES = 5 * 1024 * 1024
"""The documented default cap of one server log file (it keeps one previous file too)."""


async def _run_plan(client: Client, steps: list[dict[str, Any]]) -> dict[str, Any]:
    plan = structured(await client.call_tool("create_plan", {"query": "abuse", "steps": steps}))
    structured(
        await client.call_tool(
            "confirm_plan", {"plan_id": plan["plan_id"], "plan_hash": plan["plan_hash"]}
        )
    )
    return structured(await client.call_tool("execute_plan", {"plan_id": plan["plan_id"]}))


async def test_a_flooding_server_cannot_fill_the_disk_and_the_flood_is_counted(
    tmp_path: Path,
) -> None:
    lines, width = 30_000, 400  # 12 MB on each stream: over the cap of both log files together
    notes = 5_000  # invalid notifications: the SDK logs a warning and a traceback for each
    noisy = {"command": sys.executable, "args": [str(TINY_SERVER), "--name", "noisy"]}
    config = write_config(tmp_path, servers=(), extra_servers={"noisy": noisy})
    steps = [
        {
            "id": "flood",
            "server": "noisy",
            "tool": "flood",
            "arguments": {"lines": lines, "width": width, "notes": notes},
        },
        {
            "id": "after",
            "server": "noisy",
            "tool": "echo",
            "arguments": {"text": "still here"},
            "depends_on": ["flood"],
        },
    ]
    own_log = tmp_path / "taskorch.stderr"
    with own_log.open("w") as errlog:
        params = serve_params(config, tmp_path / "t.db")
        async with Client(stdio_client(params, errlog=errlog)) as client:
            report = await _run_plan(client, steps)
            assert report["status"] == "completed", report["message"]
            outputs = {s["id"]: s["output"] for s in report["steps"]}
            assert outputs["after"] == "still here"
            # Still serving after the flood: another run on the same server.
            echo = {k: v for k, v in steps[1].items() if k != "depends_on"}
            again = await _run_plan(client, [echo])
            assert again["status"] == "completed", again["message"]

    logs = tmp_path / "logs"
    files = sorted(logs.glob("noisy.log*"))
    assert files, "no server log was written"
    for path in files:
        assert path.stat().st_size <= LOG_CAP_BYTES, f"{path.name}: {path.stat().st_size} bytes"
    text = "".join(p.read_text(encoding="utf-8", errors="replace") for p in files)
    kept_err = len(re.findall(r"^junk err \d+", text, flags=re.MULTILINE))
    kept_out = len(re.findall(r"^\[stdout, not JSON-RPC\] junk out \d+", text, flags=re.MULTILINE))
    reports = re.findall(r"dropped \d+ lines? .*\(stderr (\d+), stray stdout (\d+)\)", text)
    assert reports, "the dropped lines were not reported in the server log"
    dropped_err = sum(int(e) for e, _ in reports)
    dropped_out = sum(int(o) for _, o in reports)
    # Nothing silently lost: every line is either in the log or counted as dropped.
    assert kept_err + dropped_err == lines
    assert kept_out + dropped_out == lines
    own = own_log.read_text(encoding="utf-8", errors="replace")
    assert "noisy.log" in own and "dropping lines" in own, own[-2000:]
    # taskorch's own log: a few warnings and counts of the rest, not one per notification.
    shown = own.count("Failed to validate notification: notifications/progress")
    counted = sum(int(n) for n in re.findall(r"\[(\d+) more like this were dropped", own))
    counted += sum(int(n) for n in re.findall(r"the log was flooded: dropped (\d+) records?", own))
    assert shown < 100 and shown + counted == notes, own[-3000:]
    assert own_log.stat().st_size < 200_000


SECRET_ENV = "sk-live-0123456789abcdefXYZ"
SECRET_TOKEN = "tok-9876543210-fedcbaQRS"
SECRET_SHORT = "1"


def _leak_steps(server: str, prefix: str) -> list[dict[str, Any]]:
    return [
        {
            "id": f"{prefix}_{how}",
            "server": server,
            "tool": "leak",
            "arguments": {"how": how},
            "on_error": "continue",
            "retry": {"maximum_attempts": 1},
        }
        for how in ("error", "rpc", "progress", "result")
    ]


def _files(tmp_path: Path) -> dict[str, bytes]:
    """Every file taskorch wrote: the database (and its WAL), its stderr, the server logs."""
    paths = [*tmp_path.glob("t.db*"), *(tmp_path / "logs").glob("*.log*")]
    found = {path.name: path.read_bytes() for path in paths}
    found["taskorch stderr"] = (tmp_path / "taskorch.stderr").read_bytes()
    return found


def _every_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


async def test_secrets_never_reach_the_database_answers_resources_or_logs(
    tmp_path: Path,
) -> None:
    async with network_server("http", name="remote", token=SECRET_TOKEN) as remote:
        leaky = {
            "command": sys.executable,
            "args": [str(MCP_FIXTURE), "--name", "leaky", "--print-env"],
            "env": {"API_KEY": SECRET_ENV, "DEBUG": SECRET_SHORT},
        }
        http = {"url": remote.url, "headers": {"Authorization": f"Bearer {SECRET_TOKEN}"}}
        config = write_config(tmp_path, servers=(), extra_servers={"leaky": leaky, "remote": http})
        steps = [*_leak_steps("leaky", "env"), *_leak_steps("remote", "hdr")]
        crash_step = {
            "id": "crash",
            "server": "leaky",
            "tool": "crash",
            "arguments": {"code": 1, "message": "fixture: giving up"},
            "retry": {"maximum_attempts": 1},
        }
        own_log = tmp_path / "taskorch.stderr"
        db = tmp_path / "t.db"
        answers: list[str] = []
        with own_log.open("w") as errlog:
            params = serve_params(config, db, "--log-level", "DEBUG")
            async with Client(stdio_client(params, errlog=errlog)) as client:
                tools = await client.list_tools()
                answers.append(_every_text([t.model_dump(mode="json") for t in tools.tools]))
                listed = await client.call_tool("list_tools", {})
                answers.append(tool_text(listed))
                report = await _run_plan(client, steps)
                crashed = await _run_plan(client, [crash_step])
                for run in (report, crashed):
                    answers.append(_every_text(run))
                    plan_id = run["plan_id"]
                    plan = await client.call_tool("get_plan", {"plan_id": plan_id})
                    answers.append(tool_text(plan))
                    answers.append(_every_text(plan.structured_content))
                    progress = await client.call_tool("get_progress", {"plan_id": plan_id})
                    answers.append(_every_text(progress.structured_content))
                    for suffix in ("", "/graph", "/timeline"):
                        read = await client.read_resource(f"plan://{plan_id}{suffix}")
                        answers.extend(
                            c.text for c in read.contents if isinstance(c, TextResourceContents)
                        )

    assert "environment: {" in answers[1] and "[redacted]" in answers[1]  # a tool description
    by_id = {s["id"]: s for s in report["steps"]}
    # The leaks really happened, and were scrubbed where they came in.
    assert "[redacted]" in by_id["env_error"]["error"]["message"]
    assert "[redacted]" in by_id["hdr_error"]["error"]["message"]
    assert "[redacted]" in by_id["env_rpc"]["error"]["message"]
    assert "[redacted]" in _every_text(by_id["env_result"]["output"])
    # The server died mid-call on a tool not annotated idempotent: the step waits for a
    # decision (the call may have taken effect), with the crash's words as its error.
    assert crashed["status"] == "interrupted"
    crash = crashed["steps"][0]["error"]["message"]
    assert SECRET_SHORT != "" and "[redacted]" in crash  # the env line in the stderr tail
    assert "exited with code 1" in crash and "fixture: giving up" in crash
    # A short value ("1") is not a secret worth scrubbing: messages stay readable.
    assert "code 1" in crash

    places = {"answers": "\n".join(answers).encode(), **_files(tmp_path)}
    assert "leaky.log" in places
    assert b"fixture: environment" in places["leaky.log"]
    for secret in (SECRET_ENV, SECRET_TOKEN):
        leaked = [name for name, data in places.items() if secret.encode() in data]
        assert not leaked, f"{secret!r} leaked into {leaked}"
