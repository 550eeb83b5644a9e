"""OAuth to a downstream HTTP server: a person's login, tokens that renew, and what fails how.

The downstream is an OAuth-protected MCP server with its own authorization
server on another port (tests/fixtures/oauth_server.py, on the SDK's server
auth support); taskorch discovers the latter from the former's metadata.
`taskorch auth login` runs as a person would run it; the test plays the
browser by following the printed URL (the test authorization server approves
at once and redirects to taskorch's callback on 127.0.0.1). Plans run through
a real `taskorch serve` over stdio, which never sees the login happen: it
reads the token file the login wrote.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client
from mcp.client.stdio import stdio_client

from tests.e2e.support import ROOT, clean_env, run_cli, serve_params, structured
from tests.fixtures.launch import FIXTURES

pytestmark = pytest.mark.anyio

SERVICE_ID = "reporter"
SERVICE_SECRET = "s3rvice-secret-for-tests"


@contextmanager
def oauth_servers() -> Iterator[tuple[str, str]]:
    """The protected MCP server's URL and its authorization server's issuer."""
    proc = subprocess.Popen(
        [sys.executable, str(FIXTURES / "oauth_server.py"), "--service-secret", SERVICE_SECRET],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("ready "), line
        _, resource, issuer = line.split()
        yield resource, issuer
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def _config(tmp_path: Path, resource: str, issuer: str, *only: str) -> Path:
    servers = {
        "tracker": {"url": resource, "auth": {"type": "authorization_code"}},
        "reports": {
            "url": resource,
            "auth": {
                "type": "client_credentials",
                "clientId": SERVICE_ID,
                "clientSecret": "${REPORTS_SECRET}",
                "issuer": issuer,
            },
        },
    }
    chosen = {name: entry for name, entry in servers.items() if name in only or not only}
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"mcpServers": chosen}), encoding="utf-8")
    return path


def _env(tmp_path: Path, secret: str = SERVICE_SECRET) -> dict[str, str]:
    env = clean_env()
    env["TASKORCH_OAUTH_DIR"] = str(tmp_path / "oauth")
    env["REPORTS_SECRET"] = secret
    return env


def _browser_login(config: Path, env: dict[str, str]) -> str:
    """Run `taskorch auth login tracker`, doing what the person's browser would do."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "auth", "login", "tracker", "--config", str(config)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    shown: list[str] = []
    for line in proc.stdout:
        shown.append(line)
        if line.strip().startswith("http://"):
            break
    url = shown[-1].strip()
    assert "/authorize?" in url, "".join(shown)
    assert "code_challenge_method=S256" in url  # PKCE
    # The browser: follow the authorization server's redirect back to taskorch's callback.
    page = httpx.get(url, follow_redirects=True, timeout=30)
    assert page.status_code == 200
    assert "logged in to tracker" in page.text
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, "".join(shown) + out
    return "".join(shown) + out


class Session:
    """A `taskorch serve` over stdio, running one-step plans."""

    def __init__(self, client: Client) -> None:
        self.client = client

    async def run(self, server: str, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        steps = [{"id": "s1", "server": server, "tool": tool, "arguments": arguments}]
        created = structured(
            await self.client.call_tool("create_plan", {"query": "oauth", "steps": steps})
        )
        await self.client.call_tool(
            "confirm_plan", {"plan_id": created["plan_id"], "plan_hash": created["plan_hash"]}
        )
        report = structured(
            await self.client.call_tool(
                "execute_plan", {"plan_id": created["plan_id"], "wait": True}
            )
        )
        step: dict[str, Any] = report["steps"][0]
        return step


@asynccontextmanager
async def serve(config: Path, db: Path, env: dict[str, str], log: Path) -> AsyncIterator[Session]:
    params = serve_params(config, db, "--log-level", "INFO")
    params.env = env
    with log.open("w") as errlog, anyio.fail_after(120):
        async with Client(stdio_client(params, errlog=errlog)) as client:
            yield Session(client)


def _stats(issuer: str) -> dict[str, Any]:
    data: dict[str, Any] = httpx.get(f"{issuer}/control/stats", timeout=10).json()
    return data


def _control(issuer: str, what: str) -> None:
    httpx.post(f"{issuer}/control/{what}", timeout=10).raise_for_status()


def _read_all(*paths: Path) -> bytes:
    return b"".join(p.read_bytes() for p in paths if p.exists())


async def test_login_then_tokens_renew_by_themselves_until_revoked(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    log = tmp_path / "serve.log"
    with oauth_servers() as (resource, issuer):
        config = _config(tmp_path, resource, issuer, "tracker")
        env = _env(tmp_path)
        # Not logged in yet: the server is down, and the reason says what to run.
        check = run_cli("config", "check", "--config", str(config), env=env)
        assert check.returncode == 1
        assert "taskorch auth login tracker" in " ".join(check.stdout.split())
        async with serve(config, db, env, log) as session:
            said = _browser_login(config, env)
            files = list((tmp_path / "oauth").glob("tracker-*.json"))
            assert len(files) == 1
            assert str(files[0]) in said
            if os.name == "posix":
                assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
                assert stat.S_IMODE(files[0].parent.stat().st_mode) == 0o700
            assert _stats(issuer)["grants"] == {"authorization_code": 1}

            # The running server (started before the login) uses it at once.
            step = await session.run("tracker", "whoami", {})
            assert step["status"] == "succeeded", step
            assert step["output"]["subject"] == "ada"

            # The access token stops working (revoked or expired early at the server):
            # refreshed on the 401, and the call goes through.
            _control(issuer, "expire")
            step = await session.run("tracker", "add", {"a": 2, "b": 3})
            assert step["status"] == "succeeded", step
            assert step["output"] == {"result": 5}
            assert _stats(issuer)["grants"] == {"authorization_code": 1, "refresh_token": 1}

            # The token's own expiry passes: refreshed before it is even sent.
            record = json.loads(files[0].read_text())
            record["expires_at"] = 1.0
            files[0].write_text(json.dumps(record))
            step = await session.run("tracker", "add", {"a": 1, "b": 1})
            assert step["status"] == "succeeded", step
            assert _stats(issuer)["grants"] == {"authorization_code": 1, "refresh_token": 2}

            # Everything revoked: only a person can help, and the error says how.
            _control(issuer, "revoke")
            step = await session.run("tracker", "add", {"a": 1, "b": 1})
            assert step["status"] == "failed"
            assert step["error"]["kind"] == "authentication"
            assert "taskorch auth login tracker" in step["error"]["message"]
            answers = json.dumps(step)
        issued = _stats(issuer)["issued"]
    # No token ever reaches the database, the logs or an answer.
    assert len(issued) >= 6
    seen = _read_all(db, db.with_name(db.name + "-wal"), log) + answers.encode()
    leaked = [token for token in issued if token.encode() in seen]
    assert leaked == []


async def test_client_credentials_fetch_tokens_and_a_wrong_secret_says_what_to_check(
    tmp_path: Path,
) -> None:
    db = tmp_path / "t.db"
    with oauth_servers() as (resource, issuer):
        config = _config(tmp_path, resource, issuer, "reports")
        async with serve(config, db, _env(tmp_path), tmp_path / "serve.log") as session:
            step = await session.run("reports", "whoami", {})
            assert step["status"] == "succeeded", step
            assert step["output"]["client_id"] == SERVICE_ID
            assert _stats(issuer)["grants"] == {"client_credentials": 1}
            # The token stops working: a new one is fetched with the credentials.
            _control(issuer, "expire")
            step = await session.run("reports", "add", {"a": 2, "b": 2})
            assert step["status"] == "succeeded", step
            assert _stats(issuer)["grants"] == {"client_credentials": 2}

        wrong = "not-the-secret-at-all"
        env = _env(tmp_path, secret=wrong)
        env["TASKORCH_OAUTH_DIR"] = str(tmp_path / "no-tokens")  # nothing to fall back on
        check = run_cli("config", "check", "--config", str(config), "--log-level", "DEBUG", env=env)
        assert check.returncode == 1
        said = " ".join(check.stdout.split())
        assert "client credentials" in said
        assert "auth.client_secret" in said
        assert _stats(issuer)["grants"] == {"client_credentials": 2}
        issued = _stats(issuer)["issued"]
    seen = _read_all(db, db.with_name(db.name + "-wal"), tmp_path / "serve.log")
    seen += (json.dumps(step) + check.stdout + check.stderr).encode()
    for secret in (SERVICE_SECRET, wrong, *issued):
        assert secret.encode() not in seen
