"""Fixtures of the runtime's tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.executor.scheduler_support import PG_URL_FILE, StoreKind


@pytest.fixture(params=["sqlite", "memory", "postgres"])
def store_kind(request: pytest.FixtureRequest, tmp_path: Path) -> StoreKind:
    """Each `Store` the scheduler tests that take it run on: SQLite, in memory, PostgreSQL.

    PostgreSQL's database is a schema of the session's server, whose URL is left
    in the test's directory for `open_store` (as SQLite's file is).
    """
    kind: StoreKind = request.param
    if kind == "postgres":
        url: str = request.getfixturevalue("pg_url")
        (tmp_path / PG_URL_FILE).write_text(url, encoding="utf-8")
    return kind
