"""A stdio server's process tree: started apart from ours, found, and ended whole.

POSIX: the server leads a new session, so its process group is its tree, and a
signal to the group reaches every member, even one whose parent has exited.
Windows has no process group to signal: the tree is the server and its
descendants found through parent links with psutil, each ended with
`TerminateProcess`. Windows keeps a parent link after the parent exits, so the
server's own orphans are found; a grandchild whose parent (not the server) has
already exited is out of reach (a Job Object would hold it, but the SDK ties
its Job Objects to its own spawn, which cannot give us the stderr pipe).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import psutil

__all__ = ["descendants", "end_process_tree", "live_group_members", "open_process_tree"]

logger = logging.getLogger(__name__)

_WINDOWS = sys.platform == "win32"
"""Which way trees are found and ended: a constant a test can set, to run the Windows
logic on Linux. Starting a process checks `sys.platform` itself, so that the type
checker sees each branch on its platform (`mypy --platform win32`)."""
_POLL_S = 0.02
_started: dict[int, float] = {}
"""Start time of each root we started and have not ended (Windows: tells our tree from a
process that reused a root's pid)."""


async def open_process_tree(
    argv: Sequence[str], *, env: Mapping[str, str], cwd: str | Path | None
) -> anyio.abc.Process:
    """Start `argv` with piped stdio as the root of a tree `end_process_tree` can end.

    Raises:
        OSError: The command could not be started.
    """
    options: dict[str, Any]
    if sys.platform == "win32":
        from mcp.os.win32.utilities import get_windows_executable_command

        # `npx` is `npx.cmd` there; CreateProcess does not try PATHEXT. No console window
        # per server when the host is a GUI app; Ctrl+C in our console stays ours.
        argv = [get_windows_executable_command(argv[0]), *argv[1:]]
        flags = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW
        options = {"creationflags": flags}
    else:
        options = {"start_new_session": True}  # its pid is its process group's id
    process = await anyio.open_process(list(argv), env=dict(env), cwd=cwd, **options)
    with contextlib.suppress(psutil.Error):
        _started[process.pid] = psutil.Process(process.pid).create_time()
    return process


def live_group_members(pgid: int) -> list[int]:
    """Pids of the still running (not zombie) members of the tree whose root is `pgid`."""
    if _WINDOWS:
        return _windows_tree(pgid)
    return _posix_group(pgid)


def _posix_group(pgid: int) -> list[int]:
    if sys.platform == "win32":  # never taken; says so to the type checker
        raise NotImplementedError
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return []
    except PermissionError:
        pass  # someone else's process holds the id: scan to be sure
    members: list[int] = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(proc.pid)
        except (OSError, psutil.Error):
            continue
    return members


async def end_process_tree(pgid: int, *, grace_s: float) -> None:
    """End what is left of the tree rooted at `pgid`: terminate, then kill after `grace_s`.

    POSIX: SIGTERM to the group, SIGKILL to whatever outlives `grace_s`. Windows:
    `TerminateProcess` for every member (already a hard kill), again for any that
    outlives `grace_s`. Returns once the tree is gone or the kill is sent.
    """
    try:
        if not live_group_members(pgid):
            return
        _terminate(pgid, hard=False)
        with anyio.move_on_after(grace_s):
            # Polled: there is no event for "every process of a tree has exited".
            while live_group_members(pgid):  # noqa: ASYNC110
                await anyio.sleep(_POLL_S)
        if live_group_members(pgid):
            logger.warning("server pid %d ignored the request to end; killing its tree", pgid)
            _terminate(pgid, hard=True)
    finally:
        _started.pop(pgid, None)


def _terminate(pgid: int, *, hard: bool) -> None:
    if not _WINDOWS:
        _signal_posix_group(pgid, hard=hard)
        return
    for pid in _windows_tree(pgid):
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            if hard:
                proc.kill()
            else:
                proc.terminate()


def _signal_posix_group(pgid: int, *, hard: bool) -> None:
    if sys.platform == "win32":  # never taken; says so to the type checker
        raise NotImplementedError
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL if hard else signal.SIGTERM)


def _windows_tree(root: int) -> list[int]:
    table: dict[int, tuple[int, float]] = {}
    for proc in psutil.process_iter(["ppid", "create_time", "status"]):
        info = proc.info
        if info["status"] != psutil.STATUS_ZOMBIE and info["create_time"] is not None:
            table[proc.pid] = (info["ppid"] or 0, info["create_time"])
    return descendants(table, root, _started.get(root))


def descendants(
    table: Mapping[int, tuple[int, float]], root: int, started: float | None
) -> list[int]:
    """The pids of `root` and its descendants in `table` (pid -> (parent pid, start time)).

    A parent link counts only when the child started no earlier than its parent
    (pids are reused; start times are not). When `root` is gone, or its pid now
    belongs to another process, its orphans still count when they started after
    `started` (the root's own start) and before any process that took its pid.

    Args:
        table: Every running process: its parent's pid and its start time.
        root: The pid of the tree's root.
        started: When the root started, if known.
    """
    holder = table.get(root)
    is_ours = holder is not None and (started is None or abs(holder[1] - started) < 1e-3)
    floor = holder[1] if is_ours and holder is not None else started
    if floor is None:
        return []
    ceiling = holder[1] if holder is not None and not is_ours else float("inf")
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        if pid != ppid:
            children.setdefault(ppid, []).append(pid)
    found = [root] if is_ours else []
    todo = [(root, floor, ceiling)]
    while todo:
        parent, after, before = todo.pop()
        for child in children.get(parent, ()):
            born = table[child][1]
            if after <= born < before and child not in found:
                found.append(child)
                todo.append((child, born, float("inf")))
    return found
