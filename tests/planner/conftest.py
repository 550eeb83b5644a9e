"""Planner test setup: the scripted model server and example catalogs.

The network guard that keeps every test (these included) on loopback lives in
`tests/conftest.py`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from executor.catalog import Catalog, ToolAnnotations, ToolInfo
from tests.planner.fake_openai import FakeOpenAI


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A scripted OpenAI-compatible server on 127.0.0.1; every answer must be used."""
    with FakeOpenAI() as server:
        yield server
    assert not server.unexpected, server.unexpected


def _tool(
    server: str,
    name: str,
    description: str,
    properties: dict[str, Any],
    required: list[str],
    *,
    read_only: bool = True,
) -> ToolInfo:
    return ToolInfo(
        server=server,
        name=name,
        description=description,
        input_schema={
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": False,
        },
        annotations=ToolAnnotations(read_only=read_only, destructive=not read_only),
    )


def example_tools() -> list[ToolInfo]:
    """A handful of tools like the example servers'."""
    s = {"type": "string"}
    return [
        _tool(
            "time",
            "get_current_time",
            "Get the current time in a timezone.",
            {"timezone": {**s, "description": "IANA timezone name, e.g. Europe/Paris"}},
            ["timezone"],
        ),
        _tool(
            "time",
            "convert_time",
            "Convert a time between timezones.",
            {"source_timezone": s, "time": {**s, "description": "HH:MM"}, "target_timezone": s},
            ["source_timezone", "time", "target_timezone"],
        ),
        _tool(
            "math",
            "add",
            "Add two integers.",
            {"a": {"type": "integer"}, "b": {"type": "integer"}},
            ["a", "b"],
        ),
        _tool(
            "notes",
            "write_note",
            "Save a note with a title and a body.",
            {"title": s, "body": s},
            ["title", "body"],
            read_only=False,
        ),
        _tool(
            "web",
            "fetch",
            "Fetch a URL and return its text.",
            {"url": s, "max_length": {"type": "integer", "minimum": 1}},
            ["url"],
        ),
    ]


@pytest.fixture
def catalog() -> Catalog:
    """The example catalog."""
    return Catalog(example_tools())
