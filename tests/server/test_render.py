"""The plan resources: JSON, Mermaid flowchart and Mermaid Gantt."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

from executor.errors import ErrorKind
from executor.ids import PlanId
from executor.plan import Plan, Step, StepError
from executor.records import StepState
from executor.status import PlanStatus, StepStatus
from server.render import (
    STATUS_STYLES,
    mermaid_text,
    render_graph,
    render_plan_json,
    render_timeline,
)

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
PID = PlanId("p1")


def _plan(status: PlanStatus = PlanStatus.EXECUTING) -> Plan:
    return Plan(
        id=PID,
        strategy="fan out, then gather",
        steps=(
            Step(id="a", server="text", tool="word_count", arguments={"text": "hi"}),
            Step(id="b", server="text", tool="keywords", arguments={"text": "${a}"}),
            Step(id="end", server="stats", tool="evaluate", arguments={"expression": "${a.words}"}),
            Step(id="d", server="notes", tool="put", arguments={"key": "${b.words.0}"}),
        ),
        status=status,
    )


def _states() -> dict[str, StepState]:
    return {
        "a": StepState(
            plan_id=PID,
            version=1,
            step_id="a",
            status=StepStatus.SUCCEEDED,
            attempts=1,
            output={"words": 1},
            started_at=T0,
            finished_at=T0 + timedelta(seconds=1),
        ),
        "b": StepState(
            plan_id=PID,
            version=1,
            step_id="b",
            status=StepStatus.FAILED,
            attempts=3,
            error=StepError(kind=ErrorKind.TOOL_ERROR, message="boom"),
            started_at=T0 + timedelta(seconds=1),
            finished_at=T0 + timedelta(seconds=2),
        ),
        "end": StepState(
            plan_id=PID,
            version=1,
            step_id="end",
            status=StepStatus.RUNNING,
            attempts=1,
            started_at=T0 + timedelta(seconds=1),
        ),
    }


def test_plan_json_has_the_documented_shape() -> None:
    doc = json.loads(render_plan_json(_plan(), _states()))
    assert doc["plan_id"] == "p1"
    assert doc["plan_hash"].startswith("v1:")
    assert doc["strategy"] == "fan out, then gather"
    steps = {s["id"]: s for s in doc["steps"]}
    assert steps["a"]["status"] == "succeeded"
    assert steps["a"]["output"] == {"words": 1}
    assert steps["a"]["duration_s"] == 1.0
    assert steps["b"]["error"] == {"kind": "tool_error", "message": "boom"}
    assert steps["b"]["attempts"] == 3
    assert steps["b"]["depends_on"] == ["a"]
    # A step with no state yet is pending, never missing.
    assert steps["d"]["status"] == "pending"
    assert steps["d"]["error"] is None
    for step in doc["steps"]:
        assert set(step) >= {"id", "server", "tool", "arguments", "depends_on", "status"}


def test_graph_draws_every_node_and_edge_with_status_classes() -> None:
    graph = render_graph(_plan(), _states())
    lines = graph.splitlines()
    assert lines[0] == "flowchart TD"
    # Generated node ids: the step called `end` (a Mermaid keyword) is safe.
    assert '    s2["<b>end</b><br/>stats.evaluate<br/><i>running</i>"]' in lines
    edges = {line.strip() for line in lines if "-->" in line}
    assert edges == {"s0 --> s1", "s0 --> s2", "s1 --> s3"}
    for status in STATUS_STYLES:
        assert f"    classDef {status.value} " in graph
    assert "    class s0 succeeded" in lines
    assert "    class s1 failed" in lines
    assert "    class s2 running" in lines
    assert "    class s3 pending" in lines


def test_graph_labels_cannot_break_out() -> None:
    hostile = 'x"]; click s0 "javascript:alert(1)"; %% <script>|#'
    plan = Plan(
        id=PID,
        steps=(Step(id="a", server="srv", tool=hostile),),
    )
    graph = render_graph(plan)
    node_line = next(line for line in graph.splitlines() if line.startswith("    s0["))
    label = node_line[len('    s0["') : -len('"]')]
    # Inside the label: no quote, bracket, semicolon, pipe, angle bracket or raw '#'
    # except the entity codes the escaper wrote.
    stripped = re.sub(r"#\d+;", "", label.replace("<b>", "").replace("</b>", ""))
    stripped = stripped.replace("<br/>", "").replace("<i>", "").replace("</i>", "")
    assert not set(stripped) & set('"[];|<>#%{}')
    assert "#34;" in label  # the quote, encoded
    assert graph.count("\n") == len(graph.splitlines())


def test_mermaid_text_escapes_and_cuts() -> None:
    assert mermaid_text("plain text.ok") == "plain text.ok"
    assert mermaid_text('a"b') == "a#34;b"
    assert mermaid_text("line\nbreak") == "line break"
    cut = mermaid_text("x" * 200, limit=10)
    assert cut.startswith("x" * 9)
    assert cut.endswith("#8230;")


def test_timeline_draws_started_steps_by_server() -> None:
    now = T0 + timedelta(seconds=5)
    gantt = render_timeline(_plan(), _states(), now=now)
    lines = gantt.splitlines()
    assert lines[0] == "gantt"
    assert "    dateFormat x" in lines
    start = round(T0.timestamp() * 1000)
    assert f"    a word_count :done, t0, {start}, {start + 1000}" in lines
    assert f"    b keywords :crit, t1, {start + 1000}, {start + 2000}" in lines
    # A running step's bar ends now.
    assert f"    end evaluate :active, t2, {start + 1000}, {start + 5000}" in lines
    assert lines.index("    section text") < lines.index("    section stats")
    assert "    %% not started: d" in lines


def test_timeline_of_a_plan_that_never_ran_is_valid_and_empty() -> None:
    gantt = render_timeline(_plan(PlanStatus.AWAITING_CONFIRMATION))
    assert "section" not in gantt
    assert "%% not started: a b end d" in gantt


def test_timeline_names_cannot_break_the_chart() -> None:
    plan = Plan(id=PID, steps=(Step(id="a", server="s:#;x", tool="t:1;#2"),))
    state = StepState(
        plan_id=PID,
        version=1,
        step_id="a",
        status=StepStatus.SUCCEEDED,
        started_at=T0,
        finished_at=T0,
    )
    gantt = render_timeline(plan, {"a": state})
    task = next(line for line in gantt.splitlines() if ":done" in line)
    name, _, rest = task.partition(" :")
    assert ":" not in name and "#" not in name and ";" not in name
    start, end = (int(x) for x in rest.split(", ")[2:])
    assert end == start + 1  # zero-length bars are widened to render
    assert "    section s x" in gantt
