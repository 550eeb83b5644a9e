"""Fixtures of the runtime's tests."""

from __future__ import annotations

import pytest

from tests.executor.scheduler_support import StoreKind


@pytest.fixture(params=["sqlite", "memory"])
def store_kind(request: pytest.FixtureRequest) -> StoreKind:
    """Each `Store` the scheduler tests that take it run on: SQLite on disk, and in memory."""
    kind: StoreKind = request.param
    return kind
