"""The backends the store tests run on, and reading their databases behind the store's back."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import pytest

from executor.store import OpenStore, SqliteStore, Store
from executor.store.postgres import PostgresStore

__all__ = ["BACKENDS", "Backend", "Opener", "opener_for", "raw_sql"]

Backend = Literal["sqlite", "postgres"]
"""A store implementation: SQLite on a file, or PostgreSQL on the session's server."""

BACKENDS: tuple[Backend, ...] = ("sqlite", "postgres")

Opener = Callable[[], Awaitable[OpenStore]]
"""Opens another store on the test's one database."""


def opener_for(backend: Backend, request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """How a test opens stores on its own database of `backend` (one database per test)."""
    if backend == "sqlite":
        path = tmp_path / "taskorch.db"

        async def sqlite() -> OpenStore:
            return await SqliteStore.open(path)

        return sqlite
    url: str = request.getfixturevalue("pg_url")

    async def postgres() -> OpenStore:
        return await PostgresStore.open(url)

    return postgres


@asynccontextmanager
async def opened(opener: Opener) -> AsyncIterator[OpenStore]:
    """A store from `opener`, closed on exit."""
    async with await opener() as store:
        yield store


def raw_sql(store: Store, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run SQL on the store's database through a connection of its own (autocommit).

    `?` placeholders work on both backends.
    """
    if isinstance(store, SqliteStore):
        conn = sqlite3.connect(store.path, isolation_level=None)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()
    assert isinstance(store, PostgresStore)
    import psycopg

    with psycopg.connect(store.url.secret(), autocommit=True) as pg:
        cur_pg = pg.execute(sql.replace("?", "%s").encode(), params or None)
        return cur_pg.fetchall() if cur_pg.description else []
