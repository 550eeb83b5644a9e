"""Key spellings: every taskorch key in snake_case or camelCase, and mapping locations back.

The file is Claude Desktop's, which is camelCase; taskorch's fields are
snake_case. Either spelling is read (giving both is an error), and an error
names the key as the file spelt it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, get_args

from pydantic import BaseModel

if TYPE_CHECKING:
    from server.config.errors import Location, ParseContext

__all__ = ["camel", "known_keys_at", "nested_model", "normalise_keys", "user_location"]


def camel(name: str) -> str:
    """The camelCase spelling of a snake_case name (`api_key_env` -> `apiKeyEnv`)."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def nested_model(model: type[BaseModel], field: str) -> type[BaseModel] | None:
    """The model a field holds (itself or in a union), or `None` when it holds none."""
    annotation = model.model_fields[field].annotation
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def normalise_keys(
    data: Mapping[str, Any], model: type[BaseModel], ctx: ParseContext, path: Location
) -> dict[str, Any]:
    """Rename camelCase keys to the model's field names, here and in nested models."""
    fields = model.model_fields
    aliases = {camel(name): name for name in fields}
    out: dict[str, Any] = {}
    spelt: dict[str, str] = {}
    for key, value in data.items():
        canonical = key if key in fields else aliases.get(key, key)
        if canonical in spelt:
            raise ctx.error(
                (*path, key), f"the same key as {spelt[canonical]!r} (another spelling); keep one"
            )
        spelt[canonical] = key
        nested = nested_model(model, canonical) if canonical in fields else None
        if nested is not None and isinstance(value, Mapping):
            value = normalise_keys(value, nested, ctx, (*path, key))
        out[canonical] = value
    return out


def user_location(raw: object, loc: Sequence[str | int]) -> Location:
    """Map a pydantic location back to the keys as the file spelt them (camelCase or not)."""
    out: list[str | int] = []
    current: object = raw
    for segment in loc:
        if isinstance(current, Mapping) and isinstance(segment, str):
            if segment not in current and camel(segment) in current:
                segment = camel(segment)
            current = current.get(segment)
        elif isinstance(current, list | tuple) and isinstance(segment, int):
            current = current[segment] if 0 <= segment < len(current) else None
        else:
            current = None
        out.append(segment)
    return tuple(out)


def known_keys_at(model: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    """The keys the object at `loc` inside `model` may have (empty when unknown)."""
    current: type[BaseModel] | None = model
    for segment in loc:
        if current is None or not isinstance(segment, str) or segment not in current.model_fields:
            return []
        current = nested_model(current, segment)
    if current is None:
        return []
    return [name for name in current.model_fields if name != "type"]
