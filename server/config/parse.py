"""The whole config file, decoded: taskorch's top-level keys, its agents and its sections.

Keys that are not taskorch's (Claude Desktop keeps `globalShortcut`,
`preferences` and others in the same file) are ignored with a DEBUG line, or
a WARNING when one looks like a misspelt taskorch key; a top-level `null`
counts as absent. The server table is `mcpServers` (also `mcp_servers`, and
VS Code's `servers`).
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar, get_args

from pydantic import BaseModel, ValidationError

from executor._utils import json_kind
from executor.downstream.specs import ServerSpec
from executor.errors import ConfigError
from executor.policy import AgentConfig, ModelSettings
from executor.store.location import DatabaseUrl, locate
from server.config.env import check_env_name, expand, reject_api_key
from server.config.errors import (
    PATTERN_RULES,
    Location,
    ParseContext,
    check_object,
    from_validation,
)
from server.config.keys import normalise_keys
from server.config.mcp_servers import parse_servers
from server.config.model import Limits, LogLevel, TaskorchConfig
from server.config.paths import TOP_KEYS

__all__ = ["parse_config"]

logger = logging.getLogger(__name__)

_AGENT_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def parse_config(
    data: object,
    *,
    source: str = "<config>",
    env: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
) -> TaskorchConfig:
    """Build a config from already-decoded JSON.

    Args:
        data: The decoded file: a JSON object.
        source: How to name the data in error messages (the file's path).
        env: Environment for `${VAR}` references; `os.environ` when `None`.
        base_dir: Directory a relative `database` path is relative to; when
            `None` it stays relative (to the working directory).

    Returns:
        The config, with `config_path` unset.

    Raises:
        ConfigError: Anything is wrong; the message names `source`, the key
            path and what to fix, and never a value.
    """
    ctx = ParseContext(source=source, env=os.environ if env is None else env)
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{source}: the top level must be a JSON object ({{...}}), not {json_kind(data)}"
        )
    check_object(data, ctx, ())
    raw = _taskorch_keys(data, ctx)
    fields: dict[str, Any] = {}
    if "servers" in raw:
        value, where = raw["servers"]
        fields["servers"] = parse_servers(value, ctx, where)
    if "agents" in raw:
        value, where = raw["agents"]
        fields["agents"] = _parse_agents(value, ctx, where)
    for name in ("model", "default_agent", "api_base", "log_level"):
        if name in raw:
            fields[name] = _string(*raw[name], ctx)
    if "api_key_env" in raw:
        fields["api_key_env"] = _string(*raw["api_key_env"], ctx)
        check_env_name(fields["api_key_env"], ctx, raw["api_key_env"][1])
    if "default_agent" in fields and not _AGENT_NAME.match(fields["default_agent"]):
        raise ctx.error(raw["default_agent"][1], PATTERN_RULES[r"^[A-Za-z0-9_.-]+$"])
    if "log_level" in fields:
        fields["log_level"] = _log_level(fields["log_level"], ctx, raw["log_level"][1])
    if "allow_sampling" in raw:
        value, where = raw["allow_sampling"]
        if not isinstance(value, bool):
            raise ctx.error(where, f"must be true or false, not {json_kind(value)}")
        fields["allow_sampling"] = value
    if "limits" in raw:
        fields["limits"] = _parse_section(*raw["limits"], Limits, ctx)
    if "model_settings" in raw:
        fields["model_settings"] = _parse_section(*raw["model_settings"], ModelSettings, ctx)
    if "database" in raw:
        fields["database"] = _database(*raw["database"], ctx, base_dir)
    _check_server_timeouts(
        fields.get("servers", {}), fields.get("limits", Limits()), ctx, raw.get("servers")
    )
    try:
        return TaskorchConfig.model_validate(fields)
    except ValidationError as exc:
        error = from_validation(exc, ctx, (), _spelt_like(raw), TaskorchConfig)
    raise error


def _taskorch_keys(
    data: Mapping[str, Any], ctx: ParseContext
) -> dict[str, tuple[object, Location]]:
    """Pick taskorch's keys: field name -> (raw value, path as spelt); log the others."""
    raw: dict[str, tuple[object, Location]] = {}
    ignored: list[str] = []
    for key, value in data.items():
        field = TOP_KEYS.get(key)
        if field is None:
            reject_api_key({key: value}, ctx, ())
            ignored.append(key)
            continue
        if field in raw:
            first = raw[field][1][0]
            raise ctx.error((key,), f"the same setting as {first!r} (another spelling); keep one")
        if value is not None:
            raw[field] = (value, (key,))
    for key in ignored:
        close = difflib.get_close_matches(key.lower(), list(TOP_KEYS), n=1, cutoff=0.8)
        if close:
            logger.warning(
                "%s: ignoring the top-level key %r; did you mean %r?", ctx.source, key, close[0]
            )
    if ignored:
        logger.debug(
            "%s: ignoring top-level keys taskorch does not use: %s", ctx.source, ", ".join(ignored)
        )
    return raw


def _spelt_like(raw: Mapping[str, tuple[object, Location]]) -> dict[str | int, object]:
    """The taskorch keys as the file spelt them, for mapping error locations back."""
    return {where[0]: value for value, where in raw.values()}


def _string(value: object, path: Location, ctx: ParseContext) -> str:
    expanded = expand(value, ctx, path)
    if not isinstance(expanded, str):
        raise ctx.error(path, f"must be a string, not {json_kind(expanded)}")
    if not expanded:
        raise ctx.error(path, "must not be empty; remove the key to use the default")
    return expanded


def _database(
    value: object, path: Location, ctx: ParseContext, base_dir: Path | None
) -> Path | DatabaseUrl:
    """The `database` key: a file path (relative to `base_dir`) or a postgresql:// URL."""
    try:
        return locate(_string(value, path, ctx), base_dir)
    except ConfigError as exc:
        raise ctx.error(path, str(exc)) from None


def _log_level(value: str, ctx: ParseContext, path: Location) -> str:
    level = value.strip().upper()
    if level == "WARN":
        level = "WARNING"
    if level not in get_args(LogLevel):
        raise ctx.error(path, f"must be one of {', '.join(get_args(LogLevel))}")
    return level


_Section = TypeVar("_Section", bound=BaseModel)


def _parse_section(
    value: object, path: Location, model: type[_Section], ctx: ParseContext
) -> _Section:
    if not isinstance(value, Mapping):
        raise ctx.error(path, f"must be an object, not {json_kind(value)}")
    data: dict[str, Any] = expand(value, ctx, path)
    normalised = normalise_keys(data, model, ctx, path)
    try:
        return model.model_validate(normalised)
    except ValidationError as exc:
        error = from_validation(exc, ctx, path, data, model)
    raise error


def _check_server_timeouts(
    servers: Mapping[str, ServerSpec],
    limits: Limits,
    ctx: ParseContext,
    raw: tuple[object, Location] | None,
) -> None:
    if raw is None:
        return
    entries, path = raw
    assert isinstance(entries, Mapping)
    for name, spec in servers.items():
        if spec.timeout_s is not None and spec.timeout_s > limits.max_timeout_s:
            key = "timeoutS" if "timeoutS" in entries[name] else "timeout_s"
            raise ctx.error(
                (*path, name, key),
                f"{spec.timeout_s:g} s is over limits.max_timeout_s ({limits.max_timeout_s:g} s); "
                "lower it or raise limits.max_timeout_s",
            )


# --- agents ----------------------------------------------------------------------------------


def _parse_agents(raw: object, ctx: ParseContext, path: Location) -> dict[str, AgentConfig]:
    entries: list[tuple[str | None, Location, object]] = []
    if isinstance(raw, Mapping):
        check_object(raw, ctx, path)
        entries = [(key, (*path, key), value) for key, value in raw.items()]
    elif isinstance(raw, list):
        entries = [(None, (*path, i), value) for i, value in enumerate(raw)]
    else:
        raise ctx.error(
            path, f"must be an object of agents by name or an array of them, not {json_kind(raw)}"
        )
    agents: dict[str, AgentConfig] = {}
    for key, where, value in entries:
        agent = _parse_agent(key, value, ctx, where)
        if agent.name in agents:
            raise ctx.error(where, f"a second agent named {agent.name!r}; names must be unique")
        agents[agent.name] = agent
    return agents


def _parse_agent(key: str | None, raw: object, ctx: ParseContext, path: Location) -> AgentConfig:
    if not isinstance(raw, Mapping):
        raise ctx.error(path, f"an agent must be an object, not {json_kind(raw)}")
    data: dict[str, Any] = expand(raw, ctx, path)
    reject_api_key(data, ctx, path)
    for spelling in ("api_key_env", "apiKeyEnv"):
        check_env_name(data.get(spelling), ctx, (*path, spelling))
    if key is not None:
        if "name" in data and data["name"] != key:
            raise ctx.error(
                (*path, "name"),
                f"differs from the entry's key {key!r}; make them equal or drop name",
            )
        data["name"] = key
    elif "name" not in data:
        raise ctx.error((*path, "name"), "missing; an agent in an array needs a name")
    normalised = normalise_keys(data, AgentConfig, ctx, path)
    try:
        return AgentConfig.model_validate(normalised)
    except ValidationError as exc:
        error = from_validation(exc, ctx, path, data, AgentConfig)
    raise error
