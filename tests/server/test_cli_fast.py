"""`taskorch serve`'s fast argument path agrees with typer, and start-up's GC pause ends."""

from __future__ import annotations

import gc
import inspect
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.core import TyperGroup

from server.cli import _pause_gc, app, serve, serve_fast_options


def _typer_params(args: list[str]) -> dict[str, Any]:
    group = typer.main.get_command(app)
    assert isinstance(group, TyperGroup)
    parent = group.make_context("taskorch", ["serve", *args])
    command = group.get_command(parent, "serve")
    assert command is not None
    return dict(command.make_context("serve", list(args), parent=parent).params)


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--config", "c.json", "--db", "t.db"],
        ["--config=c.json", "--db=sub/t.db", "--log-level", "debug"],
        ["--db", "postgresql://orch:pw@db.internal:5432/taskorch?sslmode=require"],
        ["--http", "--host", "0.0.0.0", "--port", "9000", "--token", "secret"],
        ["--allow-host", "a.example", "--http", "--allow-host=b.example:8000"],
        ["--http", "--max-connections", "16", "--request-timeout=2.5", "--keep-alive", "3"],
        ["--http", "--host", "0.0.0.0", "--insecure-no-token"],
    ],
)
def test_fast_options_are_what_typer_parses(args: list[str]) -> None:
    fast = serve_fast_options(args)
    assert fast is not None
    defaults = {name: p.default for name, p in inspect.signature(serve).parameters.items()}
    parsed = _typer_params(args)
    # Typer gives an empty tuple for a repeatable option not given; `serve` reads both as none.
    parsed["allow_host"] = parsed["allow_host"] or None
    assert {**defaults, **fast} == parsed


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["--port", "eighty"],
        ["--port"],
        ["--db", "a.db", "--db", "b.db"],
        ["--http", "--http"],
        ["--log-level", "loud"],
        ["--config", ""],
        ["--token", "--http"],
        ["--unknown", "x"],
        ["--request-timeout", "soon"],
        ["--max-connections", "1.5"],
        ["--insecure-no-token", "--insecure-no-token"],
        ["positional"],
        ["--", "--http"],
    ],
)
def test_anything_unusual_is_left_to_typer(args: list[str]) -> None:
    assert serve_fast_options(args) is None


def test_a_directory_as_config_is_left_to_typer(tmp_path: Path) -> None:
    assert serve_fast_options(["--config", str(tmp_path)]) is None
    assert serve_fast_options(["--config", str(tmp_path / "c.json")]) is not None


def test_the_gc_pause_ends_once_resumed() -> None:
    assert gc.isenabled()
    resume = _pause_gc()
    try:
        assert not gc.isenabled()
        resume()
        assert gc.isenabled()
        resume()
        assert gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()
