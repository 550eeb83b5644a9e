"""The pool against real servers over stdio: catalog, calls, errors, timeouts, cancellation."""

from __future__ import annotations

import re
from pathlib import Path

import anyio
import pytest

from executor.catalog import Catalog
from executor.downstream import Pool
from executor.downstream.specs import StdioServerSpec
from executor.errors import Delivery, ErrorKind, ToolCallError
from tests.fixtures.helpers import ProgressLog, eventually, read, wait_for_marker
from tests.fixtures.launch import EVERYTHING, everything_spec, fixture_spec, time_spec, tiny_spec

pytestmark = pytest.mark.anyio

ALIAS = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
ERAS = ["2026-07-28", "2025-11-25"]


def hanging_call(era: str, marker: Path) -> tuple[StdioServerSpec, str, dict[str, object]]:
    """A server of that protocol era, and a call to it that only ends when cancelled."""
    if era == "2026-07-28":
        return fixture_spec("s"), "hang", {"marker": str(marker)}
    return tiny_spec("s"), "sleep", {"seconds": 600, "marker": str(marker)}


async def test_two_servers_with_the_same_tool_names_are_both_callable() -> None:
    async with Pool({"alpha": fixture_spec("alpha"), "beta": fixture_spec("beta")}) as pool:
        catalog = await pool.catalog()

        alpha, beta = catalog.get("alpha", "whoami"), catalog.get("beta", "whoami")
        assert alpha is not None and beta is not None
        assert alpha.alias != beta.alias
        assert all(ALIAS.match(info.alias) for info in catalog)
        assert len({info.alias for info in catalog}) == len(catalog)
        assert catalog.servers() == ["alpha", "beta"]

        who = {
            server: (await pool.call(server, "whoami", {})).output() for server in ("alpha", "beta")
        }
        assert who == {"alpha": {"result": "alpha"}, "beta": {"result": "beta"}}


async def test_catalog_keeps_schemas_and_annotations() -> None:
    async with Pool({"alpha": fixture_spec("alpha")}) as pool:
        catalog = await pool.catalog()
        echo = catalog.get("alpha", "echo")
        wipe = catalog.get("alpha", "delete_everything")
        slow = catalog.get("alpha", "slow")
        assert echo is not None and wipe is not None and slow is not None
        assert echo.description == "Return the text unchanged."
        assert echo.input_schema["required"] == ["text"]
        assert echo.output_schema is not None and "result" in echo.output_schema["properties"]
        assert echo.annotations.read_only and echo.annotations.idempotent
        assert not echo.annotations.destructive and not echo.annotations.open_world
        assert wipe.annotations.destructive and not wipe.annotations.idempotent
        # No annotations at all: MCP's defaults (may write, may destroy, open world).
        assert slow.annotations.destructive and slow.annotations.open_world
        assert not slow.annotations.safe_to_repeat


async def test_allowed_and_denied_tools_filter_catalog_and_calls() -> None:
    spec = tiny_spec("tiny", allowed_tools=("ech?", "s*"), denied_tools=("spawn_*",))
    async with Pool({"tiny": spec}) as pool:
        catalog = await pool.catalog()
        assert sorted(t.name for t in catalog.tools_of("tiny")) == ["echo", "sleep"]

        with pytest.raises(ToolCallError) as denied:
            await pool.call("tiny", "spawn_child", {})
        assert denied.value.kind is ErrorKind.TOOL_UNAVAILABLE
        assert "denied_tools" in denied.value.message and "'spawn_*'" in denied.value.message

        with pytest.raises(ToolCallError) as not_allowed:
            await pool.call("tiny", "crash", {})
        assert not_allowed.value.kind is ErrorKind.TOOL_UNAVAILABLE
        assert "allowed_tools" in not_allowed.value.message

        assert (await pool.call("tiny", "echo", {"text": "kept"})).text() == "kept"


async def test_results_and_classified_errors() -> None:
    async with Pool({"alpha": fixture_spec("alpha")}) as pool:
        result = await pool.call("alpha", "add", {"a": 2, "b": 3})
        assert result.structured_content == {"result": 5}
        assert result.content == [{"type": "text", "text": "5"}]
        assert not result.is_error

        failed = await pool.call("alpha", "fail", {"message": "disk full on /var"})
        assert failed.is_error
        assert "disk full on /var" in failed.text()

        with pytest.raises(ToolCallError) as invalid:
            await pool.call("alpha", "reject", {"message": "x must be positive, got -1"})
        assert invalid.value.kind is ErrorKind.INVALID_ARGUMENTS
        assert invalid.value.message == "x must be positive, got -1"
        assert (invalid.value.server, invalid.value.tool) == ("alpha", "reject")

        with pytest.raises(ToolCallError) as unknown:
            await pool.call("alpha", "no_such_tool", {})
        assert unknown.value.kind is ErrorKind.TOOL_UNAVAILABLE
        assert "no tool named 'no_such_tool'" in unknown.value.message
        assert "echo" in unknown.value.message  # says what there is instead

        with pytest.raises(ToolCallError) as no_server:
            await pool.call("gamma", "echo", {})
        assert no_server.value.kind is ErrorKind.TOOL_UNAVAILABLE
        assert "configured: alpha" in no_server.value.message


async def test_progress_reaches_the_callback_and_extends_the_timeout() -> None:
    async with Pool({"alpha": fixture_spec("alpha")}) as pool:
        log = ProgressLog()
        # Eight steps of 0.25 s: 2 s in all, twice the 1 s idle timeout, yet
        # every step reports progress, so the call is never idle for long.
        result = await pool.call(
            "alpha", "slow", {"steps": 8, "delay": 0.25}, timeout_s=1.0, on_progress=log
        )
        assert result.text() == "done after 8 steps"
        assert [p for p, _, _ in log.reports] == [float(n) for n in range(1, 9)]
        assert log.reports[-1] == (8.0, 8.0, "step 8 of 8")


async def test_progress_cannot_extend_a_call_past_the_hard_maximum() -> None:
    async with Pool(
        {"alpha": fixture_spec("alpha")}, default_timeout_s=1.0, max_timeout_s=1.5
    ) as pool:
        with pytest.raises(ToolCallError) as timeout:
            await pool.call("alpha", "slow", {"steps": 40, "delay": 0.25})
        assert timeout.value.kind is ErrorKind.TIMEOUT
        assert "maximum of 1.5 s" in timeout.value.message


@pytest.mark.parametrize("era", ERAS)
async def test_a_timeout_cancels_the_call_on_the_server(tmp_path: Path, era: str) -> None:
    marker = tmp_path / "marker"
    spec, tool, args = hanging_call(era, marker)
    async with Pool({"s": spec}, default_timeout_s=0.5) as pool:
        with pytest.raises(ToolCallError) as timeout:
            await pool.call("s", tool, args)
        assert timeout.value.kind is ErrorKind.TIMEOUT
        assert "asked to cancel" in timeout.value.message
        await wait_for_marker(marker, "cancelled")
        # The session survives a timeout.
        assert (await pool.call("s", "echo", {"text": "still here"})).text() == "still here"


@pytest.mark.parametrize("era", ERAS)
async def test_an_outer_cancel_scope_cancels_the_call_on_the_server(
    tmp_path: Path, era: str
) -> None:
    marker = tmp_path / "marker"
    spec, tool, args = hanging_call(era, marker)
    async with Pool({"s": spec}) as pool:
        await pool.catalog()  # started, so the cancel lands on the call itself
        ended_with: list[type[BaseException]] = []
        with anyio.CancelScope() as scope:

            async def cancel_when_started() -> None:
                await wait_for_marker(marker, "started")
                scope.cancel()

            async with anyio.create_task_group() as tg:
                tg.start_soon(cancel_when_started)
                try:
                    await pool.call("s", tool, args)
                except BaseException as exc:
                    ended_with.append(type(exc))
                    raise
        assert scope.cancelled_caught
        assert ended_with == [anyio.get_cancelled_exc_class()]
        await wait_for_marker(marker, "cancelled")


async def test_concurrency_per_server_is_limited(tmp_path: Path) -> None:
    markers = [tmp_path / f"m{i}" for i in range(4)]
    async with Pool({"tiny": tiny_spec("tiny", max_concurrency=2)}) as pool:

        async def sleep(marker: Path) -> None:
            await pool.call("tiny", "sleep", {"seconds": 1.0, "marker": str(marker)})

        async with anyio.create_task_group() as tg:
            for marker in markers:
                tg.start_soon(sleep, marker)
    # Each marker holds its call's [start, end] on the server's monotonic clock.
    spans = [tuple(map(float, (await read(m)).split()[1::2])) for m in markers]
    most = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert most == 2


async def test_mcp_server_time_from_pypi() -> None:
    async with Pool({"time": time_spec()}) as pool:
        catalog = await pool.catalog()
        assert {t.name for t in catalog.tools_of("time")} >= {"get_current_time", "convert_time"}
        result = await pool.call("time", "get_current_time", {"timezone": "UTC"})
        assert not result.is_error
        assert isinstance(result.structured_content, dict)
        assert result.structured_content["timezone"] == "UTC"
        bad = await pool.call("time", "get_current_time", {"timezone": "Mars/Olympus_Mons"})
        assert bad.is_error and "Mars/Olympus_Mons" in bad.text()
        assert pool.health()[0].protocol_version == "2026-07-28"


@pytest.mark.npm
@pytest.mark.skipif(not EVERYTHING.exists(), reason="make test installs the npm packages")
async def test_server_everything_from_npm() -> None:
    async with Pool({"everything": everything_spec()}) as pool:
        catalog: Catalog = await pool.catalog()
        echo = catalog.get("everything", "echo")
        assert echo is not None and echo.annotations.read_only
        assert (await pool.call("everything", "echo", {"message": "hi"})).text() == "Echo: hi"

        log = ProgressLog()
        result = await pool.call(
            "everything",
            "trigger-long-running-operation",
            {"duration": 1, "steps": 4},
            timeout_s=30,
            on_progress=log,
        )
        assert "Long running operation completed" in result.text()
        assert [(p, t) for p, t, _ in log.reports] == [(n, 4.0) for n in (1.0, 2.0, 3.0, 4.0)]
        assert pool.health()[0].protocol_version == "2025-11-25"

        # The TypeScript SDK answers a protocol error with an `isError` result reading
        # "MCP error -32602: ...": it fails as the argument error it is.
        with pytest.raises(ToolCallError) as invalid:
            await pool.call("everything", "echo", {"message": 42})
        assert invalid.value.kind is ErrorKind.INVALID_ARGUMENTS
        assert invalid.value.delivery is Delivery.ANSWERED
        assert "expected string" in invalid.value.message
        # A tool that requires task augmentation refuses a plain call the same way.
        with pytest.raises(ToolCallError) as tasks_only:
            await pool.call("everything", "simulate-research-query", {"topic": "tides"})
        assert tasks_only.value.kind is ErrorKind.TOOL_UNAVAILABLE
        assert tasks_only.value.delivery is Delivery.ANSWERED
        assert "requires task augmentation" in tasks_only.value.message


async def test_tools_list_changed_refreshes_the_catalog() -> None:
    async with Pool({"alpha": fixture_spec("alpha"), "tiny": tiny_spec("tiny")}) as pool:
        await pool.catalog()
        await pool.call("alpha", "grow", {"tool_name": "fresh_alpha"})
        await pool.call("tiny", "grow", {"tool_name": "fresh_tiny"})

        async def listed() -> bool:
            catalog = await pool.catalog()
            return ("alpha", "fresh_alpha") in catalog and ("tiny", "fresh_tiny") in catalog

        await eventually(listed)
        assert (await pool.call("alpha", "fresh_alpha", {})).text() == "fresh_alpha"
        assert (await pool.call("tiny", "fresh_tiny", {})).text() == "fresh_tiny"
