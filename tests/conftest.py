"""Shared test setup: anyio on asyncio only, and no network model calls."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@pytest.fixture
def anyio_backend() -> str:
    """Pin anyio tests to asyncio: aiosqlite and litellm need it."""
    return "asyncio"
