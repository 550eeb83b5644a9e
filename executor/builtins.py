"""Built-in pure steps under the reserved server name `taskorch`, run in-process.

`extract`, `select`, `split_lines`, `join` and `format` turn tools' text into
values a plan can use and back (the README lists their arguments).
`BuiltinCaller` wraps any `ToolCaller`: calls to `taskorch` run here, others go
through, and its catalog adds these tools, so plans are validated against them
like any other.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import anyio

from executor.calls import ProgressFn, ToolCaller, ToolResult
from executor.catalog import Catalog, ToolAnnotations, ToolInfo
from executor.errors import ErrorKind, StepReferenceError, ToolCallError
from executor.ids import BUILTIN_SERVER
from executor.refs import read_path

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

    from executor.task_client import TaskHooks

__all__ = ["BUILTIN_SERVER", "BuiltinCaller", "builtin_tools"]


class _StepFailed(Exception):
    """The step cannot do its work; the message says why and what to change."""


_PURE = ToolAnnotations(read_only=True, destructive=False, idempotent=True, open_world=False)
_TYPES = ("string", "number", "integer", "boolean", "json")
_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}


def _convert(raw: str | None, kind: str) -> Any:
    if raw is None or kind == "string":
        return raw
    text = raw.strip()
    try:
        if kind == "integer":
            return int(text.replace(",", "").replace("_", ""))
        if kind == "number":
            number = float(text.replace(",", "").replace("_", ""))
            return int(number) if number.is_integer() and "." not in text else number
        if kind == "boolean":
            lowered = text.lower()
            if lowered in ("true", "yes", "1", "on"):
                return True
            if lowered in ("false", "no", "0", "off"):
                return False
            raise ValueError(raw)
        return json.loads(text)
    except ValueError:
        raise _StepFailed(
            f"{raw[:80]!r} is not a {kind}: change the pattern so that it captures only "
            f"the {kind}, or use type 'string'"
        ) from None


def _extract(args: Mapping[str, Any]) -> dict[str, Any]:
    flags = 0
    for letter in args.get("flags", ""):
        flags |= _FLAGS[letter]
    try:
        regex = re.compile(args["pattern"], flags)
    except re.error as exc:
        raise _StepFailed(f"the pattern is not a valid regular expression: {exc}") from None
    kind = args.get("type", "string")
    text = args["text"]

    def value_of(match: re.Match[str]) -> Any:
        return _convert(match.group(1) if regex.groups else match.group(0), kind)

    found = list(regex.finditer(text))
    first = found[0] if found else None
    return {
        "found": first is not None,
        "value": value_of(first) if first else None,
        "matches": [value_of(m) for m in found],
        "groups": list(first.groups()) if first else [],
        "named": first.groupdict() if first else {},
    }


def _select(args: Mapping[str, Any]) -> dict[str, Any]:
    value = args["value"]
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise _StepFailed(
                "value is a string that is not JSON: select reads JSON (extract reads text)"
            ) from None
    path = [p for p in args["path"].split(".") if p] if args["path"] else []
    try:
        return {"value": read_path(value, path, root="value")}
    except StepReferenceError as exc:
        raise _StepFailed(str(exc)) from None


def _split_lines(args: Mapping[str, Any]) -> dict[str, Any]:
    lines = args["text"].splitlines()
    if args.get("strip", True):
        lines = [line.strip() for line in lines]
    if not args.get("keep_empty", False):
        lines = [line for line in lines if line]
    return {"lines": lines, "count": len(lines)}


def _join(args: Mapping[str, Any]) -> dict[str, Any]:
    items = [
        i if isinstance(i, str) else json.dumps(i, ensure_ascii=False, separators=(",", ":"))
        for i in args["items"]
    ]
    return {"text": args.get("separator", "\n").join(items)}


_FIELD = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_FIELD_NAME = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")


def _format(args: Mapping[str, Any]) -> dict[str, Any]:
    values = args["values"]
    template: str = args["template"]

    def field(match: re.Match[str]) -> str:
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        name = match.group(1)
        if name is None or not _FIELD_NAME.fullmatch(name):
            raise _StepFailed(
                f"{token!r} at character {match.start()} is not a field: write {{name}} or "
                "{a.b.0}, and {{ or }} for a literal brace"
            )
        try:
            value = read_path(values, name.split("."), root="values", ref="{" + name + "}")
        except StepReferenceError as exc:
            raise _StepFailed(str(exc)) from None
        if isinstance(value, str):
            return value
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))

    return {"text": _FIELD.sub(field, template)}


@dataclass(frozen=True, slots=True)
class _Builtin:
    info: ToolInfo
    run: Callable[[Mapping[str, Any]], dict[str, Any]]


def _tool(
    name: str,
    description: str,
    properties: dict[str, Any],
    required: list[str],
    output: dict[str, Any],
    run: Callable[[Mapping[str, Any]], dict[str, Any]],
) -> _Builtin:
    info = ToolInfo(
        server=BUILTIN_SERVER,
        name=name,
        title=name.replace("_", " ").capitalize(),
        description=description,
        input_schema={
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": False,
        },
        output_schema={
            "type": "object",
            "properties": output,
            "required": sorted(output),
            "additionalProperties": False,
        },
        annotations=_PURE,
    )
    return _Builtin(info, run)


_STRING = {"type": "string"}
_BUILTINS: Final = {
    b.info.name: b
    for b in (
        _tool(
            "extract",
            "Find a regular expression (Python syntax) in a text. `value` is the first "
            "match's first group (or the whole match when the pattern has no group), "
            "converted to `type`; `matches` has that for every match; `found` says whether "
            'there was one. Example: text "The sum of 2 and 3 is 5.", pattern '
            '"is (\\\\d+)", type "number" gives value 5.',
            {
                "text": {**_STRING, "description": "The text to search."},
                "pattern": {**_STRING, "description": "A Python regular expression."},
                "flags": {
                    "type": "string",
                    "pattern": "^[imsx]*$",
                    "description": "i: ignore case, m: ^ and $ at lines, s: . matches newlines, "
                    "x: verbose.",
                },
                "type": {
                    "enum": list(_TYPES),
                    "description": "What to convert each value to (default string).",
                },
            },
            ["text", "pattern"],
            {
                "found": {"type": "boolean"},
                "value": {"description": "The first match's value, null when none."},
                "matches": {"type": "array"},
                "groups": {"type": "array", "items": {"type": ["string", "null"]}},
                "named": {"type": "object"},
            },
            _extract,
        ),
        _tool(
            "select",
            "Pick the value at a path (keys and array indexes joined by dots, as in "
            "references: items.0.name) out of JSON, or out of a string holding JSON. "
            "An empty path selects the whole (parsed) value.",
            {
                "value": {"description": "JSON, or a string holding JSON."},
                "path": {**_STRING, "description": "Such as items.0.name; empty for all."},
            },
            ["value", "path"],
            {"value": {"description": "The value at the path."}},
            _select,
        ),
        _tool(
            "split_lines",
            "Split a text into its lines; by default each line is stripped and empty lines "
            "are dropped.",
            {
                "text": _STRING,
                "keep_empty": {"type": "boolean", "description": "Keep empty lines."},
                "strip": {"type": "boolean", "description": "Strip spaces (default true)."},
            },
            ["text"],
            {"lines": {"type": "array", "items": _STRING}, "count": {"type": "integer"}},
            _split_lines,
        ),
        _tool(
            "join",
            "Join items into one text with a separator (default a newline); items that "
            "are not strings are written as compact JSON.",
            {"items": {"type": "array"}, "separator": _STRING},
            ["items"],
            {"text": _STRING},
            _join,
        ),
        _tool(
            "format",
            "Fill a template: {name} or {a.b.0} is replaced by that value of `values` "
            "(strings as they are, anything else as JSON); {{ and }} are literal braces.",
            {"template": _STRING, "values": {"type": "object"}},
            ["template", "values"],
            {"text": _STRING},
            _format,
        ),
    )
}


def builtin_tools() -> list[ToolInfo]:
    """The built-in tools, as catalog entries of server `taskorch`."""
    return [b.info for b in _BUILTINS.values()]


def _error(message: str) -> ToolResult:
    return ToolResult(content=[{"type": "text", "text": message}], is_error=True)


class BuiltinCaller:
    """A `ToolCaller` that runs server `taskorch`'s tools here and the rest through `inner`."""

    def __init__(self, inner: ToolCaller | None = None) -> None:
        """Wrap `inner` (`None`: only the built-in tools exist)."""
        self.inner = inner
        # Made at the first built-in call: a process that only follows runs (`taskorch
        # watch`) or calls other servers never loads jsonschema.
        self._validators: dict[str, Validator] = {}
        self._cache: tuple[Catalog | None, Catalog] | None = None

    async def call(
        self,
        server: str,
        tool: str,
        arguments: dict[str, Any],
        *,
        timeout_s: float | None = None,
        on_progress: ProgressFn | None = None,
        task: TaskHooks | None = None,
    ) -> ToolResult:
        """Run a built-in tool, or pass the call on to the wrapped caller."""
        if server != BUILTIN_SERVER:
            if self.inner is None:
                raise ToolCallError(
                    ErrorKind.TOOL_UNAVAILABLE,
                    f"no downstream server named {server!r} is configured",
                    server=server,
                    tool=tool,
                )
            return await self.inner.call(
                server, tool, arguments, timeout_s=timeout_s, on_progress=on_progress, task=task
            )
        builtin = _BUILTINS.get(tool)
        if builtin is None:
            known = ", ".join(sorted(_BUILTINS))
            raise ToolCallError(
                ErrorKind.TOOL_UNAVAILABLE,
                f"no built-in tool {tool!r}; the built-in tools are {known}",
                server=server,
                tool=tool,
            )
        problems = sorted(
            self._validator(tool).iter_errors(arguments), key=lambda e: list(e.absolute_path)
        )
        if problems:
            where = ".".join(str(p) for p in problems[0].absolute_path) or "arguments"
            raise ToolCallError(
                ErrorKind.INVALID_ARGUMENTS,
                f"{where}: {problems[0].message}",
                server=server,
                tool=tool,
            )
        try:
            # A worker thread: a regular expression can take long on a large text, and
            # the event loop must go on meanwhile; a timeout abandons the thread.
            with anyio.fail_after(timeout_s):
                out = await anyio.to_thread.run_sync(builtin.run, arguments, abandon_on_cancel=True)
        except _StepFailed as exc:
            return _error(str(exc))
        except TimeoutError:
            raise ToolCallError(
                ErrorKind.TIMEOUT,
                f"did not finish within {timeout_s:g} s (a regular expression that "
                "backtracks too much?)",
                server=server,
                tool=tool,
            ) from None
        text = json.dumps(out, ensure_ascii=False, separators=(",", ":"))
        return ToolResult(content=[{"type": "text", "text": text}], structured_content=out)

    def _validator(self, tool: str) -> Validator:
        validator = self._validators.get(tool)
        if validator is None:
            import jsonschema

            schema = _BUILTINS[tool].info.input_schema
            validator = self._validators[tool] = jsonschema.Draft202012Validator(schema)
        return validator

    async def catalog(self) -> Catalog:
        """The wrapped caller's catalog, plus the built-in tools."""
        inner = await self.inner.catalog() if self.inner is not None else None
        if self._cache is None or self._cache[0] is not inner:
            tools = [*(inner or ()), *builtin_tools()]
            self._cache = (inner, Catalog(tools))
        return self._cache[1]
