"""Text forms, summaries and byte paging of step outputs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from executor.calls import ToolResult
from executor.errors import StepReferenceError, UserError
from executor.outputs import INLINE_MAX_BYTES, page_text, summarize
from executor.refs import StepValue, read_path, resolve_references


@settings(max_examples=200, deadline=None)
@given(text=st.text(), limit=st.integers(min_value=1, max_value=12))
def test_pages_rebuild_any_text_byte_for_byte(text: str, limit: int) -> None:
    pieces: list[bytes] = []
    offset: int | None = 0
    while offset is not None:
        page = page_text(text, offset, limit)
        assert page.offset == offset and page.total_bytes == len(
            text.encode("utf-8", "surrogatepass")
        )
        pieces.append(page.data.encode("utf-8", "surrogatepass"))
        assert page.data or not text
        offset = page.next_offset
    assert b"".join(pieces) == text.encode("utf-8", "surrogatepass")


def test_paging_refuses_offsets_it_cannot_honour() -> None:
    with pytest.raises(UserError, match="inside a UTF-8 character"):
        page_text("é", 1, 10)
    with pytest.raises(UserError, match="outside the output's 2 bytes"):
        page_text("é", 3, 10)
    with pytest.raises(UserError, match="at least 1 byte"):
        page_text("é", 0, 0)
    assert page_text("日", 0, 1).data == "日"  # a limit under one character still moves on


def test_summaries_say_size_kind_shape_and_content() -> None:
    text = ToolResult(content=[{"type": "text", "text": "x" * (INLINE_MAX_BYTES + 1)}])
    summary = summarize(text)
    assert (summary.kind, summary.size_bytes, summary.inline) == (
        "text",
        INLINE_MAX_BYTES + 1,
        False,
    )
    assert summary.head == "x" * 4096 and summary.shape is None and summary.content == ()
    parsed = summarize(ToolResult(content=[{"type": "text", "text": '{"a": [1, {"b": null}]}'}]))
    assert parsed.kind == "json" and parsed.shape == {"a": ["number"]} and parsed.inline
    assert parsed.head == '{"a": [1, {"b": null}]}'  # the tool's own text, not re-encoded
    mixed = summarize(
        ToolResult(
            content=[
                {"type": "text", "text": "hi"},
                {"type": "image", "data": "AAAA", "mimeType": "image/png"},
                {"type": "resource_link", "uri": "file:///a", "name": "a"},
                {
                    "type": "resource",
                    "resource": {"uri": "mem://x", "blob": "QQ==", "mimeType": "x/y"},
                },
            ]
        )
    )
    assert [(c.type, c.mime_type, c.size_bytes, c.uri) for c in mixed.content] == [
        ("text", None, 2, None),
        ("image", "image/png", 4, None),
        ("resource_link", None, 0, "file:///a"),
        ("resource", "x/y", 4, "mem://x"),
    ]


def test_references_read_content_blocks_unless_the_output_has_content() -> None:
    image = StepValue(
        "caption", [{"type": "text", "text": "caption"}, {"type": "image", "data": "AAA"}]
    )
    assert resolve_references({"d": "${img.content.1.data}", "t": "${img}"}, {"img": image}) == {
        "d": "AAA",
        "t": "caption",
    }
    own = StepValue({"content": "file text"}, [{"type": "text", "text": "file text"}])
    assert read_path(own, ["content"], root="read") == "file text"
    with pytest.raises(StepReferenceError, match="array of length 2"):
        read_path(image, ["content", "2"], root="img")
