"""The `${step.path}` references that move data between steps (syntax: the README).

Finding them in a step's arguments, parsing them, and resolving them against
finished steps (`StepValue`: a step's output and its content blocks).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from executor.errors import StepReferenceError
from executor.ids import StepId

__all__ = [
    "STEP_ID_PATTERN",
    "StepRef",
    "StepValue",
    "find_references",
    "parse_template",
    "read_path",
    "resolve_references",
]

STEP_ID_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$"
"""What a step id looks like; references can only name ids of this shape."""

_BODY = re.compile(r"([A-Za-z_][A-Za-z0-9_-]{0,63})((?:\.[A-Za-z0-9_-]+)*)")


@dataclass(frozen=True, slots=True)
class StepRef:
    """A parsed reference to (part of) an earlier step's output.

    Attributes:
        step: The step whose output is read.
        path: Keys (objects) and indexes (arrays) walked into that output.
    """

    step: StepId
    path: tuple[str, ...] = ()

    def __str__(self) -> str:
        return "${" + ".".join((self.step, *self.path)) + "}"


@dataclass(frozen=True, slots=True)
class StepValue:
    """What a finished step offers later steps.

    Attributes:
        output: The step's output (see `ToolResult.output`).
        content: The content blocks its tool returned, each as its JSON object.
    """

    output: Any
    content: Sequence[Any] = ()


def parse_template(text: str) -> list[str | StepRef]:
    """Split a string into literal text and references.

    Args:
        text: An argument value.

    Returns:
        Literal pieces (with `$$` already unescaped) and `StepRef`s, in order.
        Adjacent literal text is merged.

    Raises:
        StepReferenceError: A `${` is not closed or its body is not `id(.segment)*`.
    """
    if "$" not in text:
        return [text]
    parts: list[str | StepRef] = []
    buf: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch != "$" or i + 1 >= n or text[i + 1] not in "${":
            buf.append(ch)
            i += 1
            continue
        if text[i + 1] == "$":
            buf.append("$")
            i += 2
            continue
        end = text.find("}", i + 2)
        if end < 0:
            raise StepReferenceError(
                f"unclosed reference in {text!r}: add the closing '}}' "
                "or write '$$' for a literal '$'"
            )
        body = text[i + 2 : end]
        match = _BODY.fullmatch(body)
        if match is None:
            raise StepReferenceError(
                f"malformed reference '${{{body}}}' in {text!r}: write '${{step_id}}' or "
                "'${step_id.key.0}' (step id, then keys or array indexes joined by dots)"
            )
        if buf:
            parts.append("".join(buf))
            buf = []
        path = tuple(match.group(2).split(".")[1:]) if match.group(2) else ()
        parts.append(StepRef(StepId(match.group(1)), path))
        i = end + 1
    if buf:
        parts.append("".join(buf))
    return parts


def find_references(value: Any) -> list[StepRef]:
    """List every reference in a JSON value, in document order.

    Raises:
        StepReferenceError: A string holds a malformed reference.
    """
    found: list[StepRef] = []
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "${" in item:
                found.extend(p for p in parse_template(item) if isinstance(p, StepRef))
        elif isinstance(item, dict):
            stack.extend(reversed(list(item.values())))
        elif isinstance(item, list | tuple):
            stack.extend(reversed(item))
    return found


def resolve_references(value: Any, outputs: Mapping[str, Any]) -> Any:
    """Return a copy of `value` with every reference replaced from `outputs`.

    Args:
        value: A JSON value (usually a step's `arguments`).
        outputs: Each finished step's output, by step id.

    Raises:
        StepReferenceError: A reference names a step with no output or a path
            that does not exist; the message names the path and what exists there.
    """
    if isinstance(value, str):
        if "$" not in value:
            return value
        parts = parse_template(value)
        if len(parts) == 1 and isinstance(parts[0], StepRef):
            return _lookup(parts[0], outputs)
        return "".join(p if isinstance(p, str) else _as_text(_lookup(p, outputs)) for p in parts)
    if isinstance(value, dict):
        return {k: resolve_references(v, outputs) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [resolve_references(v, outputs) for v in value]
    return value


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _lookup(ref: StepRef, outputs: Mapping[str, Any]) -> Any:
    if ref.step not in outputs:
        raise StepReferenceError(f"{ref}: step '{ref.step}' has no output to read")
    return read_path(outputs[ref.step], ref.path, root=ref.step, ref=str(ref))


def read_path(value: Any, path: Sequence[str], *, root: str, ref: str | None = None) -> Any:
    """Walk `path` (keys and array indexes) into a step's output or `StepValue`.

    Args:
        value: A `StepValue`, or a plain output.
        path: The segments after the step id.
        root: What the walk starts from, for messages (the step id).
        ref: The reference as written, for messages (default: root and path).

    Raises:
        StepReferenceError: A segment does not exist; the message names the path
            and what exists there.
    """
    shown = ref if ref is not None else "${" + ".".join((root, *path)) + "}"
    current = value
    walked = root
    if isinstance(value, StepValue):
        current = value.output
        own = isinstance(current, dict) and "content" in current
        if path and path[0] == "content" and not own:
            current, walked, path = list(value.content), f"{root}.content", path[1:]
    for seg in path:
        if isinstance(current, dict):
            if seg not in current:
                keys = ", ".join(repr(k) for k in list(current)[:20]) or "none"
                raise StepReferenceError(
                    f"{shown}: '{walked}' has no key '{seg}'; keys there: {keys}"
                )
            current = current[seg]
        elif isinstance(current, list):
            if not seg.isdigit() or int(seg) >= len(current):
                raise StepReferenceError(
                    f"{shown}: '{walked}' is an array of length {len(current)}; "
                    f"'{seg}' is not an index in it"
                )
            current = current[int(seg)]
        else:
            kind = "null" if current is None else type(current).__name__
            raise StepReferenceError(
                f"{shown}: '{walked}' is a {kind}, not an object or array, so '{seg}' "
                "cannot be read"
            )
        walked = f"{walked}.{seg}"
    return current
