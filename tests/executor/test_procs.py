"""Process trees: found and ended whole, by the POSIX branch and by the Windows branch's logic.

CI runs Linux only. The Windows branch finds a tree through parent links and ends
each member with psutil (`TerminateProcess` there, signals here), so its logic runs
here as it is, with `procs._WINDOWS` set; only `open_process_tree`'s Windows flags
cannot run here (POSIX refuses `creationflags`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import anyio
import psutil
import pytest

from executor.downstream import procs
from executor.downstream.procs import (
    descendants,
    end_process_tree,
    live_group_members,
    open_process_tree,
)

pytestmark = pytest.mark.anyio

# A root that starts a child, which starts a grandchild; the root prints their pids and
# waits. Stubborn: all three ignore SIGTERM (each at once, so no parent link breaks:
# Linux, unlike Windows, moves an orphan to another parent).
_IGNORE = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
_GRANDCHILD = "import time; time.sleep(600)"
_CHILD = (
    "import subprocess, sys; g = subprocess.Popen([sys.executable, '-c', sys.argv[1]]);"
    " print(g.pid, flush=True); g.wait()"
)
_ROOT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]], stdout=subprocess.PIPE)
print(child.pid, child.stdout.readline().decode().strip(), flush=True)
time.sleep(600)
"""


@pytest.fixture(params=["posix", "windows"])
def branch(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setattr(procs, "_WINDOWS", request.param == "windows")
    yield request.param


async def _start_tree(kind: str) -> tuple[anyio.abc.Process, list[int]]:
    prefix = _IGNORE if kind == "stubborn" else ""
    argv = [sys.executable, "-c", prefix + _ROOT, prefix + _CHILD, prefix + _GRANDCHILD]
    process = await open_process_tree(argv, env={}, cwd=None)
    assert process.stdout is not None
    line = b""
    while not line.endswith(b"\n"):
        line += await process.stdout.receive(1)
    return process, [process.pid, *map(int, line.split())]


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("kind", ["polite", "stubborn"])
async def test_the_whole_tree_is_found_and_ended(branch: str, kind: str) -> None:
    process, pids = await _start_tree(kind)
    try:
        assert sorted(live_group_members(process.pid)) == sorted(pids)
        await end_process_tree(process.pid, grace_s=0.3)
        with anyio.fail_after(10):
            await process.wait()
        for pid in pids:
            for _ in range(200):
                if not _alive(pid):
                    break
                await anyio.sleep(0.02)
            assert not _alive(pid), (branch, pid)
        assert live_group_members(process.pid) == []
        assert process.pid not in procs._started
    finally:
        for pid in pids:
            if _alive(pid):
                psutil.Process(pid).kill()
        await process.aclose()


async def test_an_ended_tree_is_left_alone() -> None:
    process = await open_process_tree([sys.executable, "-c", "pass"], env={}, cwd=None)
    await process.wait()
    await end_process_tree(process.pid, grace_s=0.1)  # nothing left: returns at once
    await process.aclose()


# The Windows branch's tree, from a process table: pid -> (parent pid, start time).
def test_a_live_root_and_its_descendants() -> None:
    table = {10: (1, 100.0), 11: (10, 101.0), 12: (11, 102.0), 20: (1, 100.5)}
    assert sorted(descendants(table, 10, 100.0)) == [10, 11, 12]


def test_a_stale_parent_link_does_not_count() -> None:
    # 11 started before 10: its parent was an older process that had pid 10.
    table = {10: (1, 100.0), 11: (10, 99.0), 12: (10, 100.0)}
    assert sorted(descendants(table, 10, 100.0)) == [10, 12]


def test_a_dead_roots_orphans_are_still_found() -> None:
    # Windows keeps the parent link of a process whose parent has exited.
    table = {11: (10, 101.0), 12: (11, 102.0), 13: (10, 99.0)}
    assert sorted(descendants(table, 10, 100.0)) == [11, 12]


def test_a_process_that_reused_the_roots_pid_is_not_ours() -> None:
    # Root 10 (started at 100) exited; another process got pid 10 at 200 and has a child.
    table = {10: (1, 200.0), 11: (10, 101.0), 30: (10, 201.0)}
    assert descendants(table, 10, 100.0) == [11]


def test_without_the_roots_start_a_dead_root_has_no_tree() -> None:
    assert descendants({11: (10, 101.0)}, 10, None) == []
