"""The SQLite store's connection: opening a file, and running work on aiosqlite's thread.

The file is in WAL mode: readers never block the writer, and several stores
(in one process or several) may share a file. A transaction runs whole as one
call on aiosqlite's worker thread (one cross-thread round trip, not one per
statement). aiosqlite needs anyio's asyncio backend.
"""

from __future__ import annotations

import math
import os
import sqlite3
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Final, TypeVar

import aiosqlite
import anyio

from executor.errors import ConfigError, StoreError
from executor.store import schema
from executor.store.errors import store_error

__all__ = ["connect", "in_snapshot", "in_transaction", "on_worker_thread"]

SYNCHRONOUS_MODES: Final = ("OFF", "NORMAL", "FULL", "EXTRA")

_T = TypeVar("_T")


async def connect(
    path: str | os.PathLike[str], *, synchronous: str, busy_timeout_s: float
) -> tuple[aiosqlite.Connection, Path]:
    """Open (creating if needed), check and migrate the database at `path`.

    Returns:
        The connection, in autocommit mode with rows as `sqlite3.Row`, and the file.

    Raises:
        ConfigError: `synchronous` or `busy_timeout_s` is not valid.
        SchemaTooNewError: The file was written by a newer taskorch.
        CorruptDatabaseError: The file is not a taskorch database, or is damaged.
        StoreError: The file cannot be opened or written.
    """
    mode = synchronous.upper()
    if mode not in SYNCHRONOUS_MODES:
        raise ConfigError(
            f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}, got {synchronous!r}"
        )
    if not (math.isfinite(busy_timeout_s) and busy_timeout_s >= 0):
        raise ConfigError(f"busy_timeout_s must be >= 0 seconds, got {busy_timeout_s!r}")
    file = await anyio.to_thread.run_sync(_prepare_path, path)
    try:
        # isolation_level=None: sqlite3 issues no implicit BEGIN/COMMIT; we do.
        db = await aiosqlite.connect(file, isolation_level=None, timeout=busy_timeout_s)
    except sqlite3.Error as exc:
        raise store_error(file, exc) from exc
    try:
        db.row_factory = sqlite3.Row
        await _setup(db, file, mode)
    except BaseException as exc:
        with anyio.CancelScope(shield=True), suppress(sqlite3.Error):
            await db.close()
        if isinstance(exc, sqlite3.Error):
            raise store_error(file, exc) from exc
        raise
    return db, file


def _prepare_path(path: str | os.PathLike[str]) -> Path:
    """Refuse a directory and create the missing parents of the database file."""
    file = Path(path).expanduser()
    if file.is_dir():
        raise StoreError(f"database {file} is a directory: give the path of a file")
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(
            f"cannot create the directory {file.parent} for the database {file}: {exc}"
        ) from exc
    return file


async def _setup(db: aiosqlite.Connection, path: Path, synchronous: str) -> None:
    """Configure a fresh connection and bring the schema up to date.

    Nothing is written before `schema.probe` has accepted the file.
    """
    await db.execute("PRAGMA foreign_keys = ON")
    version = await schema.probe(db, path)
    rows = list(await db.execute_fetchall("PRAGMA journal_mode = WAL"))
    if str(rows[0][0]).lower() != "wal":
        raise StoreError(
            f"database {path}: cannot switch to WAL journaling (got {rows[0][0]!r}); "
            "put the database on a local file system"
        )
    # Checked against SYNCHRONOUS_MODES by `connect`; PRAGMA takes no parameters.
    await db.execute(f"PRAGMA synchronous = {synchronous}")
    await schema.migrate(db, path, version)


# aiosqlite private API, pinned (aiosqlite 0.22): `Connection._execute(fn, *args)` runs
# `fn(*args)` on the connection's worker thread and returns its result (or raises its
# exception); `Connection._conn` is the sqlite3 connection that thread owns. Nothing
# public runs several statements in one round trip. If aiosqlite renames either,
# tests/executor/test_store.py::test_the_private_aiosqlite_api_the_store_uses_exists fails.
async def on_worker_thread(
    db: aiosqlite.Connection,
    fn: Callable[[sqlite3.Connection, Callable[[sqlite3.Connection], _T]], _T],
    body: Callable[[sqlite3.Connection], _T],
) -> _T:
    """Run `fn(conn, body)` on the connection's worker thread, in one round trip."""
    conn: sqlite3.Connection = db._conn
    result: _T = await db._execute(fn, conn, body)  # type: ignore[no-untyped-call]
    return result


def in_transaction(conn: sqlite3.Connection, body: Callable[[sqlite3.Connection], _T]) -> _T:
    """BEGIN IMMEDIATE, `body`, COMMIT; on any error ROLLBACK and re-raise (worker thread)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = body(conn)
        conn.execute("COMMIT")
    except BaseException:
        # Guarded: COMMIT may fail after SQLite has already ended the transaction.
        if conn.in_transaction:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise
    return result


def in_snapshot(conn: sqlite3.Connection, body: Callable[[sqlite3.Connection], _T]) -> _T:
    """`body` in a read transaction, so its statements see one state (worker thread)."""
    conn.execute("BEGIN")
    try:
        return body(conn)
    finally:
        with suppress(sqlite3.Error):
            conn.execute("COMMIT")
