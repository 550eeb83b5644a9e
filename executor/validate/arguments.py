"""The argument checks: a step's arguments must fit its tool's JSON Schema `inputSchema`.

At plan time a value that references another step's output cannot be known, so
it is checked only as far as any run-time value would pass (a placeholder for a
whole reference, a string's type for a reference inside text): a plan is never
refused for what only run time can know. At run time (`check_arguments`) every
value is data, checked literally. `FastAcceptor` says yes first when it can.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema.validators
from jsonschema.exceptions import SchemaError, ValidationError
from jsonschema.protocols import Validator
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource, Unresolvable

from executor.catalog import ToolInfo
from executor.errors import StepReferenceError
from executor.refs import parse_template
from executor.validate._utils import MAX_MESSAGE_VALUE, MAX_SHOWN, and_list, close_matches
from executor.validate.fast import FastAcceptor

__all__ = ["Validators", "argument_errors", "check_arguments", "compiled"]

logger = logging.getLogger(__name__)


def check_arguments(info: ToolInfo, arguments: Mapping[str, Any]) -> list[str]:
    """Check arguments as they will be sent (references resolved) against the tool's schema.

    Unlike the plan-time check, every value is data: a `${...}` in a string is
    text the tool receives, checked like any other.

    Args:
        info: The tool, with its `inputSchema`.
        arguments: The arguments exactly as they would be sent.

    Returns:
        One message per problem, naming the argument and what it must be; empty
        when they fit, or when the schema itself cannot be used (the server's
        fault: the call is then left to the server to judge).
    """
    validators = _compiled_by_identity(info.input_schema)
    if validators is None:
        return []
    return argument_errors(f"{info.server}.{info.name}", arguments, validators, literal=True)


_BY_IDENTITY: dict[int, tuple[Mapping[str, Any], Validators | None]] = {}
_BY_IDENTITY_MAX = 4096


def _compiled_by_identity(schema: Mapping[str, Any]) -> Validators | None:
    """`_compiled`, without serialising the schema again for a schema object seen before.

    A run checks every call's arguments against its catalog's (long-lived) schema
    objects; keeping a reference to each keeps its id from being reused.
    """
    hit = _BY_IDENTITY.get(id(schema))
    if hit is not None and hit[0] is schema:
        return hit[1]
    if len(_BY_IDENTITY) >= _BY_IDENTITY_MAX:
        _BY_IDENTITY.clear()
    validators = compiled(schema)
    _BY_IDENTITY[id(schema)] = (schema, validators)
    return validators


class _Whole:
    """Stands for a value that is exactly one reference: any JSON value at run time."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return repr(self.text)


class _Templated(str):
    """A string with references inside: certainly a string, its content unknown."""

    __slots__ = ()


class _PartialDict(dict[str, Any]):
    """An object holding, at some depth, a value only run time knows."""


class _PartialList(list[Any]):
    """An array holding, at some depth, a value only run time knows."""


_UNKNOWN = (_Whole, _Templated, _PartialDict, _PartialList)

# Keywords an unknown part of the instance could turn from pass to fail or back.
_UNSURE_KEYWORDS = frozenset({"not", "if", "enum", "const", "contains", "disallow"})
# Keywords about a string's content rather than its type.
_CONTENT_KEYWORDS = frozenset(
    {
        "pattern",
        "minLength",
        "maxLength",
        "format",
        "contentEncoding",
        "contentMediaType",
        "contentSchema",
    }
)

_KeywordFn = Callable[[Validator, Any, Any, Any], Iterator[ValidationError] | None]


def _lenient(keyword: str, check: _KeywordFn, any_of: _KeywordFn | None) -> _KeywordFn:
    def run(
        validator: Validator, value: Any, instance: Any, schema: Any
    ) -> Iterator[ValidationError]:
        if isinstance(instance, _UNKNOWN):
            if isinstance(instance, _Whole):
                return
            if keyword == "oneOf":
                # Placeholders pass every branch, so "more than one" proves nothing;
                # "none" still does.
                if any_of is not None:
                    yield from any_of(validator, value, instance, schema) or ()
                return
            if keyword in _UNSURE_KEYWORDS:
                return
            if keyword in _CONTENT_KEYWORDS and isinstance(instance, _Templated):
                return
        yield from check(validator, value, instance, schema) or ()

    return run


@functools.cache
def _lenient_class(base: type[Validator]) -> type[Validator]:
    keywords: dict[str, _KeywordFn] = dict(base.VALIDATORS)
    any_of = keywords.get("anyOf")
    wrapped = {k: _lenient(k, fn, any_of) for k, fn in keywords.items()}
    extended: type[Validator] = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
        base, validators=wrapped
    )
    return extended


@dataclass(frozen=True, slots=True)
class Validators:
    """Everything needed to check arguments against one schema, compiled once."""

    plain: Validator
    """For arguments with no references: the fast path."""
    lenient: Validator
    """For arguments with references replaced by placeholders."""
    properties: tuple[str, ...]
    """Top-level property names, to list in messages."""
    fast: FastAcceptor | None
    """A quick acceptor for common schemas, or `None` when the schema is beyond it."""


def _refuse_remote(uri: str) -> Resource[Any]:
    # A tool's schema must never make taskorch fetch a URL (or even resolve a
    # name): a remote `$ref` is simply unresolvable, and the arguments unchecked.
    raise NoSuchResource(ref=uri)  # type: ignore[call-arg]


_LOCAL_ONLY: Registry[Any] = Registry(retrieve=_refuse_remote)  # type: ignore[call-arg]


def compiled(schema: Mapping[str, Any]) -> Validators | None:
    """The schema's validators (cached by content), or `None` when the schema is unusable."""
    try:
        key = json.dumps(schema, sort_keys=True, separators=(",", ":"), default=repr)
    except ValueError:
        return None
    return _compile_cached(key)


@functools.lru_cache(maxsize=1024)
def _compile_cached(key: str) -> Validators | None:
    schema = json.loads(key)
    base: type[Validator] = jsonschema.validators.validator_for(
        schema, default=jsonschema.Draft202012Validator
    )
    try:
        base.check_schema(schema)
    except SchemaError as exc:
        # The downstream server's fault, not the plan's: run time will tell.
        logger.warning("a tool's inputSchema is not valid, arguments not checked: %s", exc.message)
        return None
    props = schema.get("properties") if isinstance(schema, dict) else None
    return Validators(
        plain=base(schema, registry=_LOCAL_ONLY),
        lenient=_lenient_class(base)(schema, registry=_LOCAL_ONLY),
        properties=tuple(props) if isinstance(props, dict) else (),
        fast=FastAcceptor.compile(schema, root=True),
    )


def _checkable(value: Any) -> Any:
    """A copy of `value` as schema checks should see it (see the module docstring).

    Returns `value` itself when nothing in it needs replacing.
    """
    if isinstance(value, str):
        if "$" not in value:
            return value
        parts = parse_template(value)
        if all(isinstance(p, str) for p in parts):
            # Only `$$` escapes: the tool receives the unescaped text.
            return "".join(p for p in parts if isinstance(p, str))
        if len(parts) == 1:
            return _Whole(value)
        return _Templated(value)
    if isinstance(value, dict):
        out = {k: _checkable(v) for k, v in value.items()}
        if all(out[k] is v for k, v in value.items()):
            return value
        if any(isinstance(v, _UNKNOWN) for v in out.values()):
            return _PartialDict(out)
        return out
    if isinstance(value, list | tuple):
        items = [_checkable(v) for v in value]
        if all(a is b for a, b in zip(items, value, strict=True)) and isinstance(value, list):
            return value
        if any(isinstance(v, _UNKNOWN) for v in items):
            return _PartialList(items)
        return items
    return value


def argument_errors(
    name: str, arguments: Mapping[str, Any], validators: Validators, *, literal: bool = False
) -> list[str]:
    """One message per way `arguments` do not fit; empty when they fit.

    Args:
        name: The tool, as `server.tool`, for the messages.
        arguments: The step's arguments.
        validators: The tool's compiled `inputSchema`.
        literal: Strings are data (resolved arguments): `${...}` is text.
    """
    try:
        if validators.fast is not None and validators.fast.accepts(arguments, literal=literal):
            return []
        instance = arguments if literal else _checkable(arguments)
        checker = validators.lenient if isinstance(instance, _UNKNOWN) else validators.plain
        errors = list(checker.iter_errors(instance))
    except StepReferenceError as exc:
        return [f"the arguments hold a malformed reference: {exc}"]
    except RecursionError:
        return [f"the arguments are nested too deeply to check against {name!r}: flatten them"]
    except Unresolvable as exc:
        logger.warning("cannot resolve a $ref in the inputSchema of %s: %s", name, exc)
        return []
    errors.sort(key=lambda e: (list(map(str, e.absolute_path)), str(e.validator)))
    # One `required` error comes per missing key, each naming them all: keep one.
    return list(dict.fromkeys(_schema_message(name, e, validators.properties) for e in errors))


def _schema_message(tool: str, error: ValidationError, properties: tuple[str, ...]) -> str:
    where = "arguments" + error.json_path.removeprefix("$")
    keyword = error.validator
    at_root = not error.absolute_path
    if keyword == "required" and isinstance(error.instance, dict):
        required = error.validator_value if isinstance(error.validator_value, list) else []
        missing = [k for k in required if k not in error.instance]
        names = and_list(missing) or "a required key"
        if at_root:
            return f"{tool!r} requires the argument(s) {names}, which the step lacks: add them"
        return f"{where} lacks the key(s) {names}, which {tool!r} requires there: add them"
    if keyword == "additionalProperties" and at_root and isinstance(error.instance, dict):
        extra = _extra_keys(error)
        if extra:
            hints = []
            for key in extra:
                close = close_matches(key, properties, n=1)
                if close:
                    hints.append(f"{key!r} -> {close[0]!r}")
            rename = f" (did you mean {', '.join(hints)}?)" if hints else ""
            accepted = and_list(properties[: MAX_SHOWN * 2]) or "none"
            return (
                f"{tool!r} takes no argument(s) {and_list(extra)}{rename}: remove them; "
                f"its arguments are {accepted}"
            )
    message = error.message
    if len(message) > 2 * MAX_MESSAGE_VALUE:
        message = message[: 2 * MAX_MESSAGE_VALUE - 3] + "..."
    return f"{where} does not fit the input schema of {tool!r}: {message}; change it to match"


def _extra_keys(error: ValidationError) -> list[str]:
    """The keys `additionalProperties` refused, when the schema says plainly which."""
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    if "patternProperties" in schema:
        return []
    props = schema.get("properties")
    known = props if isinstance(props, Mapping) else {}
    instance = error.instance
    return [k for k in instance if k not in known] if isinstance(instance, Mapping) else []
