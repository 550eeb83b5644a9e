"""A read-only glance at an SQLite store with the standard library: for the command line's reads.

`taskorch plans`, `show` and `watch` of a settled plan only read, and a person
waits for them: they read here, with `sqlite3` opened read-only, no event
loop and no models (building pydantic's models costs more than the whole
read). What they get are small frozen records of the stored values, in the
shapes the command line prints (`server.cli.printing`).

A glance reads only a database this taskorch made and can use as it is:
`open_glance` raises `NotAtAGlance` for a missing file, another program's
database, another schema version, or one SQLite cannot open read-only (say,
a WAL file whose shared memory it may not create). The caller then opens the
store as usual, which creates, migrates or says what is wrong. Nothing here
writes.

A plan's `plan_hash` is the one stored with it (written when the version was
saved); running a plan checks approval against the hash of its content.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from executor.errors import ErrorKind
from executor.status import PlanStatus, StepStatus
from executor.store.schema import APPLICATION_ID, SCHEMA_VERSION
from executor.store.sql import LATEST_VERSION

__all__ = [
    "Glance",
    "NotAtAGlance",
    "PlanLine",
    "PlanPage",
    "PreviewLine",
    "StepErrorLine",
    "StepLine",
    "open_glance",
]

_BUSY_MS = 5_000
"""How long a read waits for a writer's lock (WAL readers rarely wait at all)."""


class NotAtAGlance(Exception):
    """The database cannot be read here as it is: open the store instead."""


@dataclass(frozen=True, slots=True)
class PlanLine:
    """A plan's latest version, as `taskorch plans` lists it."""

    plan_id: str
    version: int
    status: PlanStatus
    steps: int
    created_at: datetime | None
    query: str


@dataclass(frozen=True, slots=True)
class PreviewLine:
    """A large output's size and beginning (it is read whole through its own resource)."""

    size_bytes: int
    head: str


@dataclass(frozen=True, slots=True)
class StepErrorLine:
    """Why a step failed."""

    kind: ErrorKind
    message: str


@dataclass(frozen=True, slots=True)
class StepLine:
    """A step of a plan version and its stored outcome (pending when it has none)."""

    id: str
    server: str
    tool: str
    depends_on: tuple[str, ...]
    arguments: Any
    status: StepStatus
    output: Any
    output_preview: PreviewLine | None
    error: StepErrorLine | None


@dataclass(frozen=True, slots=True)
class PlanPage:
    """A plan version with its steps, as `taskorch show` prints it."""

    plan_id: str
    version: int
    status: PlanStatus
    query: str
    strategy: str
    plan_hash: str
    approved: bool
    steps: tuple[StepLine, ...]


@contextmanager
def open_glance(path: Path) -> Iterator[Glance]:
    """Open the SQLite file at `path` read-only, for one command.

    Raises:
        NotAtAGlance: The file is missing, not taskorch's, of another schema
            version, or cannot be opened read-only.
    """
    if not path.is_file():
        raise NotAtAGlance(f"{path} does not exist")
    uri = f"{path.absolute().as_uri()}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=_BUSY_MS / 1000)
    except sqlite3.Error as exc:
        raise NotAtAGlance(f"{path}: {exc}") from None
    with closing(conn):
        try:
            (app_id,) = conn.execute("PRAGMA application_id").fetchone()
            (version,) = conn.execute("PRAGMA user_version").fetchone()
        except sqlite3.Error as exc:
            raise NotAtAGlance(f"{path}: {exc}") from None
        if app_id != APPLICATION_ID or version != SCHEMA_VERSION:
            raise NotAtAGlance(f"{path}: application {app_id}, schema version {version}")
        conn.row_factory = sqlite3.Row
        try:
            yield Glance(conn)
        except sqlite3.Error as exc:
            raise NotAtAGlance(f"{path}: {exc}") from None


class Glance:
    """Reads of one read-only connection (see `open_glance`)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        """Wrap an open read-only connection to a current taskorch database."""
        self._conn = conn

    def plans(
        self,
        *,
        statuses: Collection[PlanStatus] | None = None,
        session_id: str | None = None,
        limit: int = 100,
    ) -> list[PlanLine]:
        """The latest version of each plan, newest first (as `Store.list_plans` orders them)."""
        clauses = [LATEST_VERSION]
        params: list[Any] = []
        if statuses is not None:
            wanted = sorted({s.value for s in statuses})
            if not wanted:
                return []
            clauses.append(f"p.status IN ({', '.join('?' * len(wanted))})")
            params += wanted
        if session_id is not None:
            clauses.append("p.session_id = ?")
            params.append(session_id)
        rows = self._conn.execute(
            "SELECT p.plan_id, p.version, p.status, p.query, p.created_at,"
            " (SELECT count(*) FROM steps AS s"
            "  WHERE s.plan_id = p.plan_id AND s.version = p.version) AS steps"
            f" FROM plans AS p WHERE {' AND '.join(clauses)}"
            " ORDER BY p.created_at DESC, p.rowid DESC LIMIT ?",
            (*params, limit),
        ).fetchall()
        return [
            PlanLine(
                plan_id=row["plan_id"],
                version=int(row["version"]),
                status=PlanStatus(row["status"]),
                steps=int(row["steps"]),
                created_at=_time(row["created_at"]),
                query=row["query"],
            )
            for row in rows
        ]

    def plan(self, plan_id: str, version: int | None = None) -> PlanPage | None:
        """A plan version (the latest when `version` is `None`) with its steps, or `None`."""
        params: tuple[Any, ...]
        if version is None:
            where, params = f"p.plan_id = ? AND {LATEST_VERSION}", (plan_id,)
        else:
            where, params = "p.plan_id = ? AND p.version = ?", (plan_id, version)
        head = self._conn.execute(
            "SELECT p.plan_id, p.version, p.status, p.query, p.strategy, p.plan_hash,"
            f" p.approved_hash FROM plans AS p WHERE {where}",
            params,
        ).fetchone()
        if head is None:
            return None
        rows = self._conn.execute(
            "SELECT s.step_id, s.server, s.tool, s.content,"
            " ss.status, ss.output, ss.summary, ss.error"
            " FROM steps AS s LEFT JOIN step_states AS ss USING (plan_id, version, step_id)"
            " WHERE s.plan_id = ? AND s.version = ? ORDER BY s.position",
            (head["plan_id"], head["version"]),
        ).fetchall()
        return PlanPage(
            plan_id=head["plan_id"],
            version=int(head["version"]),
            status=PlanStatus(head["status"]),
            query=head["query"],
            strategy=head["strategy"],
            plan_hash=head["plan_hash"],
            approved=head["approved_hash"] is not None
            and head["approved_hash"] == head["plan_hash"],
            steps=tuple(_step(row) for row in rows),
        )

    def step_kinds(self, plan_id: str) -> list[tuple[str | None, str]]:
        """Every stored event of the plan (all its versions), oldest first: (step, kind)."""
        rows = self._conn.execute(
            "SELECT step_id, kind FROM events WHERE plan_id = ? ORDER BY seq", (plan_id,)
        ).fetchall()
        return [(row["step_id"], row["kind"]) for row in rows]


def _step(row: sqlite3.Row) -> StepLine:
    content = json.loads(row["content"])  # the step as saved: its dependencies complete
    summary = None if row["summary"] is None else json.loads(row["summary"])
    preview = None
    if summary is not None and not summary.get("inline", True):
        preview = PreviewLine(size_bytes=int(summary["size_bytes"]), head=str(summary["head"]))
    error = None if row["error"] is None else json.loads(row["error"])
    return StepLine(
        id=row["step_id"],
        server=row["server"],
        tool=row["tool"],
        depends_on=tuple(content.get("depends_on") or ()),
        arguments=content.get("arguments", {}),
        status=StepStatus.PENDING if row["status"] is None else StepStatus(row["status"]),
        output=None if preview is not None or row["output"] is None else json.loads(row["output"]),
        output_preview=preview,
        error=None
        if error is None
        else StepErrorLine(kind=ErrorKind(error["kind"]), message=str(error["message"])),
    )


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)
