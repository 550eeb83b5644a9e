"""Read commands load neither the MCP SDK, litellm, OpenTelemetry nor the pool.

Nor what else they do not use: the run engine (but `watch`), the argument
checker (jsonschema), the built-in steps, or the service's planning, step
outputs and run-following; and they build no schema of a model they never
validate (taskorch's models defer it to first use).

A structural check, no clock: each command runs in a child process as a user
runs it, and what it imported is read from `sys.modules` as the process exits.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from executor import PlanStatus
from server.config import TaskorchConfig, load_config
from server.service import TaskOrchestrator
from tests.e2e.support import ROOT, clean_env

# The MCP SDK (`mcp`, and `mcp_types`, its types), the model library, OpenTelemetry (API
# and SDK: only spans load it), and the downstream pool with its transports.
HEAVY = (
    "mcp",
    "mcp_types",
    "litellm",
    "opentelemetry",
    "executor.downstream.pool",
    "executor.downstream.supervisor",
    "executor.downstream.transports",
)
# The run engine, which only commands that run, cancel or follow runs (`watch`) need.
ENGINE = ("executor.run", "psutil")
# The argument checker, which only running a step or validating a plan needs.
CHECKER = ("jsonschema", "referencing", "executor.validate.arguments")
# The service's parts for planning, for step outputs and for following runs.
SERVICE = ("server.planning", "server.outputs", "planner.host", "planner.models")
FOLLOWING = ("server.progress",)
# PostgreSQL's driver and store, which only a postgresql:// database setting needs.
POSTGRES = ("psycopg", "psycopg_pool", "executor.store.postgres")
# The built-in steps (their catalog validates models at import).
BUILTINS = ("executor.builtins",)
# Models that no read command validates but `watch` and `show --timeline` (attempts,
# the run's analysis), so whose schema the others do not build.
UNUSED_MODELS = {
    "executor.calls.ToolResult",
    "executor.catalog.ToolInfo",
    "executor.downstream.specs.StdioServerSpec",
    "executor.plan.Step",
    "executor.records.AttemptRecord",
    "executor.stats.RunAnalysis",
    "server.views.StepOutputPage",
}

_PROBE = """\
import atexit, json, sys
def _dump():
    built, todo = [], []
    if "pydantic" in sys.modules:
        todo.append(sys.modules["pydantic"].BaseModel)
    while todo:
        for cls in todo.pop().__subclasses__():
            todo.append(cls)
            if cls.__pydantic_complete__:
                built.append(f"{{cls.__module__}}.{{cls.__qualname__}}")
    with open({out!r}, "w", encoding="utf-8") as f:
        json.dump({{"modules": sorted(sys.modules), "built": built}}, f)
atexit.register(_dump)
sys.argv = ["taskorch", *{args!r}]
from server.cli import main
main()
"""


def _imported(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], set[str], set[str]]:
    """The finished command, the modules it imported and the models whose schema it built."""
    out = tmp_path / "modules.json"
    out.unlink(missing_ok=True)
    done = subprocess.run(
        [sys.executable, "-c", _PROBE.format(out=str(out), args=list(args))],
        cwd=ROOT,
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    found = json.loads(out.read_text(encoding="utf-8"))
    return done, set(found["modules"]), set(found["built"])


def _heavy(modules: set[str], heavy: tuple[str, ...] = HEAVY) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(f"{h}.") for h in heavy))


_HELLO = [
    {
        "id": "greet",
        "server": "taskorch",
        "tool": "format",
        "arguments": {"template": "hello {who}", "values": {"who": "world"}},
    }
]


@pytest.fixture(scope="module")
def finished_plan(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A database holding one completed plan (built-in steps only: no server needed)."""
    import anyio

    db = tmp_path_factory.mktemp("db") / "t.db"
    steps = _HELLO

    async def make() -> str:
        async with TaskOrchestrator(TaskorchConfig(), db_path=db, resume=False) as orch:
            plan = await orch.create_task_plan("say hello", steps=steps)
            await orch.confirm_task_plan(plan.plan_id, plan_hash=plan.plan_hash)
            report = await orch.execute_task_plan(plan.plan_id)
            assert report.status is PlanStatus.COMPLETED
            return plan.plan_id

    return db, anyio.run(make)


@pytest.mark.parametrize(
    "command",
    [
        ["--help"],
        ["--version"],
        ["plans"],
        ["show", "{plan}"],
        ["show", "{plan}", "--json"],
        ["show", "{plan}", "--graph"],
        ["show", "{plan}", "--timeline"],
        ["watch", "{plan}"],
        ["stats"],
    ],
    ids=lambda c: " ".join(c).replace("{plan}", "ID"),
)
def test_read_commands_leave_the_sdk_litellm_and_the_pool_unloaded(
    tmp_path: Path, finished_plan: tuple[Path, str], command: list[str]
) -> None:
    db, plan_id = finished_plan
    args = [a.replace("{plan}", plan_id) for a in command]
    if args[0] not in ("--help", "--version"):
        args += ["--db", str(db), "--config", str(tmp_path / "none.json")]
        (tmp_path / "none.json").write_text("{}", encoding="utf-8")
    done, modules, built = _imported(tmp_path, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip(), "the command printed nothing"
    assert _heavy(modules) == []
    assert _heavy(modules, POSTGRES) == []
    assert _heavy(modules, CHECKER + SERVICE) == []
    if args[0] != "watch":
        assert _heavy(modules, ENGINE + FOLLOWING + BUILTINS) == []
    if args[0] != "watch" and "--timeline" not in args:
        assert sorted(built & UNUSED_MODELS) == []


# What `plans`, `show` and `watch` of a settled plan do without (`server.cli.quick`): the
# command-line parser, pydantic and every model, the event loop, the async driver, the service.
QUICK_SKIPS = (
    "typer",
    "click",
    "pydantic",
    "asyncio",
    "anyio",
    "aiosqlite",
    "server.service",
    "server.views",
    "server.config.model",
    "executor.plan",
)


@pytest.mark.parametrize(
    "command", [["plans"], ["show", "{plan}"], ["watch", "{plan}"]], ids=" ".join
)
def test_quick_reads_load_no_parser_no_model_and_no_event_loop(
    tmp_path: Path, finished_plan: tuple[Path, str], command: list[str]
) -> None:
    db, plan_id = finished_plan
    # A config as people have one: servers, an agent, limits (reads only need `database`).
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "mcpServers": {"files": {"command": "npx", "args": ["-y", "some-server"]}},
                "agents": {"reader": {"tool_policy": {"allow": ["files.*"]}}},
                "limits": {"max_parallel_steps": 4},
                "database": str(db),
            }
        ),
        encoding="utf-8",
    )
    assert load_config(config).servers  # a config the full commands take as it is
    args = [a.replace("{plan}", plan_id) for a in command] + ["--config", str(config)]
    done, modules, _ = _imported(tmp_path, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert plan_id in done.stdout
    assert _heavy(modules, QUICK_SKIPS) == []


def test_json_logs_leave_opentelemetry_unloaded_where_no_span_is_made(
    tmp_path: Path, finished_plan: tuple[Path, str]
) -> None:
    db, _ = finished_plan
    (tmp_path / "none.json").write_text("{}", encoding="utf-8")
    env = {**clean_env(), "TASKORCH_LOG_FORMAT": "json"}
    args = (
        "plans",
        "--db",
        str(db),
        "--config",
        str(tmp_path / "none.json"),
        "--log-level",
        "DEBUG",
    )
    done, modules, _ = _imported(tmp_path, *args, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _heavy(modules) == []


@pytest.mark.parametrize("command", [["plans"], ["show", "{plan}"], ["stats"]], ids=" ".join)
def test_read_commands_on_postgresql_load_its_driver_and_still_not_the_sdk(
    tmp_path: Path, pg_url: str, command: list[str]
) -> None:
    import anyio

    async def make() -> str:
        async with TaskOrchestrator(TaskorchConfig(), db_path=pg_url, resume=False) as orch:
            plan = await orch.create_task_plan("say hello", steps=_HELLO)
            return plan.plan_id

    plan_id = anyio.run(make)
    (tmp_path / "none.json").write_text("{}", encoding="utf-8")
    args = [a.replace("{plan}", plan_id) for a in command]
    args += ["--db", pg_url, "--config", str(tmp_path / "none.json")]
    done, modules, _ = _imported(tmp_path, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip(), "the command printed nothing"
    assert _heavy(modules) == [] and _heavy(modules, ENGINE + CHECKER) == []
    assert "executor.store.postgres" in modules


def test_version_is_the_installed_distributions() -> None:
    from importlib.metadata import version

    done = subprocess.run(
        [sys.executable, "-m", "server.cli", "--version"],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"taskorch {version('taskorch')}"
