"""Reading the config file, and choosing the database with it.

Where the files are is `server.config.paths` (re-exported here): a missing
config file at the default location is an empty config, a missing explicit
file is an error. The database (a file path for SQLite, or a `postgresql://`
URL) is `--db`, else `$TASKORCH_DB`, else the config's `database` (a path
relative to the config file's directory), else the default.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from executor.errors import ConfigError
from executor.store.location import DatabaseUrl, locate
from server.config.errors import JsonObject
from server.config.model import TaskorchConfig
from server.config.parse import parse_config
from server.config.paths import (
    CONFIG_ENV_VAR,
    DB_ENV_VAR,
    default_config_path,
    default_db_path,
    locate_config,
    resolve_config_path,
)

__all__ = [
    "CONFIG_ENV_VAR",
    "DB_ENV_VAR",
    "default_config_path",
    "default_db_path",
    "load_config",
    "local_dir",
    "resolve_config_path",
    "resolve_db_path",
]

logger = logging.getLogger(__name__)


def local_dir(database: Path | DatabaseUrl) -> Path:
    """Where files that go with the database are kept: beside an SQLite file, else the default."""
    return database.parent if isinstance(database, Path) else default_db_path().parent


def load_config(
    path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None
) -> TaskorchConfig:
    """Find, read and parse the config file.

    Args:
        path: The explicit config file (`--config`), if any.
        env: The environment, for `TASKORCH_CONFIG` and `${VAR}` references;
            `os.environ` when `None`.

    Returns:
        The config, with `config_path` set to the file read; an empty config
        when the default file does not exist.

    Raises:
        ConfigError: The explicit file is missing or unreadable, or anything
            in it is wrong.
    """
    environ = os.environ if env is None else env
    file, origin = locate_config(path, environ)
    message: str
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        if origin is None:
            logger.debug("no config file at %s; starting with no servers", file)
            return TaskorchConfig()
        message = f"{file}: config file not found ({origin}); check the path"
    except IsADirectoryError:
        message = f"{file}: is a directory, not a config file; give the JSON file's path"
    except OSError as exc:
        message = f"{file}: cannot read the config file: {exc.strerror or exc}"
    else:
        source = str(file)
        data = _decode_json(raw, source)
        absolute = file.absolute()
        config = parse_config(data, source=source, env=environ, base_dir=absolute.parent)
        return config.model_copy(update={"config_path": absolute})
    raise ConfigError(message)


def resolve_db_path(
    cli_value: str | os.PathLike[str] | None = None,
    config: TaskorchConfig | None = None,
    env: Mapping[str, str] | None = None,
) -> Path | DatabaseUrl:
    """Choose the database: `--db`, else `TASKORCH_DB`, else the config's, else the default.

    The directory is not created here; whoever opens the database does that.

    Args:
        cli_value: The explicit path or postgresql:// URL (`--db`), if any; an empty
            string counts as none.
        config: The loaded config, whose `database` is already relative to its file.
        env: The environment; `os.environ` when `None`.

    Raises:
        ConfigError: A URL that is not a PostgreSQL one, or does not parse.
    """
    environ = os.environ if env is None else env
    if cli_value is not None and os.fspath(cli_value) != "":
        return locate(cli_value)
    named = environ.get(DB_ENV_VAR)
    if named:
        return locate(named)
    if config is not None and config.database is not None:
        return config.database
    return default_db_path()


# --- JSON ------------------------------------------------------------------------------------


def _object_pairs(pairs: list[tuple[str, Any]]) -> JsonObject:
    obj = JsonObject()
    repeated: list[str] = []
    for key, value in pairs:
        if key in obj:
            repeated.append(key)
        obj[key] = value
    if repeated:
        obj.duplicates = tuple(repeated)
    return obj


def _decode_json(raw: bytes, source: str) -> object:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        message = f"{source}: not UTF-8 text (bad byte at offset {exc.start}); save it as UTF-8"
    else:
        try:
            return json.loads(text, object_pairs_hook=_object_pairs)
        except json.JSONDecodeError as exc:
            message = (
                f"{source}: invalid JSON at line {exc.lineno}, column {exc.colno}: "
                f"{exc.msg}{_json_hint(text, exc.pos)}"
            )
    # Raised outside the handler so no traceback carries the file's text along.
    raise ConfigError(message)


def _json_hint(text: str, pos: int) -> str:
    if not text.strip():
        return " (the file is empty; write {} for an empty config)"
    char = text[pos : pos + 1]
    if char in {"}", "]"}:
        return " (a trailing comma? JSON allows none)"
    if char in {"/", "#"}:
        return " (JSON allows no comments)"
    if char == "'":
        return " (JSON strings take double quotes)"
    return ""
