"""A server that is configured but down says so, with why; `config check` fits 80 columns."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from executor.errors import PlanValidationError
from server.config import load_config
from server.service import TaskOrchestrator
from tests.e2e.support import clean_env, run_cli, write_config

_WHY = "cannot open the database at /var/lib/nothing/here.db: permission denied, check the path"
BROKEN = {
    "command": sys.executable,
    "args": ["-c", f"import sys; print({_WHY!r}, file=sys.stderr); sys.exit(3)"],
}


@pytest.mark.anyio
async def test_a_step_on_a_server_that_is_down_says_it_is_down_and_why(tmp_path: Path) -> None:
    config = load_config(
        write_config(tmp_path, servers=("text",), extra_servers={"broken": BROKEN})
    )
    async with TaskOrchestrator(config, db_path=tmp_path / "t.db", resume=False) as orch:
        with pytest.raises(PlanValidationError) as caught:
            await orch.create_task_plan(
                "use the broken one",
                steps=[{"id": "a", "server": "broken", "tool": "anything"}],
            )
    message = str(caught.value)
    assert "there is no server" not in message
    assert "'broken' is configured but down" in message
    assert "exited with code 3" in message
    assert "permission denied" in message
    # A server that is not configured at all is still named as unknown.
    async with TaskOrchestrator(config, db_path=tmp_path / "t.db", resume=False) as orch:
        with pytest.raises(PlanValidationError, match="there is no server 'nope'"):
            await orch.create_task_plan("q", steps=[{"id": "a", "server": "nope", "tool": "x"}])


def test_config_check_fits_80_columns_with_reasons_as_paragraphs(tmp_path: Path) -> None:
    config = write_config(tmp_path, servers=("text",), extra_servers={"broken": BROKEN})
    checked = run_cli(
        "config",
        "check",
        "--config",
        str(config),
        "--db",
        str(tmp_path / "t.db"),
        env={**clean_env(), "COLUMNS": "80"},
    )
    assert checked.returncode == 1
    lines = checked.stdout.splitlines()
    too_wide = [line for line in lines if len(line) > 80]
    assert too_wide == []
    table = [line for line in lines if "│" in line]
    assert any("text" in line and "up" in line for line in table)
    assert any("broken" in line and "down" in line for line in table)
    # The reason is a paragraph under the table, not folded into a narrow column.
    assert any("exited with code 3 during startup" in line for line in lines)
    assert not any("exited with code 3" in line for line in table)
    text = " ".join(line.strip() for line in lines)
    assert _WHY in text
    assert "1 server(s) not up: broken" in checked.stderr
