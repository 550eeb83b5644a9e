"""Clients no one here wrote: the MCP Inspector's CLI, and the conformance suite.

Both come from npm (`tests/npm`, installed by `make test`); a missing install
fails these tests with the command to run, it never skips them.

Conformance: the server scenarios of `@modelcontextprotocol/conformance` are
run against `taskorch serve --http`. Most of them call fixture tools, prompts
and resources that only the SDKs' own "everything" test servers have
(`test_simple_text`, `test_prompt_with_arguments`, `test://template/{id}/data`,
`json_schema_2020_12_tool`, `test_reconnection`, ...), or exercise features
taskorch does not declare (logging, resource subscriptions). The scenarios that
apply to a server like taskorch are listed in `APPLICABLE` and must pass.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from server.demo import child_env
from tests.e2e.support import (
    INSPECTOR,
    NODE24,
    ROOT,
    http_server,
    require_npm_tools,
    serve_args,
    write_config,
)

pytestmark = pytest.mark.npm

CONFORMANCE = ROOT / "tests" / "npm" / "node_modules" / ".bin" / "conformance"

APPLICABLE = {
    "server-initialize",
    "ping",
    "completion-complete",
    "tools-list",
    "resources-list",
    "prompts-list",
    "server-sse-multiple-streams",
    "dns-rebinding-protection",
}
"""Scenarios that test what any MCP server over streamable HTTP must do."""


def _node_env(tmp_path: Path) -> dict[str, str]:
    env = child_env()
    # Node 24 first on PATH; the inspector keeps its catalog under the test's directory.
    env["PATH"] = f"{NODE24.parent}{os.pathsep}{env.get('PATH', '')}"
    env["MCP_CATALOG_PATH"] = str(tmp_path / "inspector-catalog.json")
    env["HOME"] = str(tmp_path)
    env["NO_COLOR"] = "1"
    return env


def _inspector(tmp_path: Path, *args: str, timeout: float = 90, expect_rc: int = 0) -> Any:
    proc = subprocess.run(
        [str(NODE24), str(INSPECTOR), "--cli", *args],
        cwd=tmp_path,
        env=_node_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == expect_rc, (
        f"inspector failed ({proc.returncode}): {proc.stderr[-2000:]}"
    )
    return json.loads(proc.stdout)


def _stdio_target(tmp_path: Path) -> list[str]:
    config = write_config(tmp_path, servers=("text",))
    return ["--", sys.executable, *serve_args(config, tmp_path / "t.db")]


def test_inspector_lists_and_calls_tools_over_stdio(tmp_path: Path) -> None:
    require_npm_tools()
    target = _stdio_target(tmp_path)
    listed = _inspector(tmp_path, "--method", "tools/list", *target)
    names = {t["name"] for t in listed["tools"]}
    assert {"create_plan", "confirm_plan", "execute_plan", "get_progress"} <= names
    for tool in listed["tools"]:
        assert tool["outputSchema"]["type"] == "object"
        assert "annotations" in tool

    steps = [{"id": "a", "server": "text", "tool": "slugify", "arguments": {"text": "Hi There"}}]
    created = _inspector(
        tmp_path,
        "--method",
        "tools/call",
        "--tool-name",
        "create_plan",
        "--tool-arg",
        "query=make a slug",
        f"steps={json.dumps(steps)}",
        *target,
    )
    plan = created["structuredContent"]
    assert plan["status"] == "awaiting_confirmation"
    # The same database, a new session: the plan is still there.
    _inspector(
        tmp_path,
        "--method",
        "tools/call",
        "--tool-name",
        "confirm_plan",
        "--tool-arg",
        f"plan_id={plan['plan_id']}",
        f"plan_hash={plan['plan_hash']}",
        *target,
    )
    ran = _inspector(
        tmp_path,
        "--method",
        "tools/call",
        "--tool-name",
        "execute_plan",
        "--tool-arg",
        f"plan_id={plan['plan_id']}",
        *target,
    )
    report = ran["structuredContent"]
    assert report["status"] == "completed"
    assert report["steps"][0]["output"] == {"slug": "hi-there"}

    bad = _inspector(
        tmp_path,
        "--method",
        "tools/call",
        "--tool-name",
        "get_plan",
        "--tool-arg",
        "plan_id=missing",
        *target,
        expect_rc=5,  # the inspector's exit code for a tool answering isError
    )
    assert bad["isError"] is True
    assert "no plan with id 'missing'" in bad["content"][0]["text"]


def test_inspector_over_http_with_a_bearer_token(tmp_path: Path) -> None:
    require_npm_tools()
    config = write_config(tmp_path, servers=("text",))
    with http_server(config, tmp_path / "t.db", token="s3cret") as url:
        listed = _inspector(
            tmp_path, url, "--method", "tools/list", "--header", "Authorization: Bearer s3cret"
        )
        assert len(listed["tools"]) == 12
        tools = _inspector(
            tmp_path,
            url,
            "--method",
            "tools/call",
            "--tool-name",
            "list_tools",
            "--header",
            "Authorization: Bearer s3cret",
        )
        listed_tools = tools["structuredContent"]["tools"]
        assert {t["tool"] for t in listed_tools if t["server"] == "text"} == {
            "keywords",
            "slugify",
            "summarize",
            "word_count",
        }
        refused = subprocess.run(
            [
                str(NODE24),
                str(INSPECTOR),
                "--cli",
                url,
                "--method",
                "tools/list",
                "--stored-auth-only",
            ],
            cwd=tmp_path,
            env=_node_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        assert refused.returncode != 0
        # Refused by taskorch (401), the inspector says authorization is needed.
        assert "auth_required" in refused.stdout + refused.stderr


_RESULT_DIR = re.compile(r"server-(.+)-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z")


def _conformance_results(out_dir: Path) -> dict[str, list[dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {}
    for checks in out_dir.glob("server-*/checks.json"):
        # Folders are named server-<scenario>-<ISO timestamp>; the timestamp's own
        # digits can contain "-20", so match its whole shape.
        match = _RESULT_DIR.fullmatch(checks.parent.name)
        assert match is not None, f"unexpected conformance output folder {checks.parent.name}"
        results[match.group(1)] = json.loads(checks.read_text(encoding="utf-8"))
    return results


def test_conformance_server_scenarios(tmp_path: Path) -> None:
    require_npm_tools()
    config = write_config(tmp_path, servers=("text",))
    out_dir = tmp_path / "conformance"
    with http_server(config, tmp_path / "t.db") as url:
        proc = subprocess.run(
            [str(NODE24), str(CONFORMANCE), "server", "--url", url, "-o", str(out_dir)],
            cwd=tmp_path,
            env=_node_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
    results = _conformance_results(out_dir)
    assert APPLICABLE <= set(results), (set(results), proc.stdout[-3000:])
    summary = {
        name: all(c.get("status") in ("SUCCESS", "INFO") for c in checks)
        for name, checks in sorted(results.items())
    }
    passed = sorted(n for n, ok in summary.items() if ok)
    failed = sorted(n for n, ok in summary.items() if not ok)
    print(f"conformance: {len(passed)} passed: {', '.join(passed)}")
    print(f"conformance: {len(failed)} failed: {', '.join(failed)}")
    broken = {
        name: [c.get("errorMessage") for c in results[name] if c.get("status") == "FAILURE"]
        for name in APPLICABLE
        if not summary[name]
    }
    assert not broken, broken
