"""A small note / key-value store, one file per key under a data directory.

The directory is `--data-dir DIR`, else `TASKORCH_NOTES_DIR`, else the user data
directory (`platformdirs`). Writes are atomic (write a temp file, then rename),
so a crash never leaves half a note.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import threading
from pathlib import Path
from typing import Annotated

import platformdirs
from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations
from pydantic import BaseModel, Field

from server.examples._common import run_stdio

server = MCPServer(
    "notes",
    instructions="A key-value note store: put, get, append, list_notes, delete.",
)

_KEY = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
Key = Annotated[
    str,
    Field(pattern=_KEY, description="Note name: letters, digits, '_', '.', '-'; up to 128."),
]
_lock = threading.Lock()
_data_dir: Path | None = None

_READ = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False)


def data_dir() -> Path:
    """The directory notes live in, created on first use."""
    global _data_dir
    if _data_dir is None:
        configured = os.environ.get("TASKORCH_NOTES_DIR")
        default = Path(platformdirs.user_data_dir("taskorch")) / "notes"
        base = Path(configured) if configured else default
        base.mkdir(parents=True, exist_ok=True)
        _data_dir = base
    return _data_dir


def _path(key: str) -> Path:
    if not re.fullmatch(_KEY, key):
        raise ToolError(f"bad note name {key!r}: use letters, digits, '_', '.', '-'")
    return data_dir() / f"{key}.note"


def _write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Written(BaseModel):
    key: str = Field(description="The note's name.")
    bytes: int = Field(description="The note's size after the write, in UTF-8 bytes.")
    created: bool = Field(description="Whether the note did not exist before.")


@server.tool(
    annotations=ToolAnnotations(
        read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False
    ),
    title="Save a note",
)
def put(key: Key, text: Annotated[str, Field(max_length=1_000_000)]) -> Written:
    """Save a note under a name, replacing any note of that name."""
    path = _path(key)
    with _lock:
        created = not path.exists()
        _write(path, text)
    return Written(key=key, bytes=len(text.encode()), created=created)


@server.tool(
    annotations=ToolAnnotations(
        read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False
    ),
    title="Append to a note",
)
def append(
    key: Key,
    text: Annotated[str, Field(max_length=1_000_000)],
    separator: Annotated[str, Field(max_length=10, description="Put between old and new.")] = "\n",
) -> Written:
    """Add text at the end of a note (creating it when missing). Not idempotent: each call adds."""
    path = _path(key)
    with _lock:
        created = not path.exists()
        old = "" if created else path.read_text(encoding="utf-8")
        new = text if created or not old else old + separator + text
        _write(path, new)
    return Written(key=key, bytes=len(new.encode()), created=created)


class Note(BaseModel):
    key: str = Field(description="The note's name.")
    found: bool = Field(description="Whether a note of that name exists.")
    text: str = Field(description="Its text (empty when not found).")


@server.tool(annotations=_READ, title="Read a note")
def get(key: Key) -> Note:
    """Read a note; `found` is false (and `text` empty) when there is none of that name."""
    path = _path(key)
    try:
        return Note(key=key, found=True, text=path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Note(key=key, found=False, text="")


class NoteList(BaseModel):
    keys: list[str] = Field(description="Note names, sorted.")
    count: int = Field(description="How many.")


@server.tool(annotations=_READ, title="List notes")
def list_notes(
    prefix: Annotated[str, Field(max_length=128, description="Only names with this prefix.")] = "",
) -> NoteList:
    """List the names of the saved notes, optionally only those starting with `prefix`."""
    keys = sorted(
        p.name[: -len(".note")] for p in data_dir().glob("*.note") if p.name.startswith(prefix)
    )
    return NoteList(keys=keys, count=len(keys))


class Deleted(BaseModel):
    key: str
    deleted: bool = Field(description="Whether a note was there to delete.")


@server.tool(
    annotations=ToolAnnotations(
        read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False
    ),
    title="Delete a note",
)
def delete(key: Key) -> Deleted:
    """Delete a note; deleting a missing note is not an error (`deleted` is false)."""
    path = _path(key)
    with _lock:
        try:
            path.unlink()
        except FileNotFoundError:
            return Deleted(key=key, deleted=False)
    return Deleted(key=key, deleted=True)


def main(argv: list[str] | None = None) -> None:
    global _data_dir
    parser = argparse.ArgumentParser(prog="python -m server.examples.notes_server")
    parser.add_argument("--data-dir", type=Path, help="where notes are kept")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.data_dir is not None:
        args.data_dir.mkdir(parents=True, exist_ok=True)
        _data_dir = args.data_dir
    run_stdio(server)


if __name__ == "__main__":
    main()
