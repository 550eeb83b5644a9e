"""Supervision of stdio servers: one session, crash detection, restarts, process groups."""

from __future__ import annotations

import io
import os
import signal
import sys
from pathlib import Path

import anyio
import psutil
import pytest
from rich.console import Console

from executor.downstream import Pool
from executor.downstream.specs import StdioServerSpec
from executor.errors import ErrorKind, ToolCallError
from server.cli.printing import print_health
from tests.fixtures import tiny_server
from tests.fixtures.helpers import eventually, wait_for_marker
from tests.fixtures.launch import (
    TINY_SERVER,
    alive,
    fixture_spec,
    group_members,
    live_descendants,
    our_zombies,
    tiny_spec,
)

pytestmark = pytest.mark.anyio


def tiny_processes() -> list[psutil.Process]:
    """Our running children that are tiny fixture servers."""
    found = []
    for proc in live_descendants():
        try:
            if str(TINY_SERVER) in proc.cmdline():
                found.append(proc)
        except psutil.Error:
            continue
    return found


def pid_of(pool: Pool, server: str) -> int:
    [health] = [h for h in pool.health() if h.name == server]
    assert health.pid is not None
    return health.pid


async def test_concurrent_first_calls_share_one_session() -> None:
    before = len(tiny_processes())
    async with Pool({"tiny": tiny_spec("tiny")}) as pool:
        texts: list[str] = []

        async def echo(n: int) -> None:
            texts.append((await pool.call("tiny", "echo", {"text": str(n)})).text())

        async with anyio.create_task_group() as tg:
            for n in range(6):
                tg.start_soon(echo, n)
        assert sorted(texts) == [str(n) for n in range(6)]
        assert len(tiny_processes()) == before + 1
        [health] = pool.health()
        assert (health.status, health.restarts) == ("up", 0)
        assert health.protocol_version == "2025-11-25"
    assert len(tiny_processes()) == before


async def test_a_crash_fails_the_call_in_flight_and_the_next_use_restarts(
    tmp_path: Path,
) -> None:
    async with Pool({"tiny": tiny_spec("tiny")}, log_dir=tmp_path / "logs") as pool:
        await pool.call("tiny", "echo", {"text": "warm up"})
        first = pid_of(pool, "tiny")
        marker = tmp_path / "marker"
        errors: list[ToolCallError] = []

        async def long_call() -> None:
            try:
                await pool.call("tiny", "sleep", {"seconds": 600, "marker": str(marker)})
            except ToolCallError as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(long_call)
            await wait_for_marker(marker, "started")
            os.kill(first, signal.SIGKILL)
        # The call failed on the crash, not on its 300 s timeout.
        [error] = errors
        assert error.kind is ErrorKind.TOOL_UNAVAILABLE
        assert "was killed by SIGKILL while the call was in flight" in error.message
        assert pool.health()[0].status == "down"

        assert (await pool.call("tiny", "echo", {"text": "again"})).text() == "again"
        [health] = pool.health()
        assert (health.status, health.restarts) == ("up", 1)
        assert health.pid != first
        assert not alive(first)
        log = await anyio.Path(tmp_path / "logs" / "tiny.log").read_text()
        assert f"pid {first} was killed by SIGKILL" in log


async def test_a_crash_reports_the_exit_code_and_last_stderr_lines(tmp_path: Path) -> None:
    async with Pool({"alpha": fixture_spec("alpha")}, log_dir=tmp_path) as pool:
        with pytest.raises(ToolCallError) as crash:
            await pool.call("alpha", "crash", {"code": 7, "message": "out of file descriptors"})
        assert crash.value.kind is ErrorKind.TOOL_UNAVAILABLE
        assert "exited with code 7" in crash.value.message
        assert "out of file descriptors" in crash.value.message
        log = await anyio.Path(tmp_path / "alpha.log").read_text()
        assert "out of file descriptors" in log
        assert oct(os.stat(tmp_path / "alpha.log").st_mode & 0o777) == "0o600"


async def test_a_server_that_keeps_failing_is_reported_down_with_its_stderr() -> None:
    spec = tiny_spec("broken", "--crash-at-start")
    async with Pool({"broken": spec}, restart_backoff_s=60) as pool:
        with pytest.raises(ToolCallError) as first:
            await pool.call("broken", "echo", {"text": "x"})
        assert first.value.kind is ErrorKind.TOOL_UNAVAILABLE
        assert "exited with code 2 during startup" in first.value.message
        assert "fatal: no such database 'prod'" in first.value.message

        # The first restart is immediate; the next one waits out the backoff.
        with pytest.raises(ToolCallError):
            await pool.call("broken", "echo", {"text": "x"})
        with pytest.raises(ToolCallError) as fast:
            await pool.call("broken", "echo", {"text": "x"})
        assert "failed 2 times in a row; next restart attempt in" in fast.value.message
        assert "fatal: no such database 'prod'" in fast.value.message
        assert not tiny_processes()

        [health] = pool.health()
        assert health.status == "down"
        assert health.error is not None and "exited with code 2" in health.error
        assert "tiny: fatal: no such database 'prod'" in health.stderr_tail

        # A check tries again at once, backoff or not, and says the same.
        [checked] = await pool.check()
        assert checked.status == "down"
        assert checked.stderr_tail[-1] == "tiny: fatal: no such database 'prod'"


async def test_check_reports_every_server_and_renders_a_table() -> None:
    servers = {"good": tiny_spec("good"), "broken": tiny_spec("broken", "--crash-at-start")}
    async with Pool(servers) as pool:
        assert [h.status for h in pool.health()] == ["not_started", "not_started"]
        good, broken = await pool.check()
        listed = len(tiny_server.tools())
        assert (good.status, good.tool_count, good.protocol_version) == ("up", listed, "2025-11-25")
        assert good.latency_ms is not None and good.latency_ms > 0
        assert broken.status == "down" and broken.tool_count is None

        out = io.StringIO()
        print_health([good, broken], Console(file=out, width=200, color_system=None))
        text = out.getvalue()
        assert "good" in text and "up" in text and "2025-11-25" in text
        assert "down" in text and "exited with code 2 during startup" in text
        assert "stderr: tiny: fatal: no such database 'prod'" in text


async def test_a_missing_command_is_reported_with_what_to_fix() -> None:
    spec = StdioServerSpec(command="/nonexistent/mcp-server")
    async with Pool({"ghost": spec}) as pool:
        with pytest.raises(ToolCallError) as missing:
            await pool.call("ghost", "anything", {})
        assert missing.value.kind is ErrorKind.TOOL_UNAVAILABLE
        assert "cannot start '/nonexistent/mcp-server'" in missing.value.message
        assert "check `command`" in missing.value.message


async def test_a_server_that_never_answers_the_handshake_times_out() -> None:
    mute = StdioServerSpec(command=sys.executable, args=("-c", "import time; time.sleep(600)"))
    async with Pool(
        {"mute": mute}, connect_timeout_s=1.0, shutdown_grace_s=0.1, kill_grace_s=1.0
    ) as pool:
        with pytest.raises(ToolCallError) as timeout:
            await pool.call("mute", "anything", {})
        assert timeout.value.kind is ErrorKind.TIMEOUT
        assert "did not finish the MCP handshake within 1 s" in timeout.value.message
    assert not [p for p in live_descendants() if "time.sleep(600)" in " ".join(p.cmdline())]


async def test_closing_the_pool_ends_the_whole_process_group() -> None:
    before = {p.pid for p in live_descendants()}
    async with Pool({"alpha": fixture_spec("alpha"), "tiny": tiny_spec("tiny")}) as pool:
        grandchildren = [
            int((await pool.call("alpha", "spawn_child", {})).text()),
            int((await pool.call("tiny", "spawn_child", {})).text()),
        ]
        servers = [pid_of(pool, "alpha"), pid_of(pool, "tiny")]
        for server, grandchild in zip(servers, grandchildren, strict=True):
            assert os.getpgid(server) == server  # a session and group of its own
            assert os.getpgid(grandchild) == server
            assert alive(grandchild)
    for pid in servers + grandchildren:
        assert not alive(pid)
    for server in servers:
        assert group_members(server) == []
    assert {p.pid for p in live_descendants()} <= before
    assert our_zombies() == []


async def test_a_crashed_servers_orphans_are_ended_too() -> None:
    async with Pool({"tiny": tiny_spec("tiny")}) as pool:
        grandchild = int((await pool.call("tiny", "spawn_child", {})).text())
        server = pid_of(pool, "tiny")
        with pytest.raises(ToolCallError):
            await pool.call("tiny", "crash", {})

        async def group_gone() -> bool:
            return not alive(grandchild)

        # The dead session's task cleans its group up without waiting for the pool to close.
        await eventually(group_gone)
        assert group_members(server) == []


async def test_a_server_that_ignores_sigterm_is_killed() -> None:
    spec = tiny_spec("stubborn", "--stubborn")
    async with Pool({"stubborn": spec}, shutdown_grace_s=0.2, kill_grace_s=0.3) as pool:
        await pool.call("stubborn", "echo", {"text": "x"})
        server = pid_of(pool, "stubborn")
    assert not alive(server)
    assert our_zombies() == []


async def test_no_process_is_left_after_open_crash_close_cycles() -> None:
    before = {p.pid for p in live_descendants()}
    started: list[int] = []
    for _ in range(5):
        async with Pool({"tiny": tiny_spec("tiny")}) as pool:
            started.append(int((await pool.call("tiny", "spawn_child", {})).text()))
            started.append(pid_of(pool, "tiny"))
            with pytest.raises(ToolCallError):
                await pool.call("tiny", "crash", {})
            started.append(int((await pool.call("tiny", "spawn_child", {})).text()))
            started.append(pid_of(pool, "tiny"))  # the restarted server
    assert len(set(started)) == 20
    # Orphaned grandchildren are no longer our descendants: check each by pid.
    assert [pid for pid in started if alive(pid)] == []
    assert {p.pid for p in live_descendants()} <= before
    assert our_zombies() == []


async def test_server_stderr_never_reaches_our_own_output(
    capfd: pytest.CaptureFixture[str],
) -> None:
    async with Pool({"alpha": fixture_spec("alpha")}) as pool:
        with pytest.raises(ToolCallError) as crash:
            await pool.call("alpha", "crash", {"message": "a line only for the server log"})
        assert "a line only for the server log" in crash.value.message
    out, err = capfd.readouterr()
    assert "a line only for the server log" not in out + err


async def test_the_pool_must_be_entered() -> None:
    pool = Pool({"tiny": tiny_spec("tiny")})
    with pytest.raises(ToolCallError) as closed:
        await pool.call("tiny", "echo", {"text": "x"})
    assert "async with Pool" in closed.value.message


async def test_an_error_in_the_pool_block_propagates_unwrapped() -> None:
    with pytest.raises(ToolCallError) as raised:
        async with Pool({"tiny": tiny_spec("tiny")}) as pool:
            await pool.call("tiny", "echo", {"text": "x"})
            await pool.call("tiny", "no_such_tool", {})
    assert raised.value.kind is ErrorKind.TOOL_UNAVAILABLE
    assert not tiny_processes()


async def test_stdio_env_and_cwd_reach_the_child_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKORCH_PARENT_ONLY", "must not leak")
    spec = tiny_spec("tiny", env={"SERVICE_TOKEN": "hunter2"}, cwd=str(tmp_path))
    async with Pool({"tiny": spec}) as pool:
        seen = (await pool.call("tiny", "environ", {})).output()
        assert seen["env"]["SERVICE_TOKEN"] == "hunter2"
        assert "TASKORCH_PARENT_ONLY" not in seen["env"]
        assert "PATH" in seen["env"]
        assert await anyio.Path(seen["cwd"]).samefile(tmp_path)
        assert "hunter2" not in repr(spec) and "hunter2" not in repr(pool.health())
