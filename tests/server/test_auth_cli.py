"""`taskorch auth`: what it says for each kind of server, without a token or a secret in it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from server.cli import app
from tests.e2e.support import clean_env, run_cli

SECRET = "s3rvice-secret-for-tests"


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TASKORCH_OAUTH_DIR", str(tmp_path / "oauth"))
    monkeypatch.setenv("REPORTS_SECRET", SECRET)
    servers = {
        "tracker": {"url": "http://127.0.0.1:9/mcp", "auth": {"type": "authorization_code"}},
        "reports": {
            "url": "http://127.0.0.1:9/mcp",
            "auth": {
                "type": "client_credentials",
                "client_id": "reporter",
                "client_secret": "${REPORTS_SECRET}",
                "issuer": "http://127.0.0.1:9",
            },
        },
        "plain": {"url": "http://127.0.0.1:9/mcp"},
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"mcpServers": servers}), encoding="utf-8")
    return path


def _cli(config: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["auth", *args, "--config", str(config)])
    return result.exit_code, result.stdout, result.stderr


def test_status_names_what_to_run_and_never_a_secret(config: Path) -> None:
    code, out, _ = _cli(config, "status")
    assert code == 0
    assert "tracker: not logged in (run `taskorch auth login tracker`)" in out
    assert "reports: no token yet [client credentials" in out
    assert "plain" not in out
    assert SECRET not in out


def test_login_explains_what_it_cannot_do(config: Path) -> None:
    code, _, err = _cli(config, "login", "nope")
    assert code == 2
    assert "no server named 'nope'" in err
    code, _, err = _cli(config, "login", "plain")
    assert code == 2
    assert "does not use OAuth" in err
    code, out, _ = _cli(config, "login", "reports")
    assert code == 0
    assert "client credentials" in out
    code, _, err = _cli(config, "login", "tracker", "--timeout", "5")
    assert code == 1
    assert "cannot reach http://127.0.0.1:9/mcp" in err
    code, out, _ = _cli(config, "logout", "tracker")
    assert (code, out.strip()) == (0, "No tokens were stored for tracker.")


def test_an_authorization_header_and_auth_together_are_refused(tmp_path: Path) -> None:
    entry = {
        "url": "http://127.0.0.1:9/mcp",
        "headers": {"Authorization": "Bearer abcdefgh12345"},
        "auth": {"type": "authorization_code"},
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"mcpServers": {"both": entry}}), encoding="utf-8")
    result = CliRunner().invoke(app, ["auth", "status", "--config", str(path)])
    assert result.exit_code == 2
    assert "both an Authorization header and auth" in result.stderr
    assert "abcdefgh12345" not in result.stderr + result.stdout


def test_the_console_entry_routes_auth_to_its_group(config: Path, tmp_path: Path) -> None:
    # `main` reads plain lines of top-level commands itself; `auth` is a group, left to typer.
    env = clean_env()
    env.update(TASKORCH_OAUTH_DIR=str(tmp_path / "oauth"), REPORTS_SECRET=SECRET)
    done = run_cli("auth", "status", "--config", str(config), env=env)
    assert done.returncode == 0, done.stderr
    assert "tracker: not logged in" in done.stdout
    assert SECRET not in done.stdout + done.stderr
