"""Helpers the checks share: walking a step's strings, and wording suggestions and lists."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from executor.errors import StepReferenceError
from executor.refs import StepRef, parse_template

__all__ = [
    "MAX_MESSAGE_VALUE",
    "MAX_SHOWN",
    "and_list",
    "close_matches",
    "or_list",
    "references_by_step",
    "short",
    "walk_strings",
]

MAX_SHOWN = 10
"""Most names listed in one message (servers, tools, keys)."""
MAX_MESSAGE_VALUE = 120
"""Longest rendering of a value quoted in a message."""


def walk_strings(value: Any) -> Iterator[tuple[str, str]]:
    """Yield `(path, string)` for every string in a JSON value, in document order."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            yield path, item
        elif isinstance(item, Mapping):
            stack.extend((f"{path}.{k}", v) for k, v in reversed(list(item.items())))
        elif isinstance(item, list | tuple):
            stack.extend((f"{path}[{i}]", v) for i, v in reversed(list(enumerate(item))))


def references_by_step(arguments: Any) -> dict[str, tuple[str, StepRef]]:
    """The first reference to each step in `arguments`, with the JSON path it is at."""
    found: dict[str, tuple[str, StepRef]] = {}
    for path, text in walk_strings(arguments):
        if "${" not in text:
            continue
        try:
            parts = parse_template(text)
        except StepReferenceError:
            continue
        for part in parts:
            if isinstance(part, StepRef) and part.step not in found:
                found[part.step] = (path, part)
    return found


def short(value: Any) -> str:
    """A value as JSON, cut to `MAX_MESSAGE_VALUE` characters, for a message."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=repr)
    except ValueError:
        text = repr(value)
    if len(text) > MAX_MESSAGE_VALUE:
        text = text[: MAX_MESSAGE_VALUE - 3] + "..."
    return text


_WORD_BREAK = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z])(?=[A-Z])")


def _words(name: str) -> set[str]:
    return {w.lower() for w in _WORD_BREAK.split(name) if w}


def close_matches(name: str, candidates: Sequence[str], n: int = 3) -> list[str]:
    """The candidates most like `name`, best first.

    Spelling alone (difflib) ranks `convert_time` above `get_current_time` for
    `get_time`; shared words rank them the way a person would.
    """
    words = _words(name)
    lowered = name.lower()
    scored: list[tuple[float, str]] = []
    for candidate in candidates:
        spelling = difflib.SequenceMatcher(None, lowered, candidate.lower()).ratio()
        theirs = _words(candidate)
        shared = len(words & theirs) / len(words | theirs) if words or theirs else 0.0
        if spelling >= 0.6 or shared >= 0.5:
            scored.append((spelling + shared, candidate))
    scored.sort(key=lambda pair: (-pair[0], pair[1]))
    return [candidate for _, candidate in scored[:n]]


def or_list(names: Sequence[str]) -> str:
    """`'a'`, `'a' or 'b'`, `'a', 'b' or 'c'`."""
    quoted = [repr(n) for n in names]
    if len(quoted) == 1:
        return quoted[0]
    return f"{', '.join(quoted[:-1])} or {quoted[-1]}"


def and_list(names: Sequence[str]) -> str:
    """`'a', 'b', 'c'`."""
    return ", ".join(repr(n) for n in names)
