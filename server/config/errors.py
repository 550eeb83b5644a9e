"""Config errors: where in the file (a key path) and what to fix, never the value.

Every problem raises `executor.errors.ConfigError` as `<file>: <key path>:
<what is wrong and what to do>`; pydantic's errors are translated here, in
JSON terms, without quoting the input (it may be a secret).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from executor._utils import json_kind
from executor.errors import ConfigError
from server.config.keys import known_keys_at, user_location
from server.config.model import ENV_NAME

__all__ = [
    "PATTERN_RULES",
    "JsonObject",
    "Location",
    "ParseContext",
    "check_object",
    "describe",
    "format_path",
    "from_validation",
]

Location = tuple[str | int, ...]
"""A key path inside the config: object keys and array indexes."""

_PLAIN_SEGMENT = re.compile(r"^[A-Za-z0-9_$-]+$")


@dataclass(frozen=True, slots=True)
class ParseContext:
    """What every step of parsing needs: where the data came from, and the environment."""

    source: str
    """How error messages name the data (the file's path)."""
    env: Mapping[str, str]
    """The environment `${VAR}` references read."""

    def error(self, path: Location, message: str) -> ConfigError:
        """The error for a problem at `path`."""
        return ConfigError(f"{self.source}: {format_path(path)}: {message}")


def format_path(path: Location) -> str:
    """A key path as a reader writes it: `mcpServers.fs.args[0]`."""
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


PATTERN_RULES = {
    r"^https?://": "must start with http:// or https://",
    r"^wss?://": "must start with ws:// or wss://",
    r"^[A-Za-z0-9_.-]+$": "may hold only letters, digits, '_', '.' and '-'",
    ENV_NAME.pattern: (
        "must be the name of an environment variable (letters, digits and '_'), "
        "not the value itself"
    ),
}
"""What each string pattern a config value must match means, in words."""
_FIELD_PURPOSE = {
    "command": "give the executable to run",
    "url": "give the server's endpoint",
    "name": "give the agent's name",
}
_ARRAY_TYPES = {"tuple_type", "list_type", "set_type", "frozen_set_type"}
_OBJECT_TYPES = {"dict_type", "model_type", "model_attributes_type"}


def describe(error: ErrorDetails, known_keys: Iterable[str]) -> str:
    """Say what is wrong in JSON terms; never quote the input (it may be a secret).

    Args:
        error: One pydantic error, without its input.
        known_keys: The keys the object holding the error may have (for unknown keys).
    """
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
        return PATTERN_RULES.get(pattern, f"must match the pattern {pattern}")
    if kind in {"enum", "literal_error"}:
        return f"must be one of {ctx.get('expected')}"
    message = error["msg"]
    return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def from_validation(
    exc: ValidationError, ctx: ParseContext, path: Location, raw: object, model: type[BaseModel]
) -> ConfigError:
    """Turn a pydantic error into a ConfigError that names each key path and no value."""
    problems: list[str] = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = user_location(raw, error["loc"])
        known = known_keys_at(model, error["loc"][:-1])
        problems.append(f"{format_path((*path, *loc))}: {describe(error, known)}")
    if len(problems) == 1:
        return ConfigError(f"{ctx.source}: {problems[0]}")
    listed = "\n".join(f"- {p}" for p in problems)
    return ConfigError(f"{ctx.source}: {len(problems)} problems:\n{listed}")


class JsonObject(dict[str, Any]):
    """A JSON object that remembers which keys the file gave more than once."""

    duplicates: tuple[str, ...] = ()


def check_object(value: Mapping[Any, Any], ctx: ParseContext, path: Location) -> None:
    """Refuse a key given twice in one object, and keys that are not strings."""
    if isinstance(value, JsonObject) and value.duplicates:
        key = value.duplicates[0]
        raise ctx.error((*path, key), "given more than once in the same object; keep one")
    for key in value:
        if not isinstance(key, str):
            raise ctx.error(path, f"keys must be strings, found {json_kind(key)}")
