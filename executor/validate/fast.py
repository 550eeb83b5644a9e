"""`FastAcceptor`: a quick, conservative yes for the JSON Schemas most tools declare."""

from __future__ import annotations

import re
from typing import Any

from executor.errors import StepReferenceError
from executor.refs import StepRef, parse_template

__all__ = ["FastAcceptor"]

_ANNOTATION_KEYWORDS = frozenset(
    {
        "$comment",
        "$defs",
        "definitions",
        "default",
        "deprecated",
        "description",
        "examples",
        "format",
        "readOnly",
        "title",
        "writeOnly",
    }
)
# Drafts in which every keyword `FastAcceptor` knows means what `FastAcceptor` does.
_FAST_DIALECTS = frozenset(
    f"{scheme}://json-schema.org/{path}{tail}"
    for scheme in ("http", "https")
    for path in (
        "draft/2020-12/schema",
        "draft/2019-09/schema",
        "draft-07/schema",
        "draft-06/schema",
    )
    for tail in ("", "#")
)
_JSON_TYPES = frozenset({"null", "boolean", "integer", "number", "string", "array", "object"})
_Bound = int | float | None


class FastAcceptor:
    """A quick, conservative acceptor for the schemas most tools declare.

    jsonschema spends tens of microseconds on even a small object; a plan of
    10,000 steps cannot afford that for every step. `accepts` only ever says
    yes when jsonschema (with the placeholder rules of `executor.validate.arguments`) would find
    no error; when it says no, or the schema uses a keyword it does not know,
    the full validator runs and writes the messages. So it can be wrong only
    in the safe direction, and a property test holds it to that.
    """

    __slots__ = (
        "additional",
        "any",
        "enums",
        "items",
        "max_items",
        "max_length",
        "max_props",
        "maximum",
        "min_items",
        "min_length",
        "min_props",
        "minimum",
        "pattern",
        "props",
        "required",
        "strict_max",
        "strict_min",
        "types",
    )

    def __init__(self) -> None:
        self.any = False
        self.types: frozenset[str] | None = None
        self.enums: tuple[tuple[Any, ...], ...] = ()
        """Each `enum` and `const`: the value must be among every one."""
        self.props: dict[str, FastAcceptor] = {}
        self.required: tuple[str, ...] = ()
        self.additional: FastAcceptor | bool = True
        self.min_props: int | None = None
        self.max_props: int | None = None
        self.items: FastAcceptor | None = None
        self.min_items: int | None = None
        self.max_items: int | None = None
        self.minimum: _Bound = None
        self.maximum: _Bound = None
        self.strict_min: _Bound = None
        self.strict_max: _Bound = None
        self.min_length: int | None = None
        self.max_length: int | None = None
        self.pattern: re.Pattern[str] | None = None

    @classmethod
    def compile(cls, schema: Any, *, root: bool = False) -> FastAcceptor | None:
        """Build an acceptor, or `None` when the schema uses anything else."""
        if schema is True or schema == {}:
            node = cls()
            node.any = True
            return node
        if not isinstance(schema, dict):
            return None
        node = cls()
        for key, value in schema.items():
            if key in _ANNOTATION_KEYWORDS:
                continue
            if key == "$schema" and root and value in _FAST_DIALECTS:
                continue
            if not node._take(key, value):
                return None
        return node

    def _take(self, key: str, value: Any) -> bool:  # noqa: C901 - one branch per keyword
        """Record one keyword; `False` when it is not one this class handles."""
        if key == "type":
            names = [value] if isinstance(value, str) else value
            if not isinstance(names, list) or not set(names) <= _JSON_TYPES:
                return False
            self.types = frozenset(names)
        elif key == "enum":
            if not isinstance(value, list):
                return False
            self.enums = (*self.enums, tuple(value))
        elif key == "const":
            self.enums = (*self.enums, (value,))
        elif key == "properties":
            if not isinstance(value, dict):
                return False
            for name, sub in value.items():
                compiled = FastAcceptor.compile(sub)
                if compiled is None:
                    return False
                self.props[name] = compiled
        elif key == "required":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                return False
            self.required = tuple(value)
        elif key == "additionalProperties":
            if isinstance(value, bool):
                self.additional = value
            else:
                compiled = FastAcceptor.compile(value)
                if compiled is None:
                    return False
                self.additional = compiled
        elif key == "items":
            compiled = FastAcceptor.compile(value) if isinstance(value, dict | bool) else None
            if compiled is None:
                return False
            self.items = compiled
        elif key == "pattern":
            if not isinstance(value, str):
                return False
            try:
                self.pattern = re.compile(value)
            except re.error:
                return False
        elif key in _COUNTS:
            if isinstance(value, bool) or not isinstance(value, int):
                return False
            setattr(self, _COUNTS[key], value)
        elif key in _BOUNDS:
            if isinstance(value, bool) or not isinstance(value, int | float):
                return False
            setattr(self, _BOUNDS[key], value)
        else:
            return False
        return True

    def accepts(self, value: Any, *, literal: bool = False) -> bool:
        """Whether `value` certainly fits (`False` means: ask jsonschema).

        With `literal`, strings are data (resolved arguments): `${...}` is text.
        """
        if self.any:
            return True
        kind = type(value)
        if kind is str:
            if "$" in value and not literal:
                try:
                    parts = parse_template(value)
                except StepReferenceError:
                    return False
                if len(parts) == 1 and isinstance(parts[0], StepRef):
                    return True  # any value at run time
                if any(isinstance(p, StepRef) for p in parts):
                    # Certainly a string, of unknown content.
                    return not self.enums and (self.types is None or "string" in self.types)
                value = "".join(p for p in parts if isinstance(p, str))
            return self._accepts_string(value)
        if kind is dict:
            return (
                self._fits_type("object")
                and not self.enums
                and self._accepts_object(value, literal)
            )
        if kind is list:
            return (
                self._fits_type("array") and not self.enums and self._accepts_array(value, literal)
            )
        if kind is bool or value is None:
            name = "null" if value is None else "boolean"
            return self._fits_type(name) and self._in_enums(value)
        if kind is int or kind is float:
            if kind is int:
                fits = self._fits_type("integer") or self._fits_type("number")
            else:
                # jsonschema counts 1.0 as an integer; leave such cases to it.
                fits = self._fits_type("number")
            return fits and self._in_enums(value) and self._accepts_number(value)
        return False

    def _in_enums(self, value: str | float | bool | None) -> bool:
        return all(_in_enum(value, options) for options in self.enums)

    def _fits_type(self, name: str) -> bool:
        return self.types is None or name in self.types

    def _accepts_string(self, value: str) -> bool:
        if not self._fits_type("string"):
            return False
        if not self._in_enums(value):
            return False
        if self.min_length is not None and len(value) < self.min_length:
            return False
        if self.max_length is not None and len(value) > self.max_length:
            return False
        return self.pattern is None or self.pattern.search(value) is not None

    def _accepts_number(self, value: float) -> bool:
        if self.minimum is not None and value < self.minimum:
            return False
        if self.maximum is not None and value > self.maximum:
            return False
        if self.strict_min is not None and value <= self.strict_min:
            return False
        return self.strict_max is None or value < self.strict_max

    def _accepts_object(self, value: dict[Any, Any], literal: bool) -> bool:
        if self.min_props is not None and len(value) < self.min_props:
            return False
        if self.max_props is not None and len(value) > self.max_props:
            return False
        for name in self.required:
            if name not in value:
                return False
        props = self.props
        additional = self.additional
        for name, item in value.items():
            sub = props.get(name)
            if sub is not None:
                if not sub.accepts(item, literal=literal):
                    return False
            elif additional is False:
                return False
            elif additional is not True and not additional.accepts(item, literal=literal):
                return False
        return True

    def _accepts_array(self, value: list[Any], literal: bool) -> bool:
        if self.min_items is not None and len(value) < self.min_items:
            return False
        if self.max_items is not None and len(value) > self.max_items:
            return False
        items = self.items
        return items is None or all(items.accepts(v, literal=literal) for v in value)


_COUNTS = {
    "minLength": "min_length",
    "maxLength": "max_length",
    "minItems": "min_items",
    "maxItems": "max_items",
    "minProperties": "min_props",
    "maxProperties": "max_props",
}
_BOUNDS = {
    "minimum": "minimum",
    "maximum": "maximum",
    "exclusiveMinimum": "strict_min",
    "exclusiveMaximum": "strict_max",
}


def _in_enum(value: str | float | bool | None, options: tuple[Any, ...]) -> bool:
    """Whether a scalar is among the options, with JSON's rules: `true` is not `1`."""
    kind = type(value)
    return any(type(o) is kind and o == value for o in options)
