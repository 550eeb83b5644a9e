"""Traces: `taskorch run` and `taskorch serve` export a span tree to a real OTLP/HTTP collector.

The exporter is the real one from the `otel` extra, configured only by the
standard `OTEL_*` variables; the collector (tests/fixtures/otlp_collector.py)
decodes the protobuf it receives. Spans are read after the process exited, so
these tests also show that nothing buffered is lost at exit.
"""

from __future__ import annotations

import json
import re
import signal
import sys
from pathlib import Path
from typing import Any

import anyio
import mcp.client.stdio
import psutil
import pytest
from mcp import Client
from mcp.client.stdio import stdio_client
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from tests.e2e.support import clean_env, run_cli, serve_params, structured, write_config
from tests.fixtures.fastmcp_launch import fastmcp_server
from tests.fixtures.launch import MCP_FIXTURE
from tests.fixtures.otlp_collector import CollectedSpan, Collector

pytestmark = pytest.mark.anyio

HOST_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
HOST_SPAN = "00f067aa0ba902b7"


def _config(tmp_path: Path) -> Path:
    servers = {"alpha": {"command": sys.executable, "args": [str(MCP_FIXTURE), "--name", "alpha"]}}
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"mcpServers": servers}), encoding="utf-8")
    return path


def _otel_env(collector: Collector, **more: str) -> dict[str, str]:
    env = clean_env()
    for key in list(env):
        if key.startswith("OTEL_") or key == "TRACEPARENT":
            del env[key]
    env.update(
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_ENDPOINT=collector.endpoint,
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_SERVICE_NAME="taskorch-test",
        **more,
    )
    return env


STEPS: list[dict[str, Any]] = [
    {"id": "ctx", "server": "alpha", "tool": "trace_context", "arguments": {}},
    {
        "id": "broken",
        "server": "alpha",
        "tool": "fail",
        "arguments": {"message": "no luck"},
        "on_error": "continue",
        "retry": {"maximum_attempts": 1},
    },
]


def _one(collector: Collector, name: str) -> CollectedSpan:
    found = collector.named(name)
    assert len(found) == 1, (name, [s.name for s in collector.spans])
    return found[0]


def _attempts(collector: Collector) -> dict[str, CollectedSpan]:
    return {s.attributes["taskorch.step.id"]: s for s in collector.named("step attempt")}


def _check_run_tree(collector: Collector, run: CollectedSpan) -> dict[str, CollectedSpan]:
    """The run's step attempts nest in it, each with its attributes and the SDK's call span."""
    attempts = _attempts(collector)
    assert set(attempts) == {"ctx", "broken"}
    ctx, broken = attempts["ctx"], attempts["broken"]
    for span in (ctx, broken):
        assert span.parent_span_id == run.span_id
        assert span.trace_id == run.trace_id
        assert span.attributes["taskorch.plan.id"] == run.attributes["taskorch.plan.id"]
        assert span.attributes["taskorch.step.server"] == "alpha"
        assert span.attributes["taskorch.step.attempt"] == 1
    assert ctx.attributes["taskorch.step.tool"] == "trace_context"
    assert ctx.attributes["taskorch.outcome"] == "succeeded"
    assert "taskorch.error.kind" not in ctx.attributes
    assert broken.attributes["taskorch.outcome"] == "failed"
    assert broken.attributes["taskorch.error.kind"] == "tool_error"
    assert broken.status_code == 2
    # The SDK's own client span for the downstream tools/call nests in the attempt.
    calls = {
        s.parent_span_id: s for s in collector.spans if s.name.startswith("MCP send tools/call")
    }
    assert calls[ctx.span_id].name == "MCP send tools/call trace_context"
    assert calls[ctx.span_id].kind == "client"
    assert calls[broken.span_id].trace_id == run.trace_id
    return calls


def _traceparent_seen(output: dict[str, Any]) -> tuple[str, str]:
    match = re.fullmatch(r"00-([0-9a-f]{32})-([0-9a-f]{16})-0[01]", output["traceparent"])
    assert match is not None, output
    return match.group(1), match.group(2)


def test_run_exports_the_span_tree_and_passes_trace_context_downstream(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"query": "traced", "steps": STEPS}), encoding="utf-8")
    db = tmp_path / "t.db"
    with Collector() as collector:
        env = _otel_env(collector, TRACEPARENT=f"00-{HOST_TRACE}-{HOST_SPAN}-01")
        config = str(_config(tmp_path))
        args = ("--config", config, "--db", str(db), "--log-format", "json", "--log-level", "DEBUG")
        done = run_cli("run", str(plan), "--yes", *args, env=env)
        assert done.returncode == 1, done.stderr  # the plan failed: one step failed on purpose
        run = _one(collector, "plan run")
        # The caller's TRACEPARENT is the run's parent.
        assert (run.trace_id, run.parent_span_id) == (HOST_TRACE, HOST_SPAN)
        assert run.service == "taskorch-test"
        assert run.attributes["taskorch.plan.version"] == 1
        assert run.attributes["taskorch.plan.steps"] == 2
        assert run.attributes["taskorch.outcome"] == "failed"
        assert run.status_code == 2
        calls = _check_run_tree(collector, run)
        # The planner span of `taskorch run` (a plan file goes through the steps planner).
        planned = _one(collector, "plan")
        assert planned.trace_id == HOST_TRACE
        assert planned.attributes["taskorch.plan.id"] == run.attributes["taskorch.plan.id"]

    # --log-format json: every log line is one JSON object; those logged in a span say which.
    logs = [json.loads(line) for line in done.stderr.splitlines()]
    assert {"time", "level", "logger", "message"} <= set(logs[0])
    in_spans = {(entry["trace_id"], entry["span_id"]) for entry in logs if "trace_id" in entry}
    attempt_ids = {span.span_id for span in _attempts(collector).values()}
    assert {(HOST_TRACE, span_id) for span_id in attempt_ids} <= in_spans
    # The downstream server got W3C trace context in the request's _meta: the SDK's call span.
    shown = run_cli(
        "show", run.attributes["taskorch.plan.id"], "--json", "--db", str(db), env=clean_env()
    )
    assert shown.returncode == 0, shown.stderr
    steps = {s["id"]: s for s in json.loads(shown.stdout)["steps"]}
    trace_id, parent = _traceparent_seen(steps["ctx"]["output"])
    ctx_attempt = _attempts(collector)["ctx"]
    assert (trace_id, parent) == (HOST_TRACE, calls[ctx_attempt.span_id].span_id)


async def test_serve_takes_the_hosts_trace_context_from_the_request_meta(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Let taskorch exit by itself once its stdin closes, however loaded the machine:
    # the SDK's client would otherwise stop it after 2 s (a SIGTERM, also flushed, but later).
    monkeypatch.setattr(mcp.client.stdio, "PROCESS_TERMINATION_TIMEOUT", 60.0)
    db = tmp_path / "t.db"
    with Collector() as collector:
        params = serve_params(_config(tmp_path), db)
        params.env = _otel_env(collector)
        host = SpanContext(
            trace_id=int(HOST_TRACE, 16),
            span_id=int(HOST_SPAN, 16),
            is_remote=True,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
        )
        # The host's own span: the SDK client injects it into every request's _meta.
        token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(host)))
        try:
            with anyio.fail_after(60):
                async with Client(stdio_client(params)) as client:
                    created = structured(
                        await client.call_tool("create_plan", {"query": "traced", "steps": STEPS})
                    )
                    plan_id = created["plan_id"]
                    await client.call_tool(
                        "confirm_plan", {"plan_id": plan_id, "plan_hash": created["plan_hash"]}
                    )
                    report = structured(
                        await client.call_tool("execute_plan", {"plan_id": plan_id, "wait": True})
                    )
        finally:
            otel_context.detach(token)
        # Leaving the client closed taskorch's stdin: it exited, flushing its spans.
        run = _one(collector, "plan run")
        assert run.attributes["taskorch.plan.id"] == plan_id
        assert run.trace_id == HOST_TRACE
        # The SDK's server span for execute_plan took the host's traceparent; the run nests in it.
        spans = collector.by_id()
        server_span = spans[run.parent_span_id]
        assert server_span.name == "tools/call execute_plan"
        assert server_span.kind == "server"
        assert server_span.parent_span_id == HOST_SPAN
        _check_run_tree(collector, run)
        planned = _one(collector, "plan")
        assert spans[planned.parent_span_id].name == "tools/call create_plan"
    outputs = {s["id"]: s for s in report["steps"]}
    assert _traceparent_seen(outputs["ctx"]["output"])[0] == HOST_TRACE


@pytest.mark.skipif(sys.platform == "win32", reason="no SIGTERM to send")
async def test_serve_stopped_with_sigterm_still_exports_its_spans(tmp_path: Path) -> None:
    with Collector() as collector:
        params = serve_params(_config(tmp_path), tmp_path / "t.db")
        params.env = _otel_env(collector)
        with anyio.fail_after(60):
            async with Client(stdio_client(params)) as client:
                await client.list_tools()
                (child,) = [
                    p
                    for p in psutil.Process().children()
                    if "server.cli" in p.cmdline() and "serve" in p.cmdline()
                ]
                child.send_signal(signal.SIGTERM)
                await anyio.to_thread.run_sync(child.wait, 60)
        # The SDK's server span for the host's tools/list, exported before the process ended.
        listed = _one(collector, "tools/list")
        assert listed.service == "taskorch-test"


def test_a_task_augmented_call_is_one_attempt_span_with_its_polls_inside(tmp_path: Path) -> None:
    # echo_task runs only as a downstream task: tools/call answers with a task id, then
    # taskorch polls tasks/get until the result comes; all of it is the step's one attempt.
    step = {"id": "echo", "server": "fm", "tool": "echo_task", "arguments": {"text": "hi"}}
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"query": "task", "steps": [step]}), encoding="utf-8")
    with fastmcp_server(tmp_path / "fastmcp") as fm, Collector() as collector:
        config = write_config(tmp_path, servers=(), extra_servers={"fm": {"url": fm.url}})
        args = ("--config", str(config), "--db", str(tmp_path / "t.db"))
        done = run_cli("run", str(plan), "--yes", *args, env=_otel_env(collector))
        assert done.returncode == 0, done.stdout + done.stderr
        run = _one(collector, "plan run")
        attempt = _one(collector, "step attempt")
        assert attempt.parent_span_id == run.span_id
        assert attempt.attributes["taskorch.step.tool"] == "echo_task"
        assert attempt.attributes["taskorch.outcome"] == "succeeded"
        spans = collector.by_id()

        def under_attempt(span: CollectedSpan) -> bool:
            while span.parent_span_id in spans:
                if span.parent_span_id == attempt.span_id:
                    return True
                span = spans[span.parent_span_id]
            return False

        (call,) = [s for s in collector.spans if s.name == "MCP send tools/call echo_task"]
        assert call.parent_span_id == attempt.span_id
        polls = collector.named("MCP send tasks/get")
        assert polls, [s.name for s in collector.spans]
        assert all(under_attempt(poll) for poll in polls), [
            spans.get(p.parent_span_id) for p in polls
        ]
