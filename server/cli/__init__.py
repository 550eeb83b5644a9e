"""The `taskorch` command line: `main`, `commands`, `serve`, `printing`, `common`."""

from __future__ import annotations

import typing

from executor._utils import export_lazily as _export_lazily

if typing.TYPE_CHECKING or not _export_lazily(globals()):
    from server.cli.commands import app as app
    from server.cli.main import main as main
