"""The Python API: `TaskOrchestrator` over the example servers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from executor.downstream import Pool
from executor.errors import ApprovalError, NotFoundError, PlanValidationError, UserError
from executor.policy import AgentConfig, AutoApprove
from executor.records import EventKind
from executor.status import PlanStatus
from executor.store import SqliteStore
from planner.backends import ModelBackend
from planner.models import ModelReply, ModelRequest
from planner.planners import ModelPlanner
from server.config import load_config
from server.progress import ProgressUpdate
from server.service import TaskOrchestrator
from tests.e2e.support import ROOT, write_config

STEPS = [
    {"id": "a", "server": "text", "tool": "word_count", "arguments": {"text": "one two three"}},
    {
        "id": "b",
        "server": "stats",
        "tool": "evaluate",
        "arguments": {"expression": "${a.words} * 2"},
    },
    {"id": "c", "server": "text", "tool": "slugify", "arguments": {"text": "${a.words} words"}},
]


@pytest.mark.anyio
async def test_create_confirm_execute_with_updates(orch: TaskOrchestrator) -> None:
    plan = await orch.create_task_plan("count, double, slug", steps=STEPS, session_id="s1")
    assert plan.status is PlanStatus.AWAITING_CONFIRMATION
    with pytest.raises(ApprovalError, match="confirm it before executing"):
        await orch.execute_task_plan(plan.plan_id)
    with pytest.raises(ApprovalError, match="changed since it was reviewed"):
        await orch.confirm_task_plan(plan.plan_id, plan_hash="v1:deadbeef")
    confirmed = await orch.confirm_task_plan(plan.plan_id, plan_hash=plan.plan_hash, reason="ok")
    assert confirmed.approved

    updates: list[ProgressUpdate] = []

    async def on_update(update: ProgressUpdate) -> None:
        updates.append(update)

    report = await orch.execute_task_plan(plan.plan_id, on_update=on_update)
    assert report.status is PlanStatus.COMPLETED
    outputs = {s.id: s.output for s in report.steps}
    assert outputs["b"]["value"] == 6.0
    assert outputs["c"] == {"slug": "3-words"}
    kinds = [u.event.kind for u in updates]
    assert kinds[0] is EventKind.EXECUTION_STARTED
    assert kinds[-1] is EventKind.PLAN_FINISHED
    assert kinds.count(EventKind.STEP_SUCCEEDED) == 3
    assert updates[-1].progress.percent == 100.0
    # `b` and `c` both wait for `a` only: both start before either finishes.
    order = [(u.event.kind, u.event.step_id) for u in updates]
    starts = {s: order.index((EventKind.STEP_STARTED, s)) for s in "bc"}
    ends = {s: order.index((EventKind.STEP_SUCCEEDED, s)) for s in "bc"}
    assert max(starts.values()) < min(ends.values())

    active = await orch.get_active_task_plans()
    assert active.count == 0
    listed = await orch.list_task_plans(session_id="s1")
    assert [p.plan_id for p in listed.plans] == [plan.plan_id]
    view = await orch.get_task_plan(plan.plan_id)
    assert all(s.attempts == 1 and s.duration_s is not None for s in view.steps)


@pytest.mark.anyio
async def test_subscribe_progress_follows_a_run_started_without_waiting(
    orch: TaskOrchestrator,
) -> None:
    steps = [
        {
            "id": "slow",
            "server": "stats",
            "tool": "running_total",
            "arguments": {"values": [1, 2, 3, 4], "delay_s": 0.1},
        }
    ]
    plan = await orch.create_task_plan("slow sum", steps=steps)
    await orch.confirm_task_plan(plan.plan_id)
    started = await orch.execute_task_plan(plan.plan_id, wait=False)
    assert started.status is PlanStatus.EXECUTING
    assert not started.finished
    seen: list[ProgressUpdate] = []
    with anyio.fail_after(60):
        async for update in orch.subscribe_progress(plan.plan_id):
            seen.append(update)
    downstream = [u for u in seen if u.event.kind is EventKind.STEP_PROGRESS]
    assert [u.event.data["progress"] for u in downstream] == [1.0, 2.0, 3.0, 4.0]
    assert seen[-1].event.kind is EventKind.PLAN_FINISHED
    assert (await orch.get_progress(plan.plan_id)).status is PlanStatus.COMPLETED
    # No active run: nothing to follow, and the iterator ends at once.
    assert [u async for u in orch.subscribe_progress(plan.plan_id)] == []


@pytest.mark.anyio
async def test_bad_plans_and_unknown_names_raise_user_errors(orch: TaskOrchestrator) -> None:
    with pytest.raises(PlanValidationError) as caught:
        await orch.create_task_plan(
            "q",
            steps=[
                {"id": "a", "server": "text", "tool": "word_count", "arguments": {"txt": "x"}},
                {"id": "a", "server": "text", "tool": "slugify", "arguments": {"text": "y"}},
            ],
        )
    codes = {p.code for p in caught.value.problems}  # type: ignore[attr-defined]
    assert "duplicate_id" in codes
    with pytest.raises(NotFoundError, match="known agents"):
        await orch.create_task_plan("q", steps=STEPS, agent_id="ghost")
    with pytest.raises(NotFoundError):
        await orch.get_task_plan("ghost")
    with pytest.raises(UserError, match="no planning model"):
        await orch.create_task_plan("plan it yourself")
    with pytest.raises(UserError, match="not valid"):
        await orch.add_agent_config({"name": "x", "auto_approve": "always"})


@pytest.mark.anyio
async def test_config_agents_default_agent_and_the_global_step_cap(tmp_path: Path) -> None:
    config_path = write_config(
        tmp_path,
        servers=("text",),
        agents={"reader": {"auto_approve": "read_only", "limits": {"max_steps": 500}}},
        default_agent="reader",
        limits={"max_steps": 2},
    )
    async with TaskOrchestrator.from_paths(config_path, tmp_path / "t.db") as orch:
        agents = await orch.list_agent_configs()
        assert agents.default_agent == "reader"
        assert [a.name for a in agents.agents] == ["reader"]
        plan = await orch.create_task_plan("read", steps=STEPS[:1])
        assert plan.agent == "reader"
        assert plan.status is PlanStatus.CONFIRMED  # read-only tools, read_only agent
        three = [
            {"id": f"s{i}", "server": "text", "tool": "slugify", "arguments": {"text": "x"}}
            for i in range(3)
        ]
        with pytest.raises(PlanValidationError, match="at most 2"):
            await orch.create_task_plan("too long", steps=three)
        added = await orch.add_agent_config(
            {"name": "writer", "auto_approve": AutoApprove.NEVER.value}
        )
        assert (await orch.get_agent_config("writer")) == added


@pytest.mark.anyio
async def test_errors_in_the_body_come_out_unwrapped(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, servers=("text",)))
    with pytest.raises(NotFoundError):
        async with TaskOrchestrator(config, db_path=tmp_path / "t.db") as orch:
            await orch.get_task_plan("nope")


def test_serving_does_not_load_the_model_library() -> None:
    code = (
        "import sys, server.cli.main, server.mcp.build, server.service\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'litellm')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", "import json\n" + code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(out.stdout) == []


@pytest.mark.anyio
async def test_list_tools_names_the_servers_that_are_down(tmp_path: Path) -> None:
    broken = {"command": sys.executable, "args": ["-c", "raise SystemExit('broken on purpose')"]}
    config = load_config(write_config(tmp_path, servers=("text",), extra_servers={"bad": broken}))
    async with TaskOrchestrator(config, db_path=tmp_path / "t.db") as orch:
        listed = await orch.list_tools()
        assert listed.servers_down == ["bad"]
        assert {t.server for t in listed.tools} == {"taskorch", "text"}  # built-ins too
        with pytest.raises(NotFoundError, match="servers: bad, taskorch, text"):
            await orch.list_tools(server="nope")


class _OnePlanModel(ModelBackend):
    """A model that always answers the same plan (what a planner test double needs, no more)."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    @property
    def model(self) -> str:
        return "test/one-plan"

    async def complete(self, request: ModelRequest) -> ModelReply:
        self.asked.append(request.messages[-1].content)
        return ModelReply(data={"strategy": "Count.", "steps": STEPS[:1]}, model=self.model)


@pytest.mark.anyio
async def test_store_caller_and_planner_are_injected(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, servers=("text", "stats")))
    model = _OnePlanModel()
    agents: list[str] = []

    def planner_for(agent: AgentConfig) -> ModelPlanner:
        agents.append(agent.name)
        return ModelPlanner(model)

    async with (
        await SqliteStore.open(tmp_path / "mine.db") as store,
        Pool(config.servers, log_dir=tmp_path / "logs") as pool,
    ):
        orch = TaskOrchestrator(config, store=store, caller=pool, planner_for=planner_for)
        async with orch:
            assert orch.pool is None  # the caller given is used; no pool of its own
            plan = await orch.create_task_plan("count the words of one two three")
            await orch.confirm_task_plan(plan.plan_id, plan_hash=plan.plan_hash)
            report = await orch.execute_task_plan(plan.plan_id)
        assert report.status is PlanStatus.COMPLETED
        assert report.steps[0].output["words"] == 3
        assert agents == ["default"] and len(model.asked) == 1
        # The store is the caller's: still open, and holding the plan.
        assert (await store.get_plan(plan.plan_id)).status is PlanStatus.COMPLETED


@pytest.mark.anyio
async def test_opened_to_read_it_reads_and_says_what_it_cannot_do(orch: TaskOrchestrator) -> None:
    plan = await orch.create_task_plan("count", steps=STEPS[:1])
    reader = TaskOrchestrator(orch.config, store=orch.store, connect=False, engine=False)
    async with reader:
        assert reader.pool is None
        assert [p.plan_id for p in (await reader.list_task_plans()).plans] == [plan.plan_id]
        assert (await reader.get_task_plan(plan.plan_id)).steps[0].status.value == "pending"
        await reader.confirm_task_plan(plan.plan_id, plan_hash=plan.plan_hash)
        with pytest.raises(UserError, match="without the run engine"):
            await reader.execute_task_plan(plan.plan_id)
    # What the reader decided is what the engine runs.
    report = await orch.execute_task_plan(plan.plan_id)
    assert report.status is PlanStatus.COMPLETED
