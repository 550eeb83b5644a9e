"""What a step produced, seen from outside: its text form, a summary for answers, pages of it.

A step's output (see `ToolResult.output`) has a *text form*, the bytes that
paging returns and a resource rebuilds: the tool's own text when the output
came from text (even when it parsed as JSON), else the output as compact JSON.
A value inside it (a reference path such as `items.10` or `content.1.data`)
has one too: a string is itself, anything else compact JSON.

`summarize` makes the `OutputSummary` kept with the step state: the text
form's size and beginning, the JSON shape (keys and types), whether the
output is small enough to keep inline, and a line per content block. Answers
are built from it without loading large outputs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict

from executor.calls import ToolResult
from executor.errors import UserError

__all__ = [
    "HEAD_BYTES",
    "INLINE_MAX_BYTES",
    "ContentInfo",
    "OutputPage",
    "OutputSummary",
    "content_infos",
    "cut_utf8",
    "json_shape",
    "output_text",
    "page_text",
    "summarize",
    "utf8_size",
    "value_text",
]

INLINE_MAX_BYTES: Final = 16 * 1024
"""Outputs whose text form is at most this many bytes are kept with the step state."""
HEAD_BYTES: Final = 4096
"""Most bytes of an output's beginning kept in its summary, for previews."""

_SHAPE_DEPTH = 4
_SHAPE_KEYS = 30

# A tool's JSON may carry lone surrogates (`"\udc80"`): they are counted and paged as
# the three bytes Python's "surrogatepass" gives them, so pages still rebuild the text.
_ERRORS: Final = "surrogatepass"

# Compact, and non-ASCII kept as it is: the text form's bytes are UTF-8 of this.
_COMPACT: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


class ContentInfo(BaseModel):
    """One content block a tool returned, described without its payload."""

    # defer_build: the schema is built at first use, not at import (read commands import
    # many models and validate few).
    model_config = ConfigDict(frozen=True, defer_build=True)

    index: int
    """Its position in the tool's `content` list (`${step.content.N}`)."""
    type: str
    """text, image, audio, resource (embedded) or resource_link."""
    mime_type: str | None = None
    """The payload's MIME type, when the block gives one."""
    size_bytes: int = 0
    """Bytes of its payload: the text, the base64 data, or the resource's text or blob."""
    uri: str | None = None
    """The resource's URI, for embedded resources and resource links."""
    name: str | None = None
    """The resource link's name, when it has one."""


class OutputSummary(BaseModel):
    """What answers say about a step's output without loading it."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    kind: Literal["text", "json"]
    """`text` when the output is the tool's text, `json` when it is structured or parsed."""
    size_bytes: int
    """Bytes of the output's text form (UTF-8)."""
    head: str
    """The text form's beginning, at most `HEAD_BYTES` bytes, cut between characters."""
    shape: Any = None
    """For JSON: its keys and their types, nested a few levels (`"string"`, `["number"]`)."""
    inline: bool
    """Whether the whole output is kept with the step state (small enough)."""
    content: tuple[ContentInfo, ...] = ()
    """Every content block the tool returned, when any is not text; else empty."""


@dataclass(frozen=True, slots=True)
class OutputPage:
    """One page of a text form.

    Attributes:
        data: The page's text.
        offset: Byte offset of its first byte.
        next_offset: Byte offset of the next page; `None` after the last.
        total_bytes: Bytes of the whole text form.
    """

    data: str
    offset: int
    next_offset: int | None
    total_bytes: int


def value_text(value: Any) -> str:
    """The text form of a value: a string as it is, anything else as compact JSON."""
    if isinstance(value, str):
        return value
    return _COMPACT.encode(value)


def output_text(result: ToolResult) -> str:
    """The text form of a result's output: the tool's text, or its structured content as JSON."""
    if result.structured_content is not None:
        return _COMPACT.encode(result.structured_content)
    return result.text()


def cut_utf8(data: bytes, end: int) -> int:
    """The largest character boundary of UTF-8 `data` at or before byte `end`."""
    end = min(end, len(data))
    while 0 < end < len(data) and (data[end] & 0xC0) == 0x80:
        end -= 1
    return end


def page_text(text: str, offset: int, limit: int) -> OutputPage:
    """Bytes `offset` to about `offset + limit` of `text`'s UTF-8, cut between characters.

    Concatenating the pages, each from the previous page's `next_offset`,
    rebuilds the text byte for byte.

    Raises:
        UserError: `offset` is negative, past the end, or inside a character;
            `limit` is below 1.
    """
    if limit < 1:
        raise UserError(f"limit must be at least 1 byte, got {limit}")
    data = text.encode("utf-8", _ERRORS)
    total = len(data)
    if offset < 0 or offset > total:
        raise UserError(f"offset {offset} is outside the output's {total} bytes (0 to {total})")
    if offset < total and (data[offset] & 0xC0) == 0x80:
        raise UserError(
            f"offset {offset} falls inside a UTF-8 character: start at 0 or at a page's next_offset"
        )
    end = cut_utf8(data, offset + limit)
    if end <= offset < total:
        # The limit is smaller than the character there: return that one character.
        end = offset + 1
        while end < total and (data[end] & 0xC0) == 0x80:
            end += 1
    return OutputPage(
        data=data[offset:end].decode("utf-8", _ERRORS),
        offset=offset,
        next_offset=end if end < total else None,
        total_bytes=total,
    )


def json_shape(value: Any, depth: int = _SHAPE_DEPTH) -> Any:
    """Keys and types of a JSON value: `{"a": "string", "b": ["number"]}`.

    Objects list at most 30 keys (then `"…": "N more keys"`); an array shows
    the shape of its first item; past `depth` levels a type name stands for
    the rest.
    """
    if isinstance(value, dict):
        if depth <= 0:
            return "object"
        shape = {k: json_shape(v, depth - 1) for k, v in list(value.items())[:_SHAPE_KEYS]}
        if len(value) > _SHAPE_KEYS:
            shape["…"] = f"{len(value) - _SHAPE_KEYS} more keys"
        return shape
    if isinstance(value, list):
        if depth <= 0 or not value:
            return "array"
        return [json_shape(value[0], depth - 1)]
    return _type_name(value)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "string" if isinstance(value, str) else type(value).__name__


def utf8_size(text: str) -> int:
    """Bytes of `text` in UTF-8 (lone surrogates as three), without a copy when it is ASCII."""
    return len(text) if text.isascii() else len(text.encode("utf-8", _ERRORS))


def _text_form_size_and_head(result: ToolResult) -> tuple[int, str]:
    """Size and beginning of the text form, without building it whole.

    A large output passes through here once per step: encoding it whole would
    cost twice its size in temporaries; the encoder's pieces are measured instead.
    """
    if result.structured_content is None:
        pieces: Any = [result.text()]
    else:
        # In pieces: each string and each bit of punctuation apart.
        pieces = _COMPACT.iterencode(result.structured_content)
    size = 0
    head: list[str] = []
    for piece in pieces:
        if size < HEAD_BYTES:
            head.append(piece[:HEAD_BYTES])
        size += utf8_size(piece)
    data = "".join(head).encode("utf-8", _ERRORS)
    return size, data[: cut_utf8(data, HEAD_BYTES)].decode("utf-8", _ERRORS)


def summarize(result: ToolResult, output: Any = None) -> OutputSummary:
    """The summary of a successful result's output (`output` when already computed)."""
    if output is None:
        output = result.output()
    size, head = _text_form_size_and_head(result)
    structured = result.structured_content is not None or not isinstance(output, str)
    return OutputSummary(
        kind="json" if structured else "text",
        size_bytes=size,
        head=head,
        shape=json_shape(output) if structured else None,
        inline=size <= INLINE_MAX_BYTES,
        content=content_infos(result.content),
    )


def content_infos(blocks: Sequence[dict[str, Any]]) -> tuple[ContentInfo, ...]:
    """A line per block, or nothing when every block is text (the output has it all)."""
    if all(b.get("type") == "text" for b in blocks):
        return ()
    return tuple(_content_info(i, b) for i, b in enumerate(blocks))


def _content_info(index: int, block: dict[str, Any]) -> ContentInfo:
    kind = str(block.get("type", "unknown"))
    mime = block.get("mimeType")
    size = 0
    uri = name = None
    if kind == "text":
        size = utf8_size(str(block.get("text", "")))
    elif kind in ("image", "audio"):
        size = len(str(block.get("data", "")))
    elif kind == "resource":
        resource = block.get("resource") or {}
        uri = resource.get("uri")
        mime = resource.get("mimeType", mime)
        payload = resource.get("text", resource.get("blob", ""))
        size = utf8_size(str(payload))
    elif kind == "resource_link":
        uri, name = block.get("uri"), block.get("name")
    return ContentInfo(
        index=index,
        type=kind,
        mime_type=mime if isinstance(mime, str) else None,
        size_bytes=size,
        uri=uri if isinstance(uri, str) else None,
        name=name if isinstance(name, str) else None,
    )
