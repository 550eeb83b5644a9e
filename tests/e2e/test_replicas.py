"""Three `taskorch serve --http` replicas on one PostgreSQL: any replica answers for any plan.

A host talks to the replicas as it would through a load balancer: it makes a
plan on one, confirms it on another, runs it on a third. The replica that owns
a run is killed (`kill -9`, its downstream servers with it) in the middle;
another takes the run over with the crash rules, while a third replica that
was asked to `execute_plan(wait=true)` streams the progress of steps run by
both. Every step appends a line to a file: at the end each line is there
exactly once. A cancel sent to a replica that does not own a run stops it.
An approval question asked by one replica is answered through another (the
requestState key is the database's, not a replica's), and a host's task made
on one replica is polled to its end on another.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp_types import CallToolResult, ElicitRequestParams, ElicitResult, InputRequiredResult

from executor.task_client import TasksClient
from executor.tasks_wire import (
    CreateTaskResult,
    DetailedTask,
    GetTaskRequest,
    TaskIdParams,
    TaskStatus,
)
from tests.e2e.support import ROOT, _wait_for_port, clean_env, free_port, structured
from tests.executor.scheduler_support import ENGINE_SERVER

pytestmark = pytest.mark.anyio

TOKEN = "replica-test-token"
SERVE = (sys.executable, "-m", "server.cli", "serve", "--log-level", "INFO")
LEASE_S = 2


@dataclass
class Replica:
    """One `taskorch serve --http` child."""

    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def kill_with_its_servers(self) -> None:
        """What a machine's death does: the replica and its downstream servers, at once."""
        tree = [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(True)]
        for each in tree:
            try:
                each.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        self.proc.wait(timeout=30)


@contextmanager
def replicas(config: Path, db_url: str, names: str) -> Iterator[dict[str, Replica]]:
    """Start one `taskorch serve --http` per letter of `names` on the database at `db_url`."""
    started: dict[str, Replica] = {}
    env = {**clean_env(), "TASKORCH_TOKEN": TOKEN, "TASKORCH_DB": db_url}
    try:
        for i, name in enumerate(names):
            port = free_port()
            log = config.parent / f"replica-{name}.log"
            # The first names its database on the command line, the others in the environment.
            db = ["--db", db_url] if i == 0 else []
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    [*SERVE, "--config", str(config), "--http", "--port", str(port), *db],
                    cwd=ROOT,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                    start_new_session=True,
                )
            started[name] = Replica(name, f"http://127.0.0.1:{port}/mcp", proc, log)
        for replica in started.values():
            _wait_for_port(int(replica.url.split(":")[2].split("/")[0]), replica.proc)
        yield started
    finally:
        for replica in started.values():
            if replica.proc.poll() is None:
                replica.proc.terminate()
        for replica in started.values():
            try:
                replica.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(replica.proc.pid, signal.SIGKILL)
                replica.proc.wait(timeout=15)


@asynccontextmanager
async def client(replica: Replica, **options: Any) -> AsyncIterator[Client]:
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {TOKEN}"})
    transport = streamable_http_client(replica.url, http_client=http)
    async with http, Client(transport, **options) as session:
        yield session


async def call(replica: Replica, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    async with client(replica) as session:
        return structured(await session.call_tool(tool, arguments))


def write_config(tmp_path: Path) -> Path:
    config = tmp_path / "config.json"
    engine = {"command": sys.executable, "args": [str(ENGINE_SERVER)]}
    body = {"mcpServers": {"engine": engine}, "limits": {"run_lease_s": LEASE_S}}
    config.write_text(json.dumps(body), encoding="utf-8")
    return config


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def wait_until(check: Any, what: str) -> None:
    with anyio.fail_after(60, reason=f"waiting for {what}"):  # a hang guard
        while not check():  # noqa: ASYNC110 - what other processes do
            await anyio.sleep(0.05)


async def make_plan(replica: Replica, steps: list[dict[str, Any]]) -> dict[str, Any]:
    return await call(replica, "create_plan", {"query": "replicas", "steps": steps})


async def test_any_replica_answers_takes_over_a_killed_owners_run_and_cancels_across(
    tmp_path: Path, pg_url: str
) -> None:
    effects = tmp_path / "effects.txt"
    config = write_config(tmp_path)

    def append(step_id: str, after: str | None, tool: str) -> dict[str, Any]:
        arguments = {"path": str(effects), "line": step_id, "delay_ms": 400}
        depends = [after] if after else []
        return {
            "id": step_id,
            "server": "engine",
            "tool": tool,
            "arguments": arguments,
            "depends_on": depends,
        }

    # Two chains side by side: appends that may not be repeated, and ones that may.
    steps = [append(f"a{i}", f"a{i - 1}" if i else None, "append_line") for i in range(5)] + [
        append(f"b{i}", f"b{i - 1}" if i else None, "append_line_idempotent") for i in range(5)
    ]
    with replicas(config, pg_url, "ABC") as r:
        a, b, c = r["A"], r["B"], r["C"]
        plan = await make_plan(a, steps)
        plan_id = plan["plan_id"]
        await call(b, "confirm_plan", {"plan_id": plan_id, "plan_hash": plan["plan_hash"]})
        started = await call(a, "execute_plan", {"plan_id": plan_id, "wait": False})
        assert started["status"] == "executing"

        # C was asked to run it too: it follows A's run, then whoever takes it over.
        messages: list[str] = []
        followed: dict[str, Any] = {}

        async def follow_on_c() -> None:
            async def on_progress(
                progress: float, total: float | None, message: str | None
            ) -> None:
                messages.append(message or "")

            async with client(c) as session:
                result = await session.call_tool(
                    "execute_plan", {"plan_id": plan_id}, progress_callback=on_progress
                )
            followed.update(structured(result))

        async with anyio.create_task_group() as tg:
            tg.start_soon(follow_on_c)
            await wait_until(lambda: len(lines(effects)) >= 3, "A to be mid-run")
            await wait_until(lambda: any("succeeded" in m for m in messages), "C's progress")
            seen_before_kill = len(messages)
            a.kill_with_its_servers()
            progress = await call(c, "get_progress", {"plan_id": plan_id})
            assert progress["status"] == "executing"

        report = followed
        # A non-idempotent append cut off by the kill waits for a decision; the host,
        # which can see the file, gives it (on B).
        if report["status"] == "interrupted":
            waiting = [s["id"] for s in report["steps"] if s["status"] == "interrupted"]
            assert waiting and all(w.startswith("a") for w in waiting)
            decision = "skip" if all(w in lines(effects) for w in waiting) else "rerun"
            report = await call(b, "execute_plan", {"plan_id": plan_id, "on_interrupted": decision})
        assert report["status"] == "completed", report
        assert len(messages) > seen_before_kill  # C went on seeing steps after A died
        assert any("b4" in m for m in messages[seen_before_kill:])

        # Every side effect exactly once: none doubled, none lost.
        assert sorted(lines(effects)) == sorted(s["id"] for s in steps)
        took_over = [
            replica.name
            for replica in (b, c)
            if "took over" in replica.log.read_text() or "resumed" in replica.log.read_text()
        ]
        assert took_over, "neither B nor C says it took the run over"

        # A cancel sent to C for a run B owns reaches B through the database.
        marker = tmp_path / "hang.marker"
        hang = [
            {"id": "h", "server": "engine", "tool": "hang", "arguments": {"marker": str(marker)}}
        ]
        plan = await make_plan(c, hang)
        await call(c, "confirm_plan", {"plan_id": plan["plan_id"], "plan_hash": plan["plan_hash"]})
        await call(b, "execute_plan", {"plan_id": plan["plan_id"], "wait": False})
        await wait_until(lambda: lines(marker) == ["started"], "the hang step to start on B")
        cancelled = await call(c, "cancel_execution", {"plan_id": plan["plan_id"]})
        assert cancelled["status"] == "cancelled", cancelled
        await wait_until(lambda: "cancelled" in lines(marker), "the cancel to reach the tool")
        shown = await call(b, "get_plan", {"plan_id": plan["plan_id"]})
        assert shown["status"] == "cancelled"


async def _never(context: Any, params: ElicitRequestParams) -> ElicitResult:
    raise AssertionError("the question is answered by another replica in this test")


async def test_an_approval_and_a_host_task_from_one_replica_are_answered_by_another(
    tmp_path: Path, pg_url: str
) -> None:
    effects = tmp_path / "effects.txt"
    config = write_config(tmp_path)

    def append(line: str) -> list[dict[str, Any]]:
        arguments = {"path": str(effects), "line": line}
        return [{"id": "w", "server": "engine", "tool": "append_line", "arguments": arguments}]

    with replicas(config, pg_url, "AB") as r:
        a, b = r["A"], r["B"]
        # The approval question's requestState is sealed with a key every replica shares.
        plan = await make_plan(a, append("approved"))
        async with client(a, elicitation_callback=_never) as session:
            asked = await session.session.call_tool(
                "execute_plan", {"plan_id": plan["plan_id"]}, allow_input_required=True
            )
        assert isinstance(asked, InputRequiredResult), asked
        assert asked.request_state is not None and asked.input_requests is not None
        [key] = asked.input_requests
        answer = {key: ElicitResult(action="accept", content={"approve": True, "reason": "ok"})}
        async with client(b, elicitation_callback=_never) as session:
            result = await session.session.call_tool(
                "execute_plan",
                {"plan_id": plan["plan_id"]},
                input_responses=answer,  # type: ignore[arg-type]
                request_state=asked.request_state,
                allow_input_required=True,
            )
        assert not isinstance(result, InputRequiredResult)
        assert structured(result)["status"] == "completed"

        # A host's task is the run, kept in the database: made on A, polled on B.
        plan = await make_plan(a, append("tasked"))
        await call(a, "confirm_plan", {"plan_id": plan["plan_id"], "plan_hash": plan["plan_hash"]})
        async with client(a, extensions=[TasksClient()]) as session:
            handle = await session.session.call_tool(
                "execute_plan", {"plan_id": plan["plan_id"]}, allow_claimed=True
            )
        assert isinstance(handle, CreateTaskResult), handle
        get = GetTaskRequest(params=TaskIdParams(task_id=handle.task_id))
        async with client(b, extensions=[TasksClient()]) as session:
            with anyio.fail_after(60):  # a hang guard
                task = await session.session.send_request(get, DetailedTask)
                while task.status is TaskStatus.WORKING:  # polled, as a host does
                    await anyio.sleep(0.05)
                    task = await session.session.send_request(get, DetailedTask)
        assert task.status is TaskStatus.COMPLETED, task
        report = CallToolResult.model_validate(task.result).structured_content
        assert report is not None and report["status"] == "completed"
        assert lines(effects) == ["approved", "tasked"]
