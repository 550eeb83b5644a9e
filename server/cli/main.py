"""The entry point of the `taskorch` console script."""

from __future__ import annotations

import os
import sys

__all__ = ["main"]

# Commands that only read the database and print; `server.cli.quick` answers most
# lines of `plans`, `show` and `watch` without typer, models or an event loop.
_READ_COMMANDS = frozenset({"plans", "show", "watch", "stats"})


def main() -> None:
    """Run the command the arguments name; plain command lines skip typer's parser."""
    args = sys.argv[1:]
    if args == ["--version"]:
        # Asked by installers and scripts to check what is there: no command tree needed.
        from server._version import installed_version

        print(f"taskorch {installed_version()}")
        return
    if args and args[0] in _READ_COMMANDS:
        from server.cli.quick import answer

        code = answer(args)
        if code is not None:
            sys.exit(code)
        # pydantic looks for plugins (observers of validation, such as logfire's) by
        # reading every installed distribution's entry points when the first model is
        # built (about 2 % of a read command's start-up), for nothing a read needs.
        # Its documented switch; a value the user set (even empty, which keeps every
        # plugin) wins.
        os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    import typer

    from server.cli.commands import app, commands
    from server.cli.fast import fast_arguments

    command = commands().get(args[0]) if args else None
    if command is not None and (arguments := fast_arguments(command, args[1:])) is not None:
        try:
            command(**arguments)
        except typer.BadParameter as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except typer.Exit as exc:
            sys.exit(exc.exit_code)
        except typer.Abort:
            # A question answered with end of input, as typer reports it.
            print("Aborted.", file=sys.stderr)
            sys.exit(1)
        return
    app()
