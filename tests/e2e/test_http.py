"""`taskorch serve --http`: bearer auth, DNS-rebinding protection, and a real session over it."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from tests.e2e.support import http_server, structured, write_config

INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "raw-test", "version": "0"},
    },
}
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def _post(url: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(url, content=json.dumps(INIT), headers={**HEADERS, **headers}, timeout=30)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path, servers=("text",))


def test_a_token_is_required_and_checked(tmp_path: Path, config: Path) -> None:
    with http_server(config, tmp_path / "t.db", token="right-token") as url:
        missing = _post(url, {})
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"].startswith("Bearer")
        assert "Authorization: Bearer" in missing.json()["error_description"]
        wrong = _post(url, {"Authorization": "Bearer wrong-token"})
        assert wrong.status_code == 401
        assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
        assert _post(url, {"Authorization": "Basic cmlnaHQtdG9rZW4="}).status_code == 401
        ok = _post(url, {"Authorization": "Bearer right-token"})
        assert ok.status_code == 200, ok.text
        # A right token does not get past a wrong Host (DNS rebinding).
        rebound = _post(url, {"Authorization": "Bearer right-token", "Host": "evil.example"})
        assert rebound.status_code == 421


def test_wrong_host_or_origin_is_rejected(tmp_path: Path, config: Path) -> None:
    with http_server(config, tmp_path / "t.db") as url:
        port = url.split(":")[2].split("/")[0]
        assert _post(url, {}).status_code == 200
        assert _post(url, {"Host": f"localhost:{port}"}).status_code == 200
        assert _post(url, {"Host": "attacker.example"}).status_code == 421
        assert _post(url, {"Host": f"attacker.example:{port}"}).status_code == 421
        assert _post(url, {"Origin": "http://attacker.example"}).status_code == 403
        assert _post(url, {"Origin": f"http://localhost:{port}"}).status_code == 200


@pytest.mark.anyio
async def test_a_full_session_over_http_with_a_token(tmp_path: Path, config: Path) -> None:
    steps = [{"id": "a", "server": "text", "tool": "slugify", "arguments": {"text": "Über Café"}}]
    with http_server(config, tmp_path / "t.db", token="tok") as url:
        http = create_mcp_http_client(headers={"Authorization": "Bearer tok"})
        async with http, Client(streamable_http_client(url, http_client=http)) as client:
            plan = structured(
                await client.call_tool("create_plan", {"query": "slug", "steps": steps})
            )
            structured(
                await client.call_tool(
                    "confirm_plan", {"plan_id": plan["plan_id"], "plan_hash": plan["plan_hash"]}
                )
            )
            seen: list[float] = []

            async def on_progress(
                progress: float, total: float | None, message: str | None
            ) -> None:
                seen.append(progress)

            report = structured(
                await client.call_tool(
                    "execute_plan", {"plan_id": plan["plan_id"]}, progress_callback=on_progress
                )
            )
        assert report["status"] == "completed"
        assert report["steps"][0]["output"] == {"slug": "uber-cafe"}
        assert seen and seen[-1] == pytest.approx(1.0)
