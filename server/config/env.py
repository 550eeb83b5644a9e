"""Environment references in config values: `${VAR}`, `${VAR:-default}`, `$${` for a literal.

An unset variable is an error naming it, the file and the key path; a secret's
malformed reference is reported without quoting it. Keys are never expanded.
API keys are never read from the file: `api_key_env` names the variable.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from server.config.errors import PATTERN_RULES, Location, ParseContext, check_object
from server.config.model import ENV_NAME

__all__ = ["check_env_name", "expand", "reject_api_key"]


def _expand_text(text: str, ctx: ParseContext, path: Location, *, secret: bool) -> str:
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
        if end < 0 or not ENV_NAME.match(name):
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


def expand(value: object, ctx: ParseContext, path: Location, *, secret: bool = False) -> Any:
    """Expand references in every string of a JSON value, keys excepted."""
    if isinstance(value, str):
        return _expand_text(value, ctx, path, secret=secret)
    if isinstance(value, Mapping):
        check_object(value, ctx, path)
        return {k: expand(v, ctx, (*path, k), secret=secret) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [expand(v, ctx, (*path, i), secret=secret) for i, v in enumerate(value)]
    return value


def reject_api_key(data: Mapping[str, Any], ctx: ParseContext, path: Location) -> None:
    """Refuse an `api_key` (or `apiKey`) key: keys live in the environment, never the file."""
    for key in ("api_key", "apiKey"):
        if key in data:
            raise ctx.error(
                (*path, key),
                "taskorch never reads API keys from its config; put the key in an "
                "environment variable and name that variable with api_key_env",
            )


def check_env_name(value: object, ctx: ParseContext, path: Location) -> None:
    """Refuse an `api_key_env` that is not a variable's name (a key pasted there, say)."""
    if value is None:
        return
    if not isinstance(value, str):
        raise ctx.error(path, "must be a string naming an environment variable")
    if not ENV_NAME.match(value):
        raise ctx.error(path, PATTERN_RULES[ENV_NAME.pattern] + " (such as OPENAI_API_KEY)")
