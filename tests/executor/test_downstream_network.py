"""The pool against fixture servers over streamable HTTP, SSE and WebSocket on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from executor.downstream import Pool
from executor.errors import ErrorKind, ToolCallError
from tests.fixtures.helpers import ProgressLog, wait_for_marker
from tests.fixtures.launch import NetworkKind, network_server

pytestmark = pytest.mark.anyio

KINDS: list[NetworkKind] = ["http", "sse", "ws"]


@pytest.mark.parametrize("kind", KINDS)
async def test_calls_progress_and_cancellation(kind: NetworkKind, tmp_path: Path) -> None:
    async with network_server(kind, name="remote") as server, Pool({"r": server.spec()}) as pool:
        catalog = await pool.catalog()
        assert ("r", "echo") in catalog
        assert (await pool.call("r", "whoami", {})).output() == {"result": "remote"}
        [health] = pool.health()
        assert health.status == "up" and health.protocol_version == "2026-07-28"
        assert health.transport == {"http": "http", "sse": "sse", "ws": "websocket"}[kind]

        log = ProgressLog()
        result = await pool.call("r", "slow", {"steps": 3, "delay": 0.01}, on_progress=log)
        assert result.text() == "done after 3 steps"
        assert [p for p, _, _ in log.reports] == [1.0, 2.0, 3.0]

        with pytest.raises(ToolCallError) as invalid:
            await pool.call("r", "reject", {"message": "bad x"})
        assert (invalid.value.kind, invalid.value.message) == (ErrorKind.INVALID_ARGUMENTS, "bad x")

        marker = tmp_path / "marker"
        with pytest.raises(ToolCallError) as timeout:
            await pool.call("r", "hang", {"marker": str(marker)}, timeout_s=0.5)
        assert timeout.value.kind is ErrorKind.TIMEOUT
        await wait_for_marker(marker, "cancelled")
        assert (await pool.call("r", "echo", {"text": "still up"})).text() == "still up"


@pytest.mark.parametrize("kind", KINDS)
async def test_bearer_tokens_401_and_403(kind: NetworkKind) -> None:
    async with network_server(kind, token="s3cret", weak_token="visitor") as server:
        servers = {
            "ok": server.spec("s3cret"),
            "none": server.spec(),
            "weak": server.spec("visitor"),
        }
        async with Pool(servers) as pool:
            assert (await pool.call("ok", "echo", {"text": "in"})).text() == "in"

            with pytest.raises(ToolCallError) as unauthenticated:
                await pool.call("none", "echo", {"text": "x"})
            assert unauthenticated.value.kind is ErrorKind.AUTHENTICATION
            assert "401" in unauthenticated.value.message
            assert "a valid bearer token is required" in unauthenticated.value.message

            with pytest.raises(ToolCallError) as forbidden:
                await pool.call("weak", "echo", {"text": "x"})
            assert forbidden.value.kind is ErrorKind.AUTHORIZATION
            assert "403" in forbidden.value.message
            assert "may not use" in forbidden.value.message

            # The token never shows in what the pool reports.
            for health in pool.health():
                assert "s3cret" not in repr(health) and "visitor" not in repr(health)


@pytest.mark.parametrize("kind", KINDS)
async def test_reconnects_after_the_server_comes_back(kind: NetworkKind) -> None:
    async with network_server(kind) as server, Pool({"r": server.spec()}) as pool:
        assert (await pool.call("r", "echo", {"text": "before"})).text() == "before"
        await server.kill()
        with pytest.raises(ToolCallError) as down:
            await pool.call("r", "echo", {"text": "during"})
        assert down.value.kind is ErrorKind.NETWORK
        await server.start()
        assert (await pool.call("r", "echo", {"text": "after"})).text() == "after"
        [health] = pool.health()
        assert health.status == "up" and health.restarts >= 1


@pytest.mark.parametrize("kind", KINDS)
async def test_a_dropped_connection_fails_the_call_in_flight(
    kind: NetworkKind, tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    async with network_server(kind) as server, Pool({"r": server.spec()}) as pool:
        errors: list[ToolCallError] = []

        async def long_call() -> None:
            try:
                await pool.call("r", "hang", {"marker": str(marker)})
            except ToolCallError as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(long_call)
            await wait_for_marker(marker, "started")
            await server.kill()
        [error] = errors  # failed on the drop, not on its 300 s timeout
        assert error.kind is ErrorKind.NETWORK


async def test_http_on_2025_11_25_resumes_after_a_server_restart(tmp_path: Path) -> None:
    async with (
        network_server("http", legacy=True) as server,
        Pool({"r": server.spec()}) as pool,
    ):
        log = ProgressLog()
        result = await pool.call("r", "slow", {"steps": 2, "delay": 0.01}, on_progress=log)
        assert result.text() == "done after 2 steps" and len(log.reports) == 2
        assert pool.health()[0].protocol_version == "2025-11-25"

        marker = tmp_path / "marker"
        with pytest.raises(ToolCallError) as timeout:
            await pool.call("r", "hang", {"marker": str(marker)}, timeout_s=0.5)
        assert timeout.value.kind is ErrorKind.TIMEOUT
        await wait_for_marker(marker, "cancelled")

        # A restarted server has forgotten our session: the pool opens a new one
        # and sends the refused call again, so the caller never sees the restart.
        await server.kill()
        await server.start()
        assert (await pool.call("r", "echo", {"text": "same call"})).text() == "same call"
        [health] = pool.health()
        assert (health.status, health.restarts) == ("up", 1)
