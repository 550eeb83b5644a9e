"""What SQLite's failures become: taskorch errors that name the file and say what to do."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from executor.errors import CorruptDatabaseError, NotFoundError, StoreError, UserError
from executor.store.base import WriteBatch

__all__ = [
    "SQLITE_MAX_INT",
    "SQLITE_MIN_INT",
    "agent_not_found",
    "check_limit",
    "overflow_error",
    "plan_not_found",
    "store_error",
    "unknown_steps_error",
]

_CORRUPT_MARKERS: Final = ("file is not a database", "malformed", "disk image", "corrupt")


def store_error(path: Path, exc: sqlite3.Error) -> StoreError:
    """Turn an sqlite3 error into a StoreError that names the file and says what to do."""
    message = str(exc) or type(exc).__name__
    lowered = message.lower()
    if any(marker in lowered for marker in _CORRUPT_MARKERS):
        return CorruptDatabaseError(
            f"{path} is not a taskorch database or is damaged (sqlite: {message}); "
            "it was left untouched: move it aside, or point taskorch at another file"
        )
    if "locked" in lowered or "busy" in lowered:
        hint = "another process held the database's write lock too long; try again"
    elif "readonly" in lowered or "read-only" in lowered:
        hint = "make the file and its directory writable"
    elif "unable to open" in lowered:
        hint = "check that the path is a file you may read and write, in a writable directory"
    elif "full" in lowered:
        hint = "free some disk space"
    elif "i/o" in lowered:
        hint = "check the file system the database is on"
    else:
        hint = "see the sqlite message"
    return StoreError(f"database {path}: {message} ({hint})")


SQLITE_MIN_INT: Final = -(2**63)
SQLITE_MAX_INT: Final = 2**63 - 1


def overflow_error(exc: OverflowError) -> UserError:
    """A number too large for SQLite's 64-bit integers is the caller's to fix."""
    return UserError(
        f"a number in the request is too large for the database ({exc}): integers "
        f"must lie between {SQLITE_MIN_INT} and {SQLITE_MAX_INT}"
    )


def unknown_steps_error(batch: WriteBatch, detail: str) -> NotFoundError:
    """A write that names a plan version or step that is not stored: say which.

    `detail` is the database's own words (both stores raise this).
    """
    named = sorted(
        {(s.plan_id, s.version, s.step_id) for s in batch.step_states}
        | {(a.plan_id, a.version, a.step_id) for a in batch.attempts}
    )
    shown = ", ".join(f"{p}@{v}/{s}" for p, v, s in named[:10])
    more = f" and {len(named) - 10} more" if len(named) > 10 else ""
    return NotFoundError(
        f"a write names a plan version or step that is not stored ({detail}); "
        f"the batch names {shown}{more}: save the plan before writing its states"
    )


def plan_not_found(plan_id: str, version: int | None, versions: Sequence[int]) -> NotFoundError:
    """No such plan, or (when it has `versions`) no such version of it: say which there are."""
    if not versions or version is None:
        return NotFoundError(f"no plan with id {plan_id!r}")
    known = ", ".join(map(str, versions))
    return NotFoundError(f"plan {plan_id!r} has no version {version}; its versions are {known}")


def agent_not_found(name: str, names: Sequence[str]) -> NotFoundError:
    """No agent of this name: say which there are."""
    known = ", ".join(repr(n) for n in names) if names else "none"
    return NotFoundError(f"no agent named {name!r}; known agents: {known}")


def check_limit(limit: int) -> None:
    """Refuse a read's `limit` below 1.

    Raises:
        UserError: It is below 1.
    """
    if limit < 1:
        raise UserError(f"limit must be at least 1, got {limit}")
