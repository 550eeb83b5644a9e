"""The pool as a client of the MCP Tasks extension, against FastMCP's tasks server.

The server (FastMCP 4 with fastmcp-tasks, from PyPI, in its own venv) runs every
tool only as a task: on main such a call failed with -32021 ("requires the tasks
extension"), classified as a tool error.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest

from executor.downstream import Pool
from executor.errors import CannotAsk, ErrorKind, ToolCallError
from tests.fixtures.fastmcp_launch import FastMCPServer, fastmcp_server

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def fm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastMCPServer]:
    with fastmcp_server(tmp_path_factory.mktemp("fastmcp")) as server:
        yield server


@dataclass
class Hooks:
    """Records what the pool says about a downstream task."""

    resume: str | None = None
    cancel: bool = False
    task_ids: list[str] = field(default_factory=list)
    started_event: anyio.Event = field(default_factory=anyio.Event)

    async def started(self, task_id: str) -> None:
        self.task_ids.append(task_id)
        self.started_event.set()

    def cancel_downstream(self) -> bool:
        return self.cancel

    def resuming(self) -> str | None:
        return self.resume

    async def ask(self, server: str, tool: str, request: dict[str, Any]) -> dict[str, Any]:
        raise CannotAsk("nobody asks in these tests")


async def _wait_for(path: Path) -> None:
    with anyio.fail_after(30):
        while not await anyio.Path(path).exists():  # noqa: ASYNC110 - a file, not an event
            await anyio.sleep(0.02)


async def test_a_task_required_tool_runs_and_its_task_id_comes_first(fm: FastMCPServer) -> None:
    async with Pool({"fm": fm.spec()}) as pool:
        hooks = Hooks()
        messages: list[str | None] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            messages.append(message)

        result = await pool.call(
            "fm", "echo_task", {"text": "hello"}, on_progress=on_progress, task=hooks
        )
        assert result.output() == {"result": "hello"}
        assert len(hooks.task_ids) == 1 and hooks.task_ids[0]
        assert messages and all(messages), messages  # each status seen, in words


async def test_a_call_without_hooks_follows_the_task_too(fm: FastMCPServer) -> None:
    async with Pool({"fm": fm.spec()}) as pool:
        result = await pool.call("fm", "echo_task", {"text": "plain"})
        assert result.output() == {"result": "plain"}


async def test_cancelling_the_call_cancels_the_downstream_task(fm: FastMCPServer) -> None:
    async with Pool({"fm": fm.spec()}) as pool:
        hooks = Hooks(cancel=True)
        async with anyio.create_task_group() as tg:

            async def call() -> None:
                await pool.call("fm", "hang_task", {"name": "h"}, task=hooks)

            tg.start_soon(call)
            await hooks.started_event.wait()
            await _wait_for(fm.folder / "h.started")
            tg.cancel_scope.cancel()
        await _wait_for(fm.folder / "h.cancelled")


async def test_a_recorded_task_is_resumed_not_called_again(fm: FastMCPServer) -> None:
    hooks = Hooks()  # cancel_downstream is False: taskorch stopping, not the user
    arguments = {"name": "log", "line": "once", "hold_s": 1.0}
    async with Pool({"fm": fm.spec()}) as pool, anyio.create_task_group() as tg:

        async def call() -> None:
            await pool.call("fm", "append_line", arguments, task=hooks)

        tg.start_soon(call)
        await hooks.started_event.wait()
        tg.cancel_scope.cancel()
    assert not (fm.folder / "log").exists()  # still holding, downstream
    again = Hooks(resume=hooks.task_ids[0])
    async with Pool({"fm": fm.spec()}) as pool:
        result = await pool.call("fm", "append_line", arguments, task=again)
    assert result.output() == {"result": 1}
    assert (fm.folder / "log").read_text(encoding="utf-8") == "once\n"
    assert again.task_ids == []  # nothing new was started


async def test_an_unknown_task_fails_as_invalid(fm: FastMCPServer) -> None:
    async with Pool({"fm": fm.spec()}) as pool:
        with pytest.raises(ToolCallError) as caught:
            await pool.call("fm", "echo_task", {"text": "x"}, task=Hooks(resume="no-such-task"))
        assert caught.value.kind is ErrorKind.INVALID_ARGUMENTS
