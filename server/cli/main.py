"""The entry point of the `taskorch` console script."""

from __future__ import annotations

import sys

import typer

from server.cli.commands import app
from server.cli.serve import serve, serve_fast_options

__all__ = ["main"]


def main() -> None:
    """Run the command the arguments name (plain `serve` arguments are read without typer)."""
    args = sys.argv[1:]
    if args[:1] == ["serve"] and (options := serve_fast_options(args[1:])) is not None:
        # Typer's parsing adds to `serve`'s cold start (it builds the whole command
        # tree and a pydantic adapter per option); a host starts the server often.
        try:
            serve(**options)
        except typer.BadParameter as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except typer.Exit as exc:
            sys.exit(exc.exit_code)
        return
    app()
