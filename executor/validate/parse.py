"""Building steps from caller or model JSON, every error turned into a `Problem`."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any, cast

from pydantic import ValidationError as PydanticValidationError

from executor._utils import json_kind
from executor.errors import StepReferenceError
from executor.plan import Step
from executor.refs import parse_template
from executor.validate._utils import short, walk_strings
from executor.validate.problem import Problem

__all__ = ["parse_steps"]

_STEP_FIELDS = tuple(Step.model_fields)

_FIELD_HINTS: dict[str, str] = {
    "id": (
        "write a short id that starts with a letter or '_' and has only letters, digits, "
        "'_' and '-' (at most 64 characters), such as 'get_weather'"
    ),
    "server": "write the downstream server's configured name, such as 'time'",
    "tool": "write the tool's name exactly as its server lists it",
    "arguments": 'write a JSON object of the tool\'s arguments, such as {"city": "Paris"}',
    "depends_on": 'write a list of ids of steps that must succeed first, such as ["s1"]',
    "description": "write one short sentence, or leave the field out",
    "timeout_s": "write a number of seconds greater than 0, or leave the field out",
    "retry": (
        "write an object with any of initial_interval_s, backoff_coefficient, "
        "maximum_interval_s, maximum_attempts, non_retryable, jitter and non_idempotent, "
        "or leave it out"
    ),
    "on_error": "write 'fail' or 'continue'",
}

# Names models often write for a step's fields; difflib does not see these.
_FIELD_SYNONYMS: dict[str, str] = {
    "args": "arguments",
    "arguments_json": "arguments",
    "input": "arguments",
    "inputs": "arguments",
    "params": "arguments",
    "parameters": "arguments",
    "deps": "depends_on",
    "dependencies": "depends_on",
    "depends": "depends_on",
    "needs": "depends_on",
    "after": "depends_on",
    "name": "id",
    "step_id": "id",
    "server_name": "server",
    "tool_name": "tool",
    "timeout": "timeout_s",
    "retries": "retry",
    "retry_policy": "retry",
    "onerror": "on_error",
}


def parse_steps(raw: Sequence[Mapping[str, Any]]) -> tuple[list[Step], list[Problem]]:
    """Build steps from caller or model JSON, turning every error into a `Problem`.

    Args:
        raw: One JSON object per step.

    Returns:
        The steps that could be built, in order, and a problem for each field
        that could not (code `invalid_step`) and each malformed `${...}`
        reference (code `bad_reference`). A step with any problem is left out
        of the list.
    """
    steps: list[Step] = []
    problems: list[Problem] = []
    for index, entry in enumerate(raw):
        # Callers pass whatever JSON they parsed, whatever the annotation says.
        item = cast(object, entry)
        if not isinstance(item, Mapping):
            problems.append(
                Problem(
                    None,
                    "invalid_step",
                    f"steps[{index}] is {json_kind(item)}, not a step: write an object with "
                    f"the fields {', '.join(_STEP_FIELDS)}",
                )
            )
            continue
        data = dict(item)
        raw_id = data.get("id")
        step_id = raw_id if isinstance(raw_id, str) and raw_id else None
        where = "" if step_id is not None else f"steps[{index}]: "
        try:
            steps.append(Step.model_validate(data))
            continue
        except PydanticValidationError as exc:
            problems.extend(
                Problem(step_id, "invalid_step", where + _pydantic_message(err))
                for err in exc.errors()
            )
            continue
        except StepReferenceError:
            pass
        # A malformed reference stops Step before pydantic sees the other fields:
        # report each bad reference where it is, then check the rest without them.
        problems.extend(
            Problem(step_id, "bad_reference", f"{where}arguments{path}: {message}")
            for path, message in _malformed_references(data["arguments"])
        )
        try:
            Step.model_validate({**data, "arguments": {}})
        except PydanticValidationError as exc:
            problems.extend(
                Problem(step_id, "invalid_step", where + _pydantic_message(err))
                for err in exc.errors()
            )
    return steps, problems


def _pydantic_message(err: Mapping[str, Any]) -> str:
    loc = tuple(err.get("loc", ()))
    path = _loc_path(loc)
    field = str(loc[0]) if loc else ""
    hint = _FIELD_HINTS.get(field, "")
    kind = err.get("type", "")
    if kind == "missing":
        return f"the required field {path!r} is missing: {hint or 'add it'}"
    if kind == "extra_forbidden":
        name = str(loc[-1]) if loc else "?"
        if len(loc) == 1:
            guess = _FIELD_SYNONYMS.get(name.lower()) or next(
                iter(difflib.get_close_matches(name, _STEP_FIELDS, n=1)), None
            )
            instead = f" (did you mean {guess!r}?)" if guess else ""
            return (
                f"a step has no field {name!r}{instead}: remove it; the fields are "
                f"{', '.join(_STEP_FIELDS)}"
            )
        return f"{path!r} is not an accepted field: remove it; {hint}".rstrip("; ")
    text = str(err.get("msg", "is not valid"))
    # pydantic prefixes messages from our own validators; the rest reads fine.
    text = text.removeprefix("Value error, ")
    got = short(err.get("input"))
    fix = f"; {hint}" if hint else ""
    return f"{path!r} is not valid: {text} (got {got}){fix}"


def _loc_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "step"


def _malformed_references(arguments: Any) -> list[tuple[str, str]]:
    """Every string in `arguments` whose `${...}` does not parse, with its JSON path."""
    found: list[tuple[str, str]] = []
    for path, value in walk_strings(arguments):
        if "${" not in value:
            continue
        try:
            parse_template(value)
        except StepReferenceError as exc:
            found.append((path, str(exc)))
    return found
