"""`taskorch serve --http` under abuse: slowloris, a full fd table, an open bind without a token."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import anyio
import httpx
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from tests.e2e.support import (
    ROOT,
    clean_env,
    free_port,
    http_server,
    serve_args,
    structured,
    write_config,
)

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
PARTIAL_REQUEST = b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path, servers=("text",))


def _port(url: str) -> int:
    return int(url.split(":")[2].split("/")[0])


@contextmanager
def _half_open(port: int, count: int) -> Iterator[list[socket.socket]]:
    """`count` connections that send the start of a request and never finish it."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            sock.sendall(PARTIAL_REQUEST)
            socks.append(sock)
        yield socks
    finally:
        for sock in socks:
            sock.close()


def _closed_by_peer(sock: socket.socket) -> bool:
    """Wait (bounded) for the server to close `sock`; False if it never does."""
    sock.settimeout(60)
    try:
        while True:
            if not sock.recv(4096):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


async def _list_tools(url: str) -> list[str]:
    with anyio.fail_after(60):  # bounds a hang on failure; a served client needs far less
        async with Client(streamable_http_client(url)) as client:
            return [t.name for t in (await client.list_tools()).tools]


@pytest.mark.anyio
async def test_slowloris_cannot_starve_a_real_client(tmp_path: Path, config: Path) -> None:
    limits = ["--max-connections", "16", "--request-timeout", "2"]
    # 150 half-open connections against 64 open files: without limits the fd
    # table fills and a real client is never even accepted.
    with (
        http_server(config, tmp_path / "t.db", extra_args=limits, fd_limit=64) as url,
        _half_open(_port(url), 150) as socks,
    ):
        assert "execute_plan" in await _list_tools(url)
        # Every half-open connection is closed by the server: the oldest when
        # newer ones came over the limit, the rest when the request timeout ran out.
        still_open = [i for i, sock in enumerate(socks) if not _closed_by_peer(sock)]
        assert not still_open, f"{len(still_open)} half-open connections were never closed"
        # And the server still serves.
        assert "execute_plan" in await _list_tools(url)


@pytest.mark.anyio
async def test_a_request_trickled_byte_by_byte_is_cut_off(tmp_path: Path, config: Path) -> None:
    limits = ["--request-timeout", "1"]
    with http_server(config, tmp_path / "t.db", extra_args=limits) as url:
        stream = await anyio.connect_tcp("127.0.0.1", _port(url))
        sent = 0
        with anyio.fail_after(60):  # bounds a hang on failure
            async with stream:
                # A byte at a time, steadily: an idle timeout alone would never fire.
                for byte in PARTIAL_REQUEST * 1000:
                    try:
                        await stream.send(bytes([byte]))
                    except (anyio.BrokenResourceError, OSError):
                        break
                    sent += 1
                    await anyio.sleep(0.02)
                else:
                    pytest.fail("the server kept a trickling request open")
        assert sent < len(PARTIAL_REQUEST) * 1000
        assert "execute_plan" in await _list_tools(url)


def _serve(
    tmp_path: Path, config: Path, *args: str, token: str | None = None
) -> subprocess.Popen[str]:
    env = clean_env()
    if token is not None:
        env["TASKORCH_TOKEN"] = token
    return subprocess.Popen(
        [sys.executable, *serve_args(config, tmp_path / "t.db", "--http", *args)],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _finish(proc: subprocess.Popen[str]) -> tuple[int | None, str]:
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate(timeout=10)
        return None, err
    return proc.returncode, err


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_a_non_loopback_bind_without_a_token_is_refused(
    tmp_path: Path, config: Path, host: str
) -> None:
    proc = _serve(tmp_path, config, "--host", host, "--port", str(free_port()))
    code, err = _finish(proc)
    assert code == 2, f"serve did not refuse (exit {code}): {err[-2000:]}"
    assert "without a bearer token" in err
    assert "TASKORCH_TOKEN" in err and "--insecure-no-token" in err


def _wait_answering(url: str, proc: subprocess.Popen[str], headers: dict[str, str]) -> int:
    for _ in range(600):
        if proc.poll() is not None:
            break
        with suppress(httpx.TransportError):
            response = httpx.post(
                url, content=json.dumps(INIT), headers={**HEADERS, **headers}, timeout=10
            )
            return response.status_code
        time.sleep(0.1)
    raise AssertionError(f"serve exited or never answered: {_finish(proc)[1][-2000:]}")


def test_an_open_bind_needs_a_token_and_checks_it(tmp_path: Path, config: Path) -> None:
    port = free_port()
    proc = _serve(tmp_path, config, "--host", "0.0.0.0", "--port", str(port), token="s3cret-t0ken")
    try:
        url = f"http://127.0.0.1:{port}/mcp"
        # A peer naming a loopback Host is still asked for the token.
        assert _wait_answering(url, proc, {"Host": "127.0.0.1"}) == 401
        assert _wait_answering(url, proc, {"Authorization": "Bearer s3cret-t0ken"}) == 200
    finally:
        proc.terminate()
        _finish(proc)


def test_an_open_bind_without_a_token_can_be_forced_with_a_warning(
    tmp_path: Path, config: Path
) -> None:
    port = free_port()
    proc = _serve(tmp_path, config, "--host", "0.0.0.0", "--port", str(port), "--insecure-no-token")
    try:
        assert _wait_answering(f"http://127.0.0.1:{port}/mcp", proc, {}) == 200
    finally:
        proc.terminate()
        _, err = _finish(proc)
    assert "WARNING" in err and "without a bearer token" in err


@pytest.mark.parametrize(
    ("option", "value"),
    [("--max-connections", "0"), ("--request-timeout", "0"), ("--keep-alive", "-1")],
)
def test_http_limits_are_checked(tmp_path: Path, config: Path, option: str, value: str) -> None:
    proc = _serve(tmp_path, config, "--port", str(free_port()), option, value)
    code, err = _finish(proc)
    assert code == 2, err[-2000:]
    assert option in err


@pytest.mark.anyio
async def test_the_http_token_is_scrubbed_from_what_servers_send(
    tmp_path: Path, config: Path
) -> None:
    token = "s3cret-t0ken-for-this-test"
    text = f"Our token is {token} today. Keep it safe."
    steps = [{"id": "s", "server": "text", "tool": "summarize", "arguments": {"text": text}}]
    with http_server(config, tmp_path / "t.db", token=token) as url:
        http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
        async with http, Client(streamable_http_client(url, http_client=http)) as client:
            plan = structured(await client.call_tool("create_plan", {"query": "q", "steps": steps}))
            ids = {"plan_id": plan["plan_id"], "plan_hash": plan["plan_hash"]}
            structured(await client.call_tool("confirm_plan", ids))
            report = structured(
                await client.call_tool("execute_plan", {"plan_id": plan["plan_id"]})
            )
    output = json.dumps(report["steps"][0]["output"])
    assert "Our token is [redacted] today." in output
    assert token not in output
