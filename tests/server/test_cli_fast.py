"""The fast reading of plain command lines agrees with typer; start-up's GC pause ends."""

from __future__ import annotations

import gc
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.core import TyperGroup

from server.cli import app
from server.cli.commands import commands
from server.cli.common import pause_gc
from server.cli.fast import fast_arguments
from server.cli.quick import quick_arguments


def _typer_params(name: str, args: list[str]) -> dict[str, Any]:
    group = typer.main.get_command(app)
    assert isinstance(group, TyperGroup)
    parent = group.make_context("taskorch", [name, *args])
    command = group.get_command(parent, name)
    assert command is not None
    return dict(command.make_context(name, list(args), parent=parent).params)


def _fast(name: str, args: list[str]) -> dict[str, Any] | None:
    return fast_arguments(commands()[name], args)


def _with_defaults(fn: Callable[..., Any], given: dict[str, Any]) -> dict[str, Any]:
    defaults = {
        n: p.default
        for n, p in inspect.signature(fn).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    return {**defaults, **given}


def _normal(params: dict[str, Any]) -> dict[str, Any]:
    # Typer gives an empty tuple for a repeatable option not given; commands read both as none.
    return {k: (list(v) or None) if isinstance(v, list | tuple) else v for k, v in params.items()}


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("serve", []),
        ("serve", ["--config", "c.json", "--db", "t.db"]),
        ("serve", ["--config=c.json", "--db=sub/t.db", "--log-level", "debug"]),
        ("serve", ["--db", "postgresql://orch:pw@db.internal:5432/taskorch?sslmode=require"]),
        ("serve", ["--http", "--host", "0.0.0.0", "--port", "9000", "--token", "secret"]),
        ("serve", ["--allow-host", "a.example", "--http", "--allow-host=b.example:8000"]),
        ("serve", ["--http", "--max-connections", "16", "--request-timeout=2.5"]),
        ("serve", ["--http", "--host", "0.0.0.0", "--insecure-no-token", "--keep-alive", "3"]),
        ("serve", ["--log-level", "loud"]),  # the command itself refuses it, as under typer
        ("serve", ["--log-format", "json", "--log-level=info"]),
        ("serve", ["--log-format", "yaml"]),  # refused by the command too
        ("plans", []),
        ("plans", ["--status", "completed", "--status=failed", "--limit", "5"]),
        ("plans", ["--session", "s1", "--db", "t.db"]),
        ("plans", ["--db", "postgresql://orch@db.internal/taskorch"]),
        ("show", ["abc123"]),
        ("show", ["abc123", "--json", "--version", "2"]),
        ("show", ["--graph", "abc123", "--config", "c.json"]),
        ("watch", ["abc123", "--interval", "0.5"]),
        ("confirm", ["abc123", "--reject", "--hash", "v1:00", "--reason", "no"]),
        ("confirm", ["abc123", "--no-reject"]),
        ("run", ["plan.json", "-y", "--on-interrupted", "skip"]),
        ("run", ["abc123", "--yes", "--agent", "a"]),
        ("run", ["plan.json", "--yes", "--log-format=json"]),
        ("cancel", ["abc123", "--wait", "0"]),
        ("stats", ["--server", "s", "--since", "1d", "--limit", "3", "--json"]),
        ("plan", ["count the words", "--steps", "s.json", "--session", "s"]),
        ("plan", ["count the words", "--log-format", "text"]),
        ("demo", ["--keep"]),
    ],
)
def test_fast_arguments_are_what_typer_parses(name: str, args: list[str]) -> None:
    fast = _fast(name, args)
    assert fast is not None
    expected = _normal(_typer_params(name, args))
    assert _normal(_with_defaults(commands()[name], fast)) == expected


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("serve", ["--help"]),
        ("serve", ["--port", "eighty"]),
        ("serve", ["--port"]),
        ("serve", ["--db", "a.db", "--db", "b.db"]),
        ("serve", ["--http", "--http"]),
        ("serve", ["--config", ""]),
        ("serve", ["--token", "--http"]),
        ("serve", ["--unknown", "x"]),
        ("serve", ["--request-timeout", "soon"]),
        ("serve", ["--max-connections", "1.5"]),
        ("serve", ["--insecure-no-token", "--insecure-no-token"]),
        ("serve", ["positional"]),
        ("serve", ["--", "--http"]),
        ("serve", ["--http=yes"]),
        ("show", []),
        ("show", ["a", "b"]),
        ("show", ["abc123", "--version", "-1"]),
        ("cancel", ["abc123", "--wait", "-1"]),
        ("stats", ["--limit", "0"]),
        ("plans", ["-h"]),
    ],
)
def test_anything_unusual_is_left_to_typer(name: str, args: list[str]) -> None:
    assert _fast(name, args) is None


def test_every_command_is_read_fast_or_left_to_typer_as_a_whole() -> None:
    # Declarations this reader does not understand make it step aside for the command.
    assert set(commands()) == {
        "serve",
        "plan",
        "confirm",
        "run",
        "plans",
        "show",
        "watch",
        "cancel",
        "stats",
        "demo",
    }
    for name in commands():
        assert _fast(name, ["--help"]) is None
    # Groups (`config check`, `auth login`) are typer's: `main` finds no command by their name.
    assert {g.name for g in app.registered_groups} == {"config", "auth"}


def test_a_directory_as_config_is_left_to_typer(tmp_path: Path) -> None:
    assert _fast("serve", ["--config", str(tmp_path)]) is None
    assert _fast("serve", ["--config", str(tmp_path / "c.json")]) is not None
    with pytest.raises(typer.BadParameter):
        _typer_params("serve", ["--config", str(tmp_path)])


def test_the_gc_pause_ends_once_resumed() -> None:
    assert gc.isenabled()
    resume = pause_gc()
    try:
        assert not gc.isenabled()
        resume()
        assert gc.isenabled()
        resume()
        assert gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()


def _plain(params: dict[str, Any]) -> dict[str, Any]:
    # The quick reader hands paths on as text; typer makes `--config` a Path.
    return {k: str(v) if isinstance(v, Path) else v for k, v in _normal(params).items()}


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("plans", []),
        ("plans", ["--status", "completed", "--status=failed", "--limit", "5"]),
        ("plans", ["--session", "s1", "--db", "t.db", "--config", "c.json", "--log-level=debug"]),
        ("show", ["abc123"]),
        ("show", ["abc123", "--version", "2"]),
        ("show", ["--version=3", "abc123", "--db=x.db"]),
        ("watch", ["abc123"]),
        ("watch", ["abc123", "--interval", "0.5", "--config=c.json"]),
    ],
)
def test_quick_arguments_are_what_typer_parses(name: str, args: list[str]) -> None:
    quick = quick_arguments(name, args)
    assert quick is not None
    expected = _plain(_typer_params(name, args))
    assert _plain(_with_defaults(commands()[name], quick)) == expected


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("plans", ["-h"]),
        ("plans", ["--help"]),
        ("plans", ["--limit", "x"]),
        ("plans", ["--limit", "-1"]),
        ("plans", ["--limit", "9" * 30]),
        ("show", ["abc123", "--version", "9" * 19]),
        ("plans", ["--limit"]),
        ("plans", ["--db", "a.db", "--db", "b.db"]),
        ("plans", ["--config="]),
        ("plans", ["--", "x"]),
        ("plans", ["stray"]),
        ("show", []),
        ("show", ["a", "b"]),
        ("show", ["abc123", "--json"]),
        ("show", ["abc123", "--graph"]),
        ("show", ["abc123", "--version", "-1"]),
        ("watch", ["abc123", "--interval", "soon"]),
        ("watch", ["abc123", "--unknown", "x"]),
    ],
)
def test_anything_unusual_is_left_to_the_full_command(name: str, args: list[str]) -> None:
    assert quick_arguments(name, args) is None
