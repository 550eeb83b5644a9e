"""The `taskorch` command line, run as a user runs it (a child process)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.e2e.support import ROOT, clean_env, run_cli, write_config


def test_run_a_plan_file_then_list_show_and_watch_it(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    db = tmp_path / "t.db"
    common = ["--config", str(config), "--db", str(db)]
    env = clean_env()

    ran = run_cli("run", str(ROOT / "server" / "examples" / "plan.json"), "--yes", *common, env=env)
    assert ran.returncode == 0, ran.stderr
    assert "completed" in ran.stdout
    assert "All 10 steps succeeded" in ran.stdout

    listed = run_cli("plans", *common, env=env)
    assert listed.returncode == 0, listed.stderr
    assert "completed" in listed.stdout
    plan_id = next(
        line.split("│")[1].strip() for line in listed.stdout.splitlines() if "completed" in line
    )

    shown = run_cli("show", plan_id, *common, env=env)
    assert shown.returncode == 0, shown.stderr
    for step in ("store", "read", "count", "keywords", "summary", "save"):
        assert step in shown.stdout
    assert shown.stdout.count("succeeded") == 10
    assert "after read" in shown.stdout

    graph = run_cli("show", plan_id, "--graph", *common, env=env)
    assert graph.stdout.startswith("flowchart TD")
    as_json = run_cli("show", plan_id, "--json", *common, env=env)
    assert json.loads(as_json.stdout)["status"] == "completed"

    # The database can come from TASKORCH_DB instead of --db.
    watched = run_cli(
        "watch", plan_id, "--config", str(config), env={**env, "TASKORCH_DB": str(db)}
    )
    assert watched.returncode == 0, watched.stderr
    assert f"plan {plan_id}: completed" in watched.stdout


def test_plan_confirm_and_run_by_id(tmp_path: Path) -> None:
    config = write_config(tmp_path, servers=("text",))
    common = ["--config", str(config), "--db", str(tmp_path / "t.db")]
    steps = tmp_path / "steps.json"
    steps.write_text(
        json.dumps(
            [
                {"id": "a", "server": "text", "tool": "slugify", "arguments": {"text": "A B"}},
                {
                    "id": "b",
                    "server": "text",
                    "tool": "word_count",
                    "arguments": {"text": "${a.slug}"},
                },
            ]
        )
    )
    env = clean_env()
    made = run_cli("plan", "slug then count", "--steps", str(steps), *common, env=env)
    assert made.returncode == 0, made.stderr
    assert "awaiting_confirmation" in made.stdout
    plan_id = made.stdout.split("plan ", 1)[1].split()[0]
    plan_hash = made.stdout.split("plan_hash: ", 1)[1].split()[0]

    stale = run_cli("confirm", plan_id, "--hash", "v1:00", *common, env=env)
    assert stale.returncode == 2
    assert "changed since it was reviewed" in stale.stderr

    confirmed = run_cli("confirm", plan_id, "--hash", plan_hash, *common, env=env)
    assert confirmed.returncode == 0, confirmed.stderr
    assert "confirmed" in confirmed.stdout

    ran = run_cli("run", plan_id, *common, env=env)
    assert ran.returncode == 0, ran.stderr
    assert '{"slug": "a-b"}' in ran.stdout

    invalid = tmp_path / "bad.json"
    invalid.write_text(json.dumps({"steps": [{"id": "x", "server": "text", "tool": "nope"}]}))
    refused = run_cli("run", str(invalid), "--yes", *common, env=env)
    assert refused.returncode == 2
    assert "step 'x'" in refused.stderr


def test_config_check_reports_each_server_and_fails_when_one_is_down(tmp_path: Path) -> None:
    broken = {"command": sys.executable, "args": ["-c", "import sys; sys.exit('no such server')"]}
    config = write_config(tmp_path, servers=("text",), extra_servers={"broken": broken})
    checked = run_cli(
        "config", "check", "--config", str(config), "--db", str(tmp_path / "t.db"), env=clean_env()
    )
    assert checked.returncode == 1
    assert "text" in checked.stdout and "up" in checked.stdout
    assert "broken" in checked.stdout and "down" in checked.stdout
    assert "1 server(s) not up: broken" in checked.stderr

    healthy = write_config(tmp_path, servers=("text", "clock"))
    ok = run_cli("config", "check", "--config", str(healthy), env=clean_env())
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_a_missing_or_wrong_config_is_a_clear_error(tmp_path: Path) -> None:
    missing = run_cli("plans", "--config", str(tmp_path / "nope.json"), env=clean_env())
    assert missing.returncode == 2
    assert "config file not found" in missing.stderr
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"mcpServers": {"x": {"comand": "y"}}}')
    # A command that uses the servers' entries reads the config whole (`plans` reads only
    # where the database is: see test_cli_quick).
    bad = run_cli("stats", "--config", str(wrong), env=clean_env())
    assert bad.returncode == 2
    assert "comand" in bad.stderr
