"""Config loading: one JSON file, Claude Desktop's `mcpServers` pasted verbatim.

The file is a JSON object. Its `mcpServers` object is the one Claude Desktop
uses, accepted as is; the other keys are taskorch's own:

```json
{
  "mcpServers": {
    "fs": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "/tmp"]},
    "github": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-github"],
               "env": {"GITHUB_PERSONAL_ACCESS_TOKEN": "${GITHUB_TOKEN}"}},
    "docs": {"url": "https://example.com/mcp", "headers": {"Authorization": "Bearer ${DOCS_TOKEN}"},
             "timeout_s": 60, "denied_tools": ["delete_*"]}
  },
  "agents": {"researcher": {"system_prompt": "...", "tool_policy": {"allow": ["docs"]}}},
  "default_agent": "researcher",
  "model": "openai/gpt-4o-mini",
  "api_base": null,
  "api_key_env": "OPENAI_API_KEY",
  "model_settings": {"timeout_s": 60},
  "limits": {"max_concurrent_executions": 4, "max_parallel_steps": 16},
  "database": "taskorch.db",
  "log_level": "INFO"
}
```

Spelling of keys. taskorch's own keys are written in snake_case (the Python
field names, as in `timeout_s`); the camelCase spelling is accepted for every
one of them too (`defaultAgent`, `apiBase`, `apiKeyEnv`, `logLevel`,
`timeoutS`, `maxConcurrency`, `allowedTools`, `deniedTools`, and inside
`agents` and `limits`), because the file is Claude Desktop's, which is
camelCase. Giving both spellings of one key is an error. The server table is
`mcpServers` (Claude Desktop); `mcp_servers` and `servers` (VS Code's
`mcp.json`) are read as the same table.

Top-level keys. Keys that are not taskorch's (Claude Desktop keeps
`globalShortcut`, `preferences` and others in the same file) are ignored with
a DEBUG log line naming them, or a WARNING when one looks like a misspelt
taskorch key. A top-level value of `null` counts as absent.

Server entries, read as Claude Desktop writes them:

- `{"command", "args", "env", "cwd"}` is a stdio server;
- `{"url", "headers"}` is a streamable HTTP server, unless the URL's path ends
  in `/sse` (the older HTTP+SSE transport) or its scheme is `ws://`/`wss://`
  (WebSocket);
- a `type` (or `transport`, or Cline's `transportType`) key picks the
  transport explicitly: `stdio`, `http` (also `streamable-http`,
  `streamableHttp`), `sse`, `websocket` (also `ws`);
- optional: `timeout_s`, `max_concurrency`, `allowed_tools`, `denied_tools`;
- `"disabled": true` skips the server; keys other clients add and taskorch
  has no use for (`autoApprove`, `alwaysAllow`, `description`, `timeout`, ...)
  are ignored with a DEBUG line; any other key is an error, so that a typo
  such as `arg` is caught instead of silently dropped.

Environment references. Every string value in taskorch's sections may use
`${VAR}` (an unset variable is an error naming it, the file and the key path)
or `${VAR:-default}` (the default when the variable is unset or empty); `$${`
is a literal `${`. Keys are never expanded, and nothing in ignored keys or
disabled servers is.

Secrets. The `env` values of a stdio server and the `headers` of a remote one
become `SecretStr` in the specs (see `executor.specs`), so they never show in
`repr`, `model_dump_json()` or logs; no error message here ever quotes the
value of any key. API keys are never read from the file: `api_key_env` names
the environment variable that holds one.

Where things are. The config file is the explicit path (the CLI's `--config`),
else `$TASKORCH_CONFIG`, else `platformdirs.user_config_dir("taskorch")/config.json`;
a missing file at the default location is an empty config, a missing explicit
file is an error. The database is the explicit path (`--db`), else
`$TASKORCH_DB`, else the config's `database` (relative to the config file's
directory), else `platformdirs.user_data_dir("taskorch")/taskorch.db`.

Server names are the `mcpServers` keys: 1 to 64 characters without `.`,
`*`, `?`, `[`, `]` or control whitespace, and no space at either end, because
tools are written `server.tool` and matched with globs.

Models. `model_for()` picks an agent's model: the agent's `model`, else the
config's `model`, else `$TASKORCH_MODEL`; `api_base`, `api_key_env` and each
field of `model_settings` (`max_tokens`, `timeout_s`, `response_mode`: how the
planner asks the model, see `executor.policy.ModelSettings`) come from that
level or a more specific one (`$TASKORCH_API_BASE` and `$TASKORCH_API_KEY_ENV`
go with `$TASKORCH_MODEL`). It is the only place that makes this choice.

Every problem raises `executor.errors.ConfigError` with a message of the form
`<file>: <key path>: <what is wrong and what to do>`.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar, get_args
from urllib.parse import urlsplit

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

from executor._utils import json_kind
from executor.builtins import BUILTIN_SERVER
from executor.errors import ConfigError
from executor.policy import DEFAULT_MAX_STEPS, AgentConfig, MaxSteps, ModelSettings
from executor.specs import (
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_TIMEOUT_S,
    HttpServerSpec,
    ServerSpec,
    SseServerSpec,
    StdioServerSpec,
    WebSocketServerSpec,
)
from executor.store.location import DatabaseUrl, locate

__all__ = [
    "API_BASE_ENV_VAR",
    "API_KEY_ENV_ENV_VAR",
    "CONFIG_ENV_VAR",
    "DB_ENV_VAR",
    "MODEL_ENV_VAR",
    "Limits",
    "LogLevel",
    "ModelChoice",
    "TaskorchConfig",
    "default_config_path",
    "default_db_path",
    "load_config",
    "local_dir",
    "model_for",
    "parse_config",
    "resolve_config_path",
    "resolve_db_path",
]

logger = logging.getLogger(__name__)

CONFIG_ENV_VAR = "TASKORCH_CONFIG"
"""Environment variable naming the config file when `--config` is not given."""
DB_ENV_VAR = "TASKORCH_DB"
"""Environment variable naming the database when `--db` is not given."""
MODEL_ENV_VAR = "TASKORCH_MODEL"
"""Environment variable naming the litellm model when neither agent nor config does."""
API_BASE_ENV_VAR = "TASKORCH_API_BASE"
"""Environment variable giving the model endpoint that goes with `TASKORCH_MODEL`."""
API_KEY_ENV_ENV_VAR = "TASKORCH_API_KEY_ENV"
"""Environment variable naming the variable that holds the key for `TASKORCH_MODEL`."""

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
"""The log levels a config may set."""

Location = tuple[str | int, ...]
"""A key path inside the config: object keys and array indexes."""

# A server name is written `server.tool` and matched by globs (see
# `executor.policy.ToolPolicy`), so it may hold no dot, glob character or space.
_SERVER_NAME = re.compile(r"^(?! )[^\t\n\r\f\v.*?\[\]]{1,64}(?<! )$")
_AGENT_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_PLAIN_SEGMENT = re.compile(r"^[A-Za-z0-9_$-]+$")


class Limits(BaseModel):
    """Global bounds on what taskorch runs at once and how long it waits."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_concurrent_executions: int = Field(default=4, ge=1, le=1024)
    """Plans running at the same time."""
    max_parallel_steps: int = Field(default=16, ge=1, le=4096)
    """Steps in flight at once within one plan (an agent may lower it)."""
    max_calls_per_server: int = Field(default=DEFAULT_MAX_CONCURRENCY, ge=1, le=1024)
    """Calls in flight to one server when its entry sets no `max_concurrency`."""
    default_timeout_s: float = Field(default=DEFAULT_TIMEOUT_S, gt=0)
    """Per-call timeout when neither the step nor the server sets one."""
    max_timeout_s: float = Field(default=3600.0, gt=0)
    """The longest per-call timeout any step or server may ask for."""
    max_steps: MaxSteps = DEFAULT_MAX_STEPS
    """Most steps any plan may have, whatever its agent allows; the built-in default
    agent allows exactly this many."""
    max_repairs: int = Field(default=2, ge=0, le=20)
    """Times the planner may try to repair a plan that failed validation."""
    run_lease_s: float = Field(default=30.0, ge=1, le=86_400)
    """How long a process's claim on a running plan lasts unless renewed; another
    taskorch on the same database takes the run over once it lapses."""
    answer_budget_tokens: int = Field(default=8000, ge=500, le=1_000_000)
    """Most tokens (counted as 4 bytes each) of one tool answer or resource that carries
    step outputs; larger outputs come back as a preview and a link."""

    @model_validator(mode="after")
    def _timeouts_in_order(self) -> Limits:
        if self.default_timeout_s > self.max_timeout_s:
            raise ValueError(
                f"default_timeout_s ({self.default_timeout_s:g}) must not exceed "
                f"max_timeout_s ({self.max_timeout_s:g}); lower one or raise the other"
            )
        return self


class TaskorchConfig(BaseModel):
    """Everything read from the config file, environment references expanded."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    servers: dict[str, ServerSpec] = Field(default_factory=dict)
    """Downstream servers by name (`mcpServers`), disabled ones left out."""
    agents: dict[str, AgentConfig] = Field(default_factory=dict)
    """Agents defined in the file, by name (the database may hold more)."""
    default_agent: str | None = None
    """The agent used when a request names none; a config or a database agent."""
    model: str | None = None
    """litellm model string for agents that name none (else `TASKORCH_MODEL`)."""
    api_base: str | None = Field(default=None, pattern=r"^https?://")
    """Endpoint for `model`, when not the provider's default."""
    api_key_env: str | None = Field(default=None, pattern=_ENV_NAME.pattern)
    """Name of the environment variable holding the key for `model` (never the key)."""
    model_settings: ModelSettings = ModelSettings()
    """How the planner asks `model` (and the model of an agent that names none)."""
    limits: Limits = Limits()
    """Global bounds."""
    database: Path | DatabaseUrl | None = None
    """SQLite file (a relative path is relative to the config file), or a postgresql:// URL."""
    log_level: LogLevel | None = None
    """Log level when the command line sets none."""
    config_path: Path | None = None
    """The file this was read from; `None` when nothing was read."""

    @model_validator(mode="after")
    def _names_consistent(self) -> TaskorchConfig:
        for name in self.servers:
            if not _SERVER_NAME.match(name):
                raise ValueError(f"server name {name!r} cannot be used: {_SERVER_NAME_RULE}")
            if name == BUILTIN_SERVER:
                raise ValueError(_RESERVED_RULE)
        for key, agent in self.agents.items():
            if key != agent.name:
                raise ValueError(f"agents[{key!r}] holds the agent named {agent.name!r}")
        return self


_RESERVED_RULE = (
    f"the server name {BUILTIN_SERVER!r} is reserved for taskorch's built-in steps "
    "(extract, select, split_lines, join, format); rename the entry"
)
_SERVER_NAME_RULE = (
    "a server name must be 1 to 64 characters with no '.', '*', '?', '[', ']', tab or "
    "newline, and no space at either end "
    "(tools are written server.tool and matched with globs); rename the entry"
)


# --- errors ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Context:
    """What every step of parsing needs: where the data came from, and the environment."""

    source: str
    env: Mapping[str, str]

    def error(self, path: Location, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {_format_path(path)}: {message}")


def _format_path(path: Location) -> str:
    out = ""
    for segment in path:
        if isinstance(segment, int):
            out += f"[{segment}]"
        elif _PLAIN_SEGMENT.match(segment):
            out += f".{segment}" if out else segment
        else:
            out += f"[{json.dumps(segment)}]"
    return out or "(top level)"


def _number(value: object) -> str:
    return f"{value:g}" if isinstance(value, int | float) else str(value)


_PATTERN_RULES = {
    r"^https?://": "must start with http:// or https://",
    r"^wss?://": "must start with ws:// or wss://",
    r"^[A-Za-z0-9_.-]+$": "may hold only letters, digits, '_', '.' and '-'",
    _ENV_NAME.pattern: (
        "must be the name of an environment variable (letters, digits and '_'), "
        "not the value itself"
    ),
}
_FIELD_PURPOSE = {
    "command": "give the executable to run",
    "url": "give the server's endpoint",
    "name": "give the agent's name",
}
_ARRAY_TYPES = {"tuple_type", "list_type", "set_type", "frozen_set_type"}
_OBJECT_TYPES = {"dict_type", "model_type", "model_attributes_type"}


def _describe(error: ErrorDetails, known_keys: Iterable[str]) -> str:
    """Say what is wrong in JSON terms; never quote the input (it may be a secret)."""
    kind = error["type"]
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    field = next((s for s in reversed(error["loc"]) if isinstance(s, str)), "")
    simple = {
        "string_type": "must be a string",
        "int_type": "must be an integer",
        "int_parsing": "must be an integer",
        "int_from_float": "must be a whole number",
        "float_type": "must be a number",
        "float_parsing": "must be a number",
        "bool_type": "must be true or false",
        "bool_parsing": "must be true or false",
        "string_too_short": "must not be empty",
    }
    if kind in simple:
        return simple[kind]
    if kind in _ARRAY_TYPES:
        return "must be an array"
    if kind in _OBJECT_TYPES:
        return "must be an object"
    if kind == "missing":
        return f"missing; {_FIELD_PURPOSE.get(field, 'this key is required')}"
    if kind == "extra_forbidden":
        known = ", ".join(sorted(known_keys))
        return f"unknown key; the keys here are {known}. Remove it or fix its spelling"
    if kind in {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}:
        words = {
            "greater_than": ("gt", "greater than"),
            "greater_than_equal": ("ge", "at least"),
            "less_than": ("lt", "less than"),
            "less_than_equal": ("le", "at most"),
        }[kind]
        return f"must be {words[1]} {_number(ctx.get(words[0]))}"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", ""))
        return _PATTERN_RULES.get(pattern, f"must match the pattern {pattern}")
    if kind in {"enum", "literal_error"}:
        return f"must be one of {ctx.get('expected')}"
    message = error["msg"]
    return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def _user_location(raw: object, loc: Sequence[str | int]) -> Location:
    """Map a pydantic location back to the keys as the file spelt them (camelCase or not)."""
    out: list[str | int] = []
    current: object = raw
    for segment in loc:
        if isinstance(current, Mapping) and isinstance(segment, str):
            if segment not in current and _camel(segment) in current:
                segment = _camel(segment)
            current = current.get(segment)
        elif isinstance(current, list | tuple) and isinstance(segment, int):
            current = current[segment] if 0 <= segment < len(current) else None
        else:
            current = None
        out.append(segment)
    return tuple(out)


def _from_validation(
    exc: ValidationError, ctx: _Context, path: Location, raw: object, model: type[BaseModel]
) -> ConfigError:
    """Turn a pydantic error into a ConfigError that names each key path and no value."""
    problems: list[str] = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = _user_location(raw, error["loc"])
        known = _known_keys_at(model, error["loc"][:-1])
        problems.append(f"{_format_path((*path, *loc))}: {_describe(error, known)}")
    if len(problems) == 1:
        return ConfigError(f"{ctx.source}: {problems[0]}")
    listed = "\n".join(f"- {p}" for p in problems)
    return ConfigError(f"{ctx.source}: {len(problems)} problems:\n{listed}")


def _known_keys_at(model: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    current: type[BaseModel] | None = model
    for segment in loc:
        if current is None or not isinstance(segment, str) or segment not in current.model_fields:
            return []
        current = _nested_model(current, segment)
    if current is None:
        return []
    return [name for name in current.model_fields if name != "type"]


# --- environment references ------------------------------------------------------------------


def _expand_text(text: str, ctx: _Context, path: Location, *, secret: bool) -> str:
    """Expand `${VAR}` and `${VAR:-default}`; `$${` is a literal `${`."""
    if "$" not in text:
        return text
    out: list[str] = []
    i = 0
    while True:
        j = text.find("$", i)
        if j < 0:
            out.append(text[i:])
            return "".join(out)
        out.append(text[i:j])
        if text.startswith("$${", j):
            out.append("${")
            i = j + 3
            continue
        if not text.startswith("${", j):
            out.append("$")
            i = j + 1
            continue
        end = text.find("}", j + 2)
        body = text[j + 2 : end] if end >= 0 else ""
        name, has_default, default = body.partition(":-")
        if end < 0 or not _ENV_NAME.match(name):
            shown = "" if secret or end < 0 else f" ${{{body}}}"
            raise ctx.error(
                path,
                f"malformed environment reference{shown}: write ${{NAME}} or "
                "${NAME:-default}, NAME being letters, digits and '_'; write $${ "
                "for a literal ${",
            )
        value = ctx.env.get(name)
        if has_default and not value:
            value = default
        elif value is None:
            raise ctx.error(
                path,
                f"environment variable {name} is not set; set it, or give a default "
                f"with ${{{name}:-default}}",
            )
        out.append(value)
        i = end + 1


def _expand(value: object, ctx: _Context, path: Location, *, secret: bool = False) -> Any:
    """Expand references in every string of a JSON value, keys excepted."""
    if isinstance(value, str):
        return _expand_text(value, ctx, path, secret=secret)
    if isinstance(value, Mapping):
        _check_object(value, ctx, path)
        return {k: _expand(v, ctx, (*path, k), secret=secret) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_expand(v, ctx, (*path, i), secret=secret) for i, v in enumerate(value)]
    return value


# --- JSON ------------------------------------------------------------------------------------


class _JsonObject(dict[str, Any]):
    """A JSON object that remembers which keys the file gave more than once."""

    duplicates: tuple[str, ...] = ()


def _object_pairs(pairs: list[tuple[str, Any]]) -> _JsonObject:
    obj = _JsonObject()
    repeated: list[str] = []
    for key, value in pairs:
        if key in obj:
            repeated.append(key)
        obj[key] = value
    if repeated:
        obj.duplicates = tuple(repeated)
    return obj


def _check_object(value: Mapping[Any, Any], ctx: _Context, path: Location) -> None:
    if isinstance(value, _JsonObject) and value.duplicates:
        key = value.duplicates[0]
        raise ctx.error((*path, key), "given more than once in the same object; keep one")
    for key in value:
        if not isinstance(key, str):
            raise ctx.error(path, f"keys must be strings, found {json_kind(key)}")


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


# --- key spellings ---------------------------------------------------------------------------


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _nested_model(model: type[BaseModel], field: str) -> type[BaseModel] | None:
    annotation = model.model_fields[field].annotation
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _normalise_keys(
    data: Mapping[str, Any], model: type[BaseModel], ctx: _Context, path: Location
) -> dict[str, Any]:
    """Rename camelCase keys to the model's field names, here and in nested models."""
    fields = model.model_fields
    aliases = {_camel(name): name for name in fields}
    out: dict[str, Any] = {}
    spelt: dict[str, str] = {}
    for key, value in data.items():
        canonical = key if key in fields else aliases.get(key, key)
        if canonical in spelt:
            raise ctx.error(
                (*path, key), f"the same key as {spelt[canonical]!r} (another spelling); keep one"
            )
        spelt[canonical] = key
        nested = _nested_model(model, canonical) if canonical in fields else None
        if nested is not None and isinstance(value, Mapping):
            value = _normalise_keys(value, nested, ctx, (*path, key))
        out[canonical] = value
    return out


# --- servers ---------------------------------------------------------------------------------

_AnySpec = StdioServerSpec | HttpServerSpec | SseServerSpec | WebSocketServerSpec
_SPEC_CLASSES: dict[str, type[_AnySpec]] = {
    "stdio": StdioServerSpec,
    "http": HttpServerSpec,
    "sse": SseServerSpec,
    "websocket": WebSocketServerSpec,
}
_TRANSPORTS = {
    "stdio": "stdio",
    "http": "http",
    "streamable-http": "http",
    "streamable_http": "http",
    "streamablehttp": "http",
    "sse": "sse",
    "ws": "websocket",
    "websocket": "websocket",
}
_TRANSPORT_CHOICES = "stdio, http (or streamable-http), sse, websocket (or ws)"
_TYPE_KEYS = ("type", "transport", "transportType")
_SECRET_KEYS = frozenset({"env", "headers"})
# Keys other MCP clients put in server entries that taskorch has no use for.
_HARMLESS_SERVER_KEYS = frozenset(
    {
        "autoApprove",
        "alwaysAllow",
        "description",
        "displayName",
        "title",
        "icon",
        "timeout",
        "comment",
        "_comment",
        "$comment",
        "notes",
    }
)


def _server_key_aliases() -> dict[str, str]:
    aliases: dict[str, str] = {}
    for cls in _SPEC_CLASSES.values():
        for name in cls.model_fields:
            if name != "type":
                aliases[name] = name
                aliases[_camel(name)] = name
    return aliases


_SERVER_KEYS = _server_key_aliases()
_SERVER_KEY_LIST = ", ".join(
    sorted({*(n for n in _SERVER_KEYS.values()), *_TYPE_KEYS[:2], "disabled"})
)


def _parse_server(name: str, raw: object, ctx: _Context, path: Location) -> ServerSpec | None:
    """Read one `mcpServers` entry; `None` when it is disabled."""
    if not isinstance(raw, Mapping):
        raise ctx.error(path, f"a server entry must be an object, not {json_kind(raw)}")
    _check_object(raw, ctx, path)
    if _is_disabled(raw, ctx, path):
        logger.debug("%s: server %r is disabled; skipping it", ctx.source, name)
        return None
    entries, spelt, transport = _server_keys(name, raw, ctx, path)
    kind = _pick_transport(transport, entries, ctx, path)
    cls = _SPEC_CLASSES[kind]
    for canonical, key in spelt.items():
        if canonical not in cls.model_fields:
            raise ctx.error(
                (*path, key), f"not used by a {kind} server; {_mismatch_hint(kind, canonical)}"
            )
    try:
        spec = cls.model_validate({**entries, "type": kind})
    except ValidationError as exc:
        error = _from_validation(exc, ctx, path, raw, cls)
    else:
        return spec
    raise error


def _is_disabled(raw: Mapping[str, Any], ctx: _Context, path: Location) -> bool:
    if "disabled" not in raw:
        return False
    disabled = _expand(raw["disabled"], ctx, (*path, "disabled"))
    if not isinstance(disabled, bool):
        raise ctx.error((*path, "disabled"), "must be true or false")
    return disabled


def _server_keys(
    name: str, raw: Mapping[str, Any], ctx: _Context, path: Location
) -> tuple[dict[str, Any], dict[str, str], tuple[str, str] | None]:
    """Expand a server entry's values under their field names.

    Returns:
        The values by field name, the key each was spelt as, and the transport
        asked for as (the key that gave it, its value), if any.
    """
    entries: dict[str, Any] = {}
    spelt: dict[str, str] = {}
    transport: tuple[str, str] | None = None
    ignored: list[str] = []
    for key, value in raw.items():
        if key == "disabled":
            continue
        if key in _TYPE_KEYS:
            given = _expand(value, ctx, (*path, key))
            if not isinstance(given, str):
                raise ctx.error(
                    (*path, key), f"must be a string naming one of {_TRANSPORT_CHOICES}"
                )
            if transport is not None and _transport_of(given) != _transport_of(transport[1]):
                raise ctx.error((*path, key), f"disagrees with {transport[0]!r}; keep one")
            transport = (key, given)
            continue
        canonical = _SERVER_KEYS.get(key)
        if canonical is None:
            if key in _HARMLESS_SERVER_KEYS:
                ignored.append(key)
                continue
            raise ctx.error(
                (*path, key),
                f"unknown key; a server entry takes {_SERVER_KEY_LIST}. "
                "Remove it or fix its spelling",
            )
        if canonical in spelt:
            raise ctx.error(
                (*path, key), f"the same key as {spelt[canonical]!r} (another spelling); keep one"
            )
        spelt[canonical] = key
        value = _expand(value, ctx, (*path, key), secret=canonical in _SECRET_KEYS)
        if canonical == "url" and isinstance(value, str):
            # Schemes are case-insensitive; the specs' patterns are not.
            value = _SCHEME.sub(lambda m: m.group(0).lower(), value.strip(), count=1)
        entries[canonical] = value
    if ignored:
        logger.debug(
            "%s: server %r: ignoring keys taskorch does not use: %s",
            ctx.source,
            name,
            ", ".join(ignored),
        )
    return entries, spelt, transport


def _transport_of(given: str) -> str | None:
    return _TRANSPORTS.get(given.strip().lower())


def _pick_transport(
    transport: tuple[str, str] | None, entries: Mapping[str, Any], ctx: _Context, path: Location
) -> str:
    if transport is not None:
        kind = _transport_of(transport[1])
        if kind is None:
            raise ctx.error(
                (*path, transport[0]),
                f"unknown transport {transport[1]!r}; use one of {_TRANSPORT_CHOICES}",
            )
        return kind
    if "command" in entries and "url" in entries:
        raise ctx.error(
            path,
            "has both command and url; a server is either a command to run (stdio) "
            "or a url to connect to: keep one",
        )
    if "command" in entries:
        return "stdio"
    if "url" not in entries:
        raise ctx.error(
            path,
            "has neither command nor url; give command (and args) to run a stdio server, "
            "or url for a remote one",
        )
    url = entries["url"]
    if not isinstance(url, str):
        raise ctx.error((*path, "url"), "must be a string")
    lowered = url.strip().lower()
    if lowered.startswith(("ws://", "wss://")):
        return "websocket"
    if urlsplit(lowered).path.rstrip("/").endswith("/sse"):
        return "sse"
    return "http"


def _mismatch_hint(kind: str, key: str) -> str:
    if kind == "stdio":
        return "remove it (a stdio server takes command, args, env and cwd)"
    if key in {"command", "args", "env", "cwd"}:
        return "remove it, or set type to stdio to run a command"
    return "remove it"


def _parse_servers(raw: object, ctx: _Context, path: Location) -> dict[str, ServerSpec]:
    if not isinstance(raw, Mapping):
        raise ctx.error(path, f"must be an object of server entries by name, not {json_kind(raw)}")
    _check_object(raw, ctx, path)
    servers: dict[str, ServerSpec] = {}
    for name, entry in raw.items():
        if not _SERVER_NAME.match(name):
            raise ctx.error((*path, name), _SERVER_NAME_RULE)
        if name == BUILTIN_SERVER:
            raise ctx.error((*path, name), _RESERVED_RULE)
        spec = _parse_server(name, entry, ctx, (*path, name))
        if spec is not None:
            servers[name] = spec
    return servers


# --- agents ----------------------------------------------------------------------------------


def _reject_api_key(data: Mapping[str, Any], ctx: _Context, path: Location) -> None:
    for key in ("api_key", "apiKey"):
        if key in data:
            raise ctx.error(
                (*path, key),
                "taskorch never reads API keys from its config; put the key in an "
                "environment variable and name that variable with api_key_env",
            )


def _check_env_name(value: object, ctx: _Context, path: Location) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise ctx.error(path, "must be a string naming an environment variable")
    if not _ENV_NAME.match(value):
        raise ctx.error(path, _PATTERN_RULES[_ENV_NAME.pattern] + " (such as OPENAI_API_KEY)")


def _parse_agents(raw: object, ctx: _Context, path: Location) -> dict[str, AgentConfig]:
    entries: list[tuple[str | None, Location, object]] = []
    if isinstance(raw, Mapping):
        _check_object(raw, ctx, path)
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


def _parse_agent(key: str | None, raw: object, ctx: _Context, path: Location) -> AgentConfig:
    if not isinstance(raw, Mapping):
        raise ctx.error(path, f"an agent must be an object, not {json_kind(raw)}")
    data: dict[str, Any] = _expand(raw, ctx, path)
    _reject_api_key(data, ctx, path)
    for spelling in ("api_key_env", "apiKeyEnv"):
        _check_env_name(data.get(spelling), ctx, (*path, spelling))
    if key is not None:
        if "name" in data and data["name"] != key:
            raise ctx.error(
                (*path, "name"),
                f"differs from the entry's key {key!r}; make them equal or drop name",
            )
        data["name"] = key
    elif "name" not in data:
        raise ctx.error((*path, "name"), "missing; an agent in an array needs a name")
    normalised = _normalise_keys(data, AgentConfig, ctx, path)
    try:
        return AgentConfig.model_validate(normalised)
    except ValidationError as exc:
        error = _from_validation(exc, ctx, path, data, AgentConfig)
    raise error


# --- the whole file --------------------------------------------------------------------------

_TOP_KEYS = {
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
}


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
    ctx = _Context(source=source, env=os.environ if env is None else env)
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{source}: the top level must be a JSON object ({{...}}), not {json_kind(data)}"
        )
    _check_object(data, ctx, ())
    raw = _taskorch_keys(data, ctx)
    fields: dict[str, Any] = {}
    if "servers" in raw:
        value, where = raw["servers"]
        fields["servers"] = _parse_servers(value, ctx, where)
    if "agents" in raw:
        value, where = raw["agents"]
        fields["agents"] = _parse_agents(value, ctx, where)
    for name in ("model", "default_agent", "api_base", "log_level"):
        if name in raw:
            fields[name] = _string(*raw[name], ctx)
    if "api_key_env" in raw:
        fields["api_key_env"] = _string(*raw["api_key_env"], ctx)
        _check_env_name(fields["api_key_env"], ctx, raw["api_key_env"][1])
    if "default_agent" in fields and not _AGENT_NAME.match(fields["default_agent"]):
        raise ctx.error(raw["default_agent"][1], _PATTERN_RULES[r"^[A-Za-z0-9_.-]+$"])
    if "log_level" in fields:
        fields["log_level"] = _log_level(fields["log_level"], ctx, raw["log_level"][1])
    if "limits" in raw:
        fields["limits"] = _parse_limits(*raw["limits"], ctx)
    if "model_settings" in raw:
        fields["model_settings"] = _parse_section(*raw["model_settings"], ModelSettings, ctx)
    if "database" in raw:
        try:
            fields["database"] = locate(_string(*raw["database"], ctx), base_dir)
        except ConfigError as exc:
            raise ctx.error(raw["database"][1], str(exc)) from None
    _check_server_timeouts(
        fields.get("servers", {}), fields.get("limits", Limits()), ctx, raw.get("servers")
    )
    try:
        return TaskorchConfig.model_validate(fields)
    except ValidationError as exc:
        error = _from_validation(exc, ctx, (), _spelt_like(raw), TaskorchConfig)
    raise error


def _taskorch_keys(data: Mapping[str, Any], ctx: _Context) -> dict[str, tuple[object, Location]]:
    """Pick taskorch's keys: field name -> (raw value, path as spelt); log the others."""
    raw: dict[str, tuple[object, Location]] = {}
    ignored: list[str] = []
    for key, value in data.items():
        field = _TOP_KEYS.get(key)
        if field is None:
            _reject_api_key({key: value}, ctx, ())
            ignored.append(key)
            continue
        if field in raw:
            first = raw[field][1][0]
            raise ctx.error((key,), f"the same setting as {first!r} (another spelling); keep one")
        if value is not None:
            raw[field] = (value, (key,))
    for key in ignored:
        close = difflib.get_close_matches(key.lower(), list(_TOP_KEYS), n=1, cutoff=0.8)
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


def _string(value: object, path: Location, ctx: _Context) -> str:
    expanded = _expand(value, ctx, path)
    if not isinstance(expanded, str):
        raise ctx.error(path, f"must be a string, not {json_kind(expanded)}")
    if not expanded:
        raise ctx.error(path, "must not be empty; remove the key to use the default")
    return expanded


def _log_level(value: str, ctx: _Context, path: Location) -> str:
    level = value.strip().upper()
    if level == "WARN":
        level = "WARNING"
    if level not in get_args(LogLevel):
        raise ctx.error(path, f"must be one of {', '.join(get_args(LogLevel))}")
    return level


def _parse_limits(value: object, path: Location, ctx: _Context) -> Limits:
    if not isinstance(value, Mapping):
        raise ctx.error(path, f"must be an object, not {json_kind(value)}")
    data: dict[str, Any] = _expand(value, ctx, path)
    normalised = _normalise_keys(data, Limits, ctx, path)
    try:
        return Limits.model_validate(normalised)
    except ValidationError as exc:
        error = _from_validation(exc, ctx, path, data, Limits)
    raise error


_Section = TypeVar("_Section", bound=BaseModel)


def _parse_section(value: object, path: Location, model: type[_Section], ctx: _Context) -> _Section:
    if not isinstance(value, Mapping):
        raise ctx.error(path, f"must be an object, not {json_kind(value)}")
    data: dict[str, Any] = _expand(value, ctx, path)
    normalised = _normalise_keys(data, model, ctx, path)
    try:
        return model.model_validate(normalised)
    except ValidationError as exc:
        error = _from_validation(exc, ctx, path, data, model)
    raise error


def _check_server_timeouts(
    servers: Mapping[str, ServerSpec],
    limits: Limits,
    ctx: _Context,
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


# --- where things are ------------------------------------------------------------------------


def default_config_path() -> Path:
    """The config file used when neither `--config` nor `TASKORCH_CONFIG` names one."""
    return Path(platformdirs.user_config_dir("taskorch")) / "config.json"


def default_db_path() -> Path:
    """The database used when nothing else names one."""
    return Path(platformdirs.user_data_dir("taskorch")) / "taskorch.db"


def local_dir(database: Path | DatabaseUrl) -> Path:
    """Where files that go with the database are kept: beside an SQLite file, else the default."""
    return database.parent if isinstance(database, Path) else default_db_path().parent


def _locate_config(
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
    return _locate_config(path, os.environ if env is None else env)[0]


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
    file, origin = _locate_config(path, environ)
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


# --- models ----------------------------------------------------------------------------------


class ModelChoice(NamedTuple):
    """The model an agent plans with, how to reach it and how to ask it."""

    model: str | None
    """litellm model string; `None` when nothing names one."""
    api_base: str | None
    """Endpoint, when not the provider's default."""
    api_key_env: str | None
    """Name of the environment variable holding the key."""
    settings: ModelSettings = ModelSettings()
    """How the planner asks it (fields unset take the planner's defaults)."""
    keys: Mapping[str, str] = {}
    """Where each of `api_base`, `api_key_env` and the settings' fields is set, or
    would be set for this model: a key path in the config, or a variable's name."""


# Where a level of the choice writes its keys: (prefix of config keys, environment variables).
_ENV_KEYS = {
    "model": MODEL_ENV_VAR,
    "api_base": API_BASE_ENV_VAR,
    "api_key_env": API_KEY_ENV_ENV_VAR,
}


def model_for(
    agent: AgentConfig | None, config: TaskorchConfig, env: Mapping[str, str] | None = None
) -> ModelChoice:
    """Pick the model for an agent: its own, else the config's, else `TASKORCH_MODEL`.

    The endpoint, key and settings go with the model: `api_base`, `api_key_env`
    and each field of `model_settings` are taken from the level that named the
    model or a more specific one (agent over config over environment), never
    from a less specific one, so an agent that names its own model is never
    sent to another model's endpoint, nor asked with another model's settings.
    When nothing names a model, they are the most specific ones set.

    Args:
        agent: The agent, or `None` for the config's defaults.
        config: The loaded config.
        env: The environment; `os.environ` when `None`.
    """
    environ = os.environ if env is None else env
    # (values, where each key is written), most specific first.
    levels: list[tuple[dict[str, Any], dict[str, str]]] = []
    if agent is not None:
        levels.append(_level(agent, f"agents.{agent.name}."))
    levels.append(_level(config, ""))
    levels.append(
        (
            {
                "model": environ.get(MODEL_ENV_VAR) or None,
                "api_base": environ.get(API_BASE_ENV_VAR) or None,
                "api_key_env": environ.get(API_KEY_ENV_ENV_VAR) or None,
            },
            {**_level(config, "")[1], **_ENV_KEYS},  # its settings go in the config
        )
    )
    chosen = next((i for i, (values, _) in enumerate(levels) if values["model"]), len(levels) - 1)
    usable = levels[: chosen + 1]
    merged: dict[str, Any] = {}
    keys: dict[str, str] = {}
    for name in ("api_base", "api_key_env", *ModelSettings.model_fields):
        setter = next((lv for lv in usable if lv[0].get(name) is not None), usable[-1])
        merged[name] = setter[0].get(name)
        keys[name] = setter[1][name]
    return ModelChoice(
        model=levels[chosen][0]["model"],
        api_base=merged.pop("api_base"),
        api_key_env=merged.pop("api_key_env"),
        settings=ModelSettings.model_validate(merged),
        keys=keys,
    )


def _level(
    owner: AgentConfig | TaskorchConfig, prefix: str
) -> tuple[dict[str, Any], dict[str, str]]:
    settings = owner.model_settings.model_dump()
    values = {"model": owner.model, "api_base": owner.api_base, "api_key_env": owner.api_key_env}
    keys = {name: f"{prefix}{name}" for name in values}
    keys.update({name: f"{prefix}model_settings.{name}" for name in settings})
    return {**values, **settings}, keys
