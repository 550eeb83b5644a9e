"""`plans`, `show` and `watch` answered straight from the database print what the full commands do.

Each command runs as a user runs it (`taskorch ...` in a child process, which
takes the quick way for these lines) and as the full typer command (the same
`app` without the quick way), on one database holding plans in several states:
the two outputs must be the same, byte for byte. What the quick way leaves to
the full command (an unknown plan, a config only its whole reading can judge,
a database of another schema, or another program's) still gets the full
command's answer, and a quick read writes nothing to the database.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from executor import PlanStatus
from server.config import TaskorchConfig
from server.service import TaskOrchestrator
from tests.e2e.support import ROOT, clean_env

_FULL = "import sys; sys.argv[0] = 'taskorch'; from server.cli.commands import app; app()"


def _step(step_id: str, tool: str, **arguments: Any) -> dict[str, Any]:
    return {"id": step_id, "server": "taskorch", "tool": tool, "arguments": arguments}


_TWO_STEPS = [
    _step("greet", "format", template="hello {who}", values={"who": "world"}),
    _step("shout", "format", template="{t}!", values={"t": "${greet.text}"}),
]
_FAILING = [_step("pick", "select", value="not json", path="a")]
_LARGE = [_step("big", "format", template="x" * 20_000, values={})]
_STATUS = {
    "completed": PlanStatus.COMPLETED,
    "failed": PlanStatus.FAILED,
    "large": PlanStatus.COMPLETED,
    "waiting": PlanStatus.AWAITING_CONFIRMATION,
    "rejected": PlanStatus.REJECTED,
}


@pytest.fixture(scope="module")
def plans(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A database with a completed, a failed, a large-output, a waiting and a rejected plan."""
    import anyio

    db = tmp_path_factory.mktemp("db") / "t.db"

    async def run(orch: TaskOrchestrator, query: str, steps: list[dict[str, Any]]) -> str:
        plan = await orch.create_task_plan(query, session_id="s1", steps=steps)
        await orch.confirm_task_plan(plan.plan_id, plan_hash=plan.plan_hash)
        await orch.execute_task_plan(plan.plan_id)
        return plan.plan_id

    async def make() -> dict[str, str]:
        async with TaskOrchestrator(TaskorchConfig(), db_path=db, resume=False) as orch:
            ids = {
                "completed": await run(orch, "say hello twice", _TWO_STEPS),
                "failed": await run(orch, "pick a key\nfrom text", _FAILING),
                "large": await run(orch, "a long text", _LARGE),
            }
            waiting = await orch.create_task_plan("wait for me", steps=_TWO_STEPS)
            ids["waiting"] = waiting.plan_id
            rejected = await orch.create_task_plan("reject me", steps=_FAILING)
            await orch.confirm_task_plan(rejected.plan_id, approve=False, reason="no")
            ids["rejected"] = rejected.plan_id
            for name, status in _STATUS.items():
                assert (await orch.get_task_plan(ids[name])).status is status
            return ids

    return db, anyio.run(make)


def _cli(
    *args: str, full: bool = False, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    way = ["-c", _FULL] if full else ["-m", "server.cli"]
    return subprocess.run(
        [sys.executable, *way, *args],
        cwd=ROOT,
        env={**(env or clean_env()), "COLUMNS": "120"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _where(tmp_path: Path, db: Path, config: str = "{}") -> list[str]:
    path = tmp_path / "config.json"
    path.write_text(config, encoding="utf-8")
    return ["--db", str(db), "--config", str(path)]


def _same(args: list[str]) -> subprocess.CompletedProcess[str]:
    quick, full = _cli(*args), _cli(*args, full=True)
    assert (quick.returncode, quick.stdout) == (full.returncode, full.stdout)
    assert quick.returncode == 0, quick.stderr
    assert quick.stdout.strip()
    return quick


@pytest.mark.parametrize(
    "filters",
    [
        [],
        ["--status", "failed"],
        ["--status", "completed", "--status=failed", "--limit", "1"],
        ["--session", "s1"],
        ["--session=nobody"],
    ],
)
def test_plans_prints_what_the_full_command_prints(
    tmp_path: Path, plans: tuple[Path, dict[str, str]], filters: list[str]
) -> None:
    db, ids = plans
    listed = _same(["plans", *filters, *_where(tmp_path, db)])
    if not filters:
        assert all(i in listed.stdout for i in ids.values())
        assert "5 plan(s)" in listed.stdout


@pytest.mark.parametrize("name", ["completed", "failed", "large", "waiting", "rejected"])
def test_show_prints_what_the_full_command_prints(
    tmp_path: Path, plans: tuple[Path, dict[str, str]], name: str
) -> None:
    db, ids = plans
    shown = _same(["show", ids[name], *_where(tmp_path, db)])
    expected = {
        "completed": "after greet",
        "failed": "tool_error",
        "large": "20,011 bytes: plan://",
        "waiting": "confirm_plan(",
        "rejected": "rejected",
    }[name]
    assert expected in shown.stdout
    if name == "completed":
        _same(["show", ids[name], "--version", "1", *_where(tmp_path, db)])


@pytest.mark.parametrize("name", ["completed", "failed", "large", "waiting", "rejected"])
def test_watch_of_a_settled_plan_prints_what_the_full_command_prints(
    tmp_path: Path, plans: tuple[Path, dict[str, str]], name: str
) -> None:
    db, ids = plans
    watched = _same(["watch", ids[name], *_where(tmp_path, db)])
    assert watched.stdout.rstrip().endswith(f"plan {ids[name]}: {_STATUS[name].value}")


def test_a_quick_read_writes_nothing(tmp_path: Path, plans: tuple[Path, dict[str, str]]) -> None:
    db, ids = plans
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    for args in (["plans"], ["show", ids["completed"]], ["watch", ids["failed"]]):
        assert _cli(*args, *_where(tmp_path, db)).returncode == 0
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    # SQLite's readers of a WAL database may leave its log behind, empty: nothing was logged.
    log = db.with_name(f"{db.name}-wal")
    assert not log.exists() or log.stat().st_size == 0


def test_unknown_plans_and_versions_get_the_full_commands_errors(
    tmp_path: Path, plans: tuple[Path, dict[str, str]]
) -> None:
    db, ids = plans
    where = _where(tmp_path, db)
    unknown, full = _cli("show", "nope", *where), _cli("show", "nope", *where, full=True)
    assert unknown.returncode != 0 and "no plan with id 'nope'" in unknown.stderr
    assert (unknown.returncode, unknown.stderr) == (full.returncode, full.stderr)
    version = _cli("show", ids["completed"], "--version", "9", *where)
    assert version.returncode != 0 and "its versions are 1" in version.stderr
    watched = _cli("watch", "nope", *where)
    assert watched.returncode != 0 and "no plan with id 'nope'" in watched.stderr
    status = _cli("plans", "--status", "finished", *where)
    assert status.returncode == 2 and "unknown status" in status.stderr


def test_the_config_is_read_for_the_database_and_its_top_level_keys(
    tmp_path: Path, plans: tuple[Path, dict[str, str]]
) -> None:
    db, ids = plans
    # The config's `database`, relative to the config file, is the one read.
    (tmp_path / "sub").mkdir()
    relative = tmp_path / "sub" / "config.json"
    relative.write_text(json.dumps({"database": os.path.relpath(db, relative.parent)}))
    listed = _cli("plans", "--config", str(relative))
    assert listed.returncode == 0 and ids["completed"] in listed.stdout
    # A misspelt top-level key could send a read to the wrong database: it is pointed out.
    misspelt = tmp_path / "misspelt.json"
    misspelt.write_text('{"databse": "x.db"}')
    warned = _cli("plans", "--config", str(misspelt), "--db", str(db))
    assert warned.returncode == 0 and "did you mean 'database'?" in warned.stderr
    # Server entries are not a read's business: `config check` judges them.
    wrong_server = tmp_path / "wrong.json"
    wrong_server.write_text('{"mcpServers": {"x": {"comand": "y"}}}')
    read = _cli("plans", "--config", str(wrong_server), "--db", str(db))
    assert read.returncode == 0 and ids["completed"] in read.stdout
    checked = _cli("config", "check", "--config", str(wrong_server))
    assert checked.returncode == 2 and "comand" in checked.stderr


def test_databases_it_cannot_read_as_they_are_get_the_full_commands_answer(
    tmp_path: Path, plans: tuple[Path, dict[str, str]]
) -> None:
    db, _ = plans
    # A new file: the full command creates the database and lists nothing.
    fresh = tmp_path / "new" / "t.db"
    first = _cli("plans", *_where(tmp_path, fresh))
    assert first.returncode == 0 and "0 plan(s)" in first.stdout
    assert fresh.exists()
    # A newer schema is refused, by the full command, naming both versions.
    newer = tmp_path / "newer.db"
    newer.write_bytes(db.read_bytes())
    with sqlite3.connect(newer) as conn:
        conn.execute("PRAGMA user_version = 999")
    conn.close()
    refused = _cli("plans", *_where(tmp_path, newer))
    assert refused.returncode != 0 and "schema version 999" in refused.stderr
    # Another program's database is left alone, said so.
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
    conn.close()
    foreign = _cli("plans", *_where(tmp_path, other))
    assert foreign.returncode != 0 and "not a taskorch one" in foreign.stderr
