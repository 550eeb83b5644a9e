"""Where the config file and the database are, and a look at the config that builds nothing.

The config file is `--config`, else `$TASKORCH_CONFIG`, else
`platformdirs.user_config_dir("taskorch")/config.json`. The database is
`--db`, else `$TASKORCH_DB`, else the config's `database`, else
`platformdirs.user_data_dir("taskorch")/taskorch.db`.

`database_at_a_glance` finds the database the way `load_config` and
`resolve_db_path` do, for the command line's read commands, which must start
fast: it decodes the file and checks its top-level keys, but builds no config
model, so it does not check the server entries, agents or limits (reads do not
use them; `taskorch config check` and every command that uses them do).
Whatever it cannot decide alone (a file that is not plain JSON, an unknown
key, a `${VAR}` in `database`) it leaves to `load_config`, which says what to
fix.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import platformdirs

from executor.errors import ConfigError
from executor.store.location import DatabaseUrl, locate

__all__ = [
    "CONFIG_ENV_VAR",
    "DB_ENV_VAR",
    "LOG_LEVELS",
    "TOP_KEYS",
    "database_at_a_glance",
    "default_config_path",
    "default_db_path",
    "locate_config",
    "resolve_config_path",
]

CONFIG_ENV_VAR = "TASKORCH_CONFIG"
"""Environment variable naming the config file when `--config` is not given."""
DB_ENV_VAR = "TASKORCH_DB"
"""Environment variable naming the database when `--db` is not given."""

TOP_KEYS: Final = {
    "mcpServers": "servers",
    "mcp_servers": "servers",
    "servers": "servers",
    "agents": "agents",
    "default_agent": "default_agent",
    "defaultAgent": "default_agent",
    "model": "model",
    "api_base": "api_base",
    "apiBase": "api_base",
    "api_key_env": "api_key_env",
    "apiKeyEnv": "api_key_env",
    "model_settings": "model_settings",
    "modelSettings": "model_settings",
    "limits": "limits",
    "database": "database",
    "log_level": "log_level",
    "logLevel": "log_level",
    "allow_sampling": "allow_sampling",
    "allowSampling": "allow_sampling",
}
"""Each key the config file's top level takes, and the setting it fills."""

LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
"""The log levels (`--log-level`, the config's `log_level`, which also takes `WARN`)."""


def default_config_path() -> Path:
    """The config file used when neither `--config` nor `TASKORCH_CONFIG` names one."""
    return Path(platformdirs.user_config_dir("taskorch")) / "config.json"


def default_db_path() -> Path:
    """The database used when nothing else names one."""
    return Path(platformdirs.user_data_dir("taskorch")) / "taskorch.db"


def locate_config(
    path: str | os.PathLike[str] | None, env: Mapping[str, str]
) -> tuple[Path, str | None]:
    """The config file and how it was chosen (`None` for the default location)."""
    if path is not None and os.fspath(path) != "":
        return Path(path).expanduser(), "given explicitly"
    named = env.get(CONFIG_ENV_VAR)
    if named:
        return Path(named).expanduser(), f"named by {CONFIG_ENV_VAR}"
    return default_config_path(), None


def resolve_config_path(
    path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None
) -> Path:
    """Choose the config file: `path` (`--config`), else `TASKORCH_CONFIG`, else the default.

    Args:
        path: The explicit path, if any; an empty string counts as none.
        env: The environment; `os.environ` when `None`.
    """
    return locate_config(path, os.environ if env is None else env)[0]


class _Unsure(ValueError):
    """The file says something only the whole config's reading can judge."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        raise _Unsure  # a repeated key is an error `load_config` explains
    return found


def database_at_a_glance(
    db: str | None, config: str | os.PathLike[str] | None, env: Mapping[str, str] | None = None
) -> Path | DatabaseUrl | None:
    """The database `--db`, `--config` and the environment name, without building the config.

    Args:
        db: `--db`, if given.
        config: `--config`, if given.
        env: The environment; `os.environ` when `None`.

    Returns:
        Where the database is, as `resolve_db_path(db, load_config(config))`
        would say for a valid config; `None` when only `load_config` can tell
        (or tell what is wrong).
    """
    environ = os.environ if env is None else env
    file, origin = locate_config(config, environ)
    data: dict[str, Any] = {}
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        if origin is not None:
            return None  # an explicit file that is missing is an error
    except OSError:
        return None
    else:
        try:
            decoded = json.loads(raw.decode("utf-8-sig"), object_pairs_hook=_unique_keys)
        except ValueError:
            return None
        if not isinstance(decoded, dict) or any(key not in TOP_KEYS for key in decoded):
            return None
        data = decoded
    level = data.get("log_level", data.get("logLevel", "WARNING"))
    if not isinstance(level, str) or level.strip().upper() not in (*LOG_LEVELS, "WARN"):
        return None
    try:
        if db:
            return locate(db)
        named = environ.get(DB_ENV_VAR)
        if named:
            return locate(named)
        if "database" not in data:
            return default_db_path()
        value = data["database"]
        if not isinstance(value, str) or "$" in value or not value.strip():
            return None  # `${VAR}` references and wrong values are the reader's to explain
        return locate(value, file.absolute().parent)
    except ConfigError:
        return None
