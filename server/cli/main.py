"""The entry point of the `taskorch` console script."""

from __future__ import annotations

import sys

__all__ = ["main"]


def main() -> None:
    """Run the command the arguments name; the commonest cases skip typer's parsing."""
    args = sys.argv[1:]
    if args == ["--version"]:
        # Asked by installers and scripts to check what is there: no command tree needed.
        from server._version import installed_version

        print(f"taskorch {installed_version()}")
        return
    import typer

    from server.cli.commands import app
    from server.cli.serve import serve, serve_fast_options

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
