"""The reference checks: a `${step.path}` must fit the producing tool's `outputSchema`.

`${rd.contents}` is refused when the tool's schema declares only `content`,
with the key it probably meant; a path through anything the schema leaves open
(composition, `$ref`, pattern properties) is left to run time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from executor.catalog import Catalog, ToolInfo
from executor.errors import StepReferenceError
from executor.plan import Step
from executor.refs import StepRef, parse_template
from executor.validate._utils import MAX_SHOWN, and_list, close_matches, walk_strings
from executor.validate.problem import Problem

__all__ = ["ReferenceCheck", "output_path_problem"]


class ReferenceCheck:
    """Checks each step's references against its producers' output schemas."""

    def __init__(self, catalog: Catalog) -> None:
        """Check against the tools of `catalog`."""
        self.catalog = catalog
        self._outputs: dict[tuple[str, str], ToolInfo | None] = {}

    def problems(self, step: Step, producers: Mapping[str, Step]) -> list[Problem]:
        """References whose path the producing tool's `outputSchema` rules out."""
        typed = [d for d in step.depends_on if d in producers and self._output_schema(producers[d])]
        if not typed:
            return []  # no reference here can be checked: skip the walk
        problems: list[Problem] = []
        for path, text in walk_strings(step.arguments):
            if "${" not in text:
                continue
            try:
                parts = parse_template(text)
            except StepReferenceError:
                continue  # reported by parse_steps
            for ref in parts:
                if not isinstance(ref, StepRef) or not ref.path or ref.step not in producers:
                    continue
                info = self._output_schema(producers[ref.step])
                if info is None:
                    continue
                why = output_path_problem(ref, info)
                if why is not None:
                    message = f"the reference '{ref}' in arguments{path} {why}"
                    problems.append(Problem(step.id, "invalid_reference", message))
        return problems

    def _output_schema(self, producer: Step) -> ToolInfo | None:
        """The producer's tool, when it declares an `outputSchema`."""
        key = (producer.server, producer.tool)
        if key not in self._outputs:
            info = self.catalog.get(*key)
            self._outputs[key] = info if info is not None and info.output_schema else None
        return self._outputs[key]


# Keywords that can let an object hold keys its `properties` do not list, or that
# make a node's shape depend on more than itself: a path through them is left to run time.
_OPEN_KEYWORDS = frozenset(
    {
        "$ref",
        "$dynamicRef",
        "allOf",
        "anyOf",
        "oneOf",
        "if",
        "dependentSchemas",
        "patternProperties",
        "unevaluatedProperties",
    }
)
_SCALAR_TYPES = {
    "string": "a string",
    "number": "a number",
    "integer": "an integer",
    "boolean": "a boolean",
    "null": "null",
}


def output_path_problem(ref: StepRef, info: ToolInfo) -> str | None:
    """Why the tool's `outputSchema` rules `ref`'s path out, or `None` when it may exist.

    A key an object schema does not list is ruled out when the schema lists its
    keys and says nothing of others (or forbids them): reading an undeclared key
    is a mistake far more often than a tool's undeclared extra. Anything the
    schema leaves open (composition, `$ref`, pattern properties) is left to run time.
    """
    schema: Any = info.output_schema
    tool = f"{info.server}.{info.name}"
    walked: str = ref.step
    for depth, seg in enumerate(ref.path):
        if not isinstance(schema, dict) or not _OPEN_KEYWORDS.isdisjoint(schema):
            return None
        props = schema.get("properties")
        props = props if isinstance(props, dict) else {}
        if depth == 0 and seg == "content" and "content" not in props:
            return None  # `${s.content...}` may address the tool's content blocks
        declared = schema.get("type")
        types = {declared} if isinstance(declared, str) else set(declared or ())
        if props or types == {"object"}:
            if seg in props:
                schema = props[seg]
            else:
                extra = schema.get("additionalProperties")
                if isinstance(extra, dict) and extra:
                    schema = extra
                elif extra is False or (extra is None and props):
                    return _undeclared_key(ref, tool, walked, seg, list(props))
                else:
                    return None
        elif types == {"array"}:
            if not seg.isdigit():
                return (
                    f"reads '{seg}', but in the output of '{tool}' '{walked}' is an array: "
                    f"'{seg}' is not an index in it; write a number such as '{walked}.0'"
                )
            schema = schema.get("items")
        elif types and types <= set(_SCALAR_TYPES):
            what = " or ".join(_SCALAR_TYPES[t] for t in sorted(types))
            return (
                f"reads '{seg}', but in the output of '{tool}' '{walked}' is {what}, which has "
                f"no '{seg}': reference '${{{walked}}}' itself"
            )
        else:
            return None
        walked = f"{walked}.{seg}"
    return None


def _undeclared_key(ref: StepRef, tool: str, walked: str, seg: str, keys: list[str]) -> str:
    head = (
        f"reads '{seg}', but in the output of '{tool}' (its outputSchema) '{walked}' has "
        f"only {and_list(keys[: MAX_SHOWN * 2]) or 'no keys'}"
    )
    close = close_matches(seg, keys, n=1)
    if not close:
        return f"{head}: read one of those"
    fixed = StepRef(ref.step, tuple(close[0] if p is seg else p for p in ref.path))
    return f"{head}: did you mean '{fixed}'?"
