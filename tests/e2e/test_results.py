"""Results that fit a host, through the MCP face, with real downstream servers.

The npm filesystem server reads files of any size; server-everything returns
images and text-only answers. The host is an SDK `Client` on taskorch's MCP
server, so what is measured is what a host receives.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp_types import CallToolResult, ImageContent, ResourceLink, TextResourceContents

from server.config import TaskorchConfig
from server.mcp import build_server
from server.service import TaskOrchestrator
from tests.e2e.support import structured, tool_text
from tests.fixtures.launch import everything_spec, filesystem_spec

MB = 1024 * 1024


def _answer_bytes(result: CallToolResult) -> int:
    """Bytes of the whole tool result as it goes over the wire."""
    return len(result.model_dump_json(by_alias=True, exclude_none=True).encode())


def _big_text(size: int) -> str:
    """About `size` bytes of UTF-8 text with multi-byte characters, so byte paging is tested."""
    line = "line {:07d}: café, naïve, 日本語 — the quick brown fox\n"
    parts: list[str] = []
    total = 0
    i = 0
    while total < size:
        piece = line.format(i)
        parts.append(piece)
        total += len(piece.encode())
        i += 1
    return "".join(parts)


@pytest.fixture
async def host(tmp_path: Path) -> AsyncIterator[Client]:
    """A host connected to taskorch, whose servers are the npm filesystem and everything."""
    files = tmp_path / "files"
    files.mkdir()
    config = TaskorchConfig(
        servers={"fs": filesystem_spec(files), "everything": everything_spec()},
    )
    async with (
        TaskOrchestrator(config, db_path=tmp_path / "t.db") as orch,
        Client(build_server(orch)) as client,
    ):
        yield client


async def _run(client: Client, steps: list[dict[str, Any]]) -> tuple[str, CallToolResult]:
    created = structured(await client.call_tool("create_plan", {"query": "q", "steps": steps}))
    plan_id = created["plan_id"]
    structured(
        await client.call_tool(
            "confirm_plan", {"plan_id": plan_id, "plan_hash": created["plan_hash"]}
        )
    )
    return plan_id, await client.call_tool("execute_plan", {"plan_id": plan_id})


async def _page_all(client: Client, plan_id: str, step_id: str, **extra: Any) -> bytes:
    """Every page of a step's output, concatenated as bytes."""
    chunks: list[bytes] = []
    offset: int | None = 0
    pages = 0
    while offset is not None:
        page = structured(
            await client.call_tool(
                "get_step_output",
                {"plan_id": plan_id, "step_id": step_id, "offset": offset, **extra},
            )
        )
        assert page["offset"] == offset
        chunks.append(page["data"].encode())
        offset = page["next_offset"]
        pages += 1
        assert pages < 10_000, "paging does not end"
    return b"".join(chunks)


@pytest.mark.anyio
async def test_a_5_mb_read_answers_in_under_100_kb_and_comes_back_whole(
    host: Client, tmp_path: Path
) -> None:
    text = _big_text(5 * MB)
    path = tmp_path / "files" / "big.txt"
    path.write_text(text, encoding="utf-8")
    steps = [
        {"id": "read", "server": "fs", "tool": "read_text_file", "arguments": {"path": str(path)}}
    ]

    plan_id, result = await _run(host, steps)
    size = _answer_bytes(result)
    assert size < 100_000, f"execute_plan answered {size:,} bytes for a 5 MB read"
    report = structured(result)
    assert report["status"] == "completed", report["message"]
    step = report["steps"][0]
    preview = step["output_preview"]
    assert preview["size_bytes"] == len(
        json.dumps({"content": text}, ensure_ascii=False, separators=(",", ":")).encode()
    )
    assert preview["kind"] == "json"
    assert preview["shape"] == {"content": "string"}
    assert preview["head"].startswith('{"content":"line 0000000: café')
    uri = f"plan://{plan_id}/steps/read/output"
    assert preview["uri"] == uri
    links = [c for c in result.content if isinstance(c, ResourceLink)]
    assert [str(link.uri) for link in links] == [uri]

    # get_plan and the plan resource are bounded the same way.
    plan = await host.call_tool("get_plan", {"plan_id": plan_id})
    assert _answer_bytes(plan) < 100_000
    resource = await host.read_resource(f"plan://{plan_id}")
    assert sum(len(getattr(c, "text", "")) for c in resource.contents) < 100_000

    # The whole file, byte for byte: the text at a path, paged, and the resource.
    paged = await _page_all(host, plan_id, "read", path="content")
    assert paged == text.encode()
    whole = await host.read_resource(uri)
    [contents] = whole.contents
    assert isinstance(contents, TextResourceContents)
    assert json.loads(contents.text) == {"content": text}
    content_uri = f"plan://{plan_id}/steps/read/output/content"
    at_path = await host.read_resource(content_uri)
    [text_contents] = at_path.contents
    assert isinstance(text_contents, TextResourceContents)
    assert text_contents.text == text


@pytest.mark.anyio
async def test_paging_a_json_output_by_path_and_by_bytes(host: Client, tmp_path: Path) -> None:
    text = _big_text(200_000)
    path = tmp_path / "files" / "mid.txt"
    path.write_text(text, encoding="utf-8")
    steps = [
        {"id": "read", "server": "fs", "tool": "read_text_file", "arguments": {"path": str(path)}}
    ]
    plan_id, result = await _run(host, steps)
    assert structured(result)["status"] == "completed"

    whole = await _page_all(host, plan_id, "read", limit=7_001)
    assert json.loads(whole) == {"content": text}
    assert (
        whole == json.dumps({"content": text}, ensure_ascii=False, separators=(",", ":")).encode()
    )

    bad = await host.call_tool(
        "get_step_output", {"plan_id": plan_id, "step_id": "read", "path": "contents"}
    )
    assert bad.is_error
    assert "no key 'contents'" in tool_text(bad) and "'content'" in tool_text(bad)
    missing = await host.call_tool("get_step_output", {"plan_id": plan_id, "step_id": "nope"})
    assert missing.is_error and "read" in tool_text(missing)


@pytest.mark.anyio
async def test_an_image_reaches_the_host_as_an_image_and_a_later_step_as_data(
    host: Client,
) -> None:
    steps = [
        {"id": "img", "server": "everything", "tool": "get-tiny-image", "arguments": {}},
        {
            "id": "echo",
            "server": "everything",
            "tool": "echo",
            "arguments": {"message": "${img.content.1.data}"},
        },
    ]
    plan_id, result = await _run(host, steps)
    report = structured(result)
    assert report["status"] == "completed", report["message"]
    images = [c for c in result.content if isinstance(c, ImageContent)]
    assert len(images) == 1
    image = images[0]
    assert image.mime_type == "image/png" and len(image.data) > 1000
    # The step's output is its text; the image is listed with the step and kept whole.
    img_step = report["steps"][0]
    assert img_step["output"] == "Here's the image you requested:\nThe image above is the MCP logo."
    kinds = [c["type"] for c in img_step["content"]]
    assert kinds == ["text", "image", "text"]
    assert img_step["content"][1]["mime_type"] == "image/png"
    assert report["steps"][1]["output"] == f"Echo: {image.data}"

    via_path = await _page_all(host, plan_id, "img", path="content.1.data")
    assert via_path.decode() == image.data
    block = await host.read_resource(f"plan://{plan_id}/steps/img/content/1")
    [blob] = block.contents
    assert getattr(blob, "blob", None) == image.data and blob.mime_type == "image/png"


@pytest.mark.anyio
async def test_an_image_over_the_budget_comes_as_a_link(tmp_path: Path) -> None:
    config = TaskorchConfig.model_validate(
        {"servers": {"everything": everything_spec()}, "limits": {"answer_budget_tokens": 1000}}
    )
    steps = [{"id": "img", "server": "everything", "tool": "get-tiny-image", "arguments": {}}]
    async with (
        TaskOrchestrator(config, db_path=tmp_path / "t.db") as orch,
        Client(build_server(orch)) as client,
    ):
        plan_id, result = await _run(client, steps)
    assert _answer_bytes(result) <= 1000 * 4
    assert not [c for c in result.content if isinstance(c, ImageContent)]
    links = [str(c.uri) for c in result.content if isinstance(c, ResourceLink)]
    assert f"plan://{plan_id}/steps/img/content/1" in links


@pytest.mark.anyio
async def test_a_text_only_answer_becomes_a_number_through_a_built_in_step(
    host: Client,
) -> None:
    tools = structured(await host.call_tool("list_tools", {"server": "taskorch"}))
    names = {t["tool"] for t in tools["tools"]}
    assert {"extract", "select", "split_lines", "join", "format"} <= names
    for tool in tools["tools"]:
        assert tool["input_schema"]["type"] == "object" and tool["output_schema"], tool
        assert tool["read_only"] is True
    steps = [
        {"id": "sum", "server": "everything", "tool": "get-sum", "arguments": {"a": 2, "b": 3}},
        {
            "id": "n",
            "server": "taskorch",
            "tool": "extract",
            "arguments": {"text": "${sum}", "pattern": "is (-?\\d+)", "type": "number"},
        },
        {
            "id": "again",
            "server": "everything",
            "tool": "get-sum",
            "arguments": {"a": "${n.value}", "b": 10},
        },
    ]
    _, result = await _run(host, steps)
    report = structured(result)
    assert report["status"] == "completed", report["message"]
    assert report["steps"][0]["output"] == "The sum of 2 and 3 is 5."
    assert report["steps"][1]["output"]["value"] == 5
    assert report["steps"][2]["output"] == "The sum of 5 and 10 is 15."


@pytest.mark.anyio
async def test_built_in_steps_are_validated_like_any_tool(host: Client) -> None:
    steps = [{"id": "x", "server": "taskorch", "tool": "extract", "arguments": {"text": "a"}}]
    bad = await host.call_tool("create_plan", {"query": "q", "steps": steps})
    assert bad.is_error and "pattern" in tool_text(bad)
