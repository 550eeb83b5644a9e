"""Fixtures for the face's tests: an orchestrator over the example servers, and its MCP server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from server.config import load_config
from server.mcp import TaskorchServer, build_server
from server.service import TaskOrchestrator
from tests.e2e.support import write_config


@pytest.fixture
async def orch(tmp_path: Path) -> AsyncIterator[TaskOrchestrator]:
    """An open orchestrator whose downstream servers are `text`, `stats` and `notes`."""
    config = load_config(write_config(tmp_path, servers=("text", "stats", "notes")))
    async with TaskOrchestrator(config, db_path=tmp_path / "t.db") as o:
        yield o


@pytest.fixture
def server(orch: TaskOrchestrator) -> TaskorchServer:
    """The MCP server over `orch`."""
    return build_server(orch)
