"""Every failed call says whether its request may have reached the tool, from one table."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import pytest

from executor.downstream import Pool
from executor.downstream.specs import StdioServerSpec
from executor.errors import Delivery, ErrorKind, ToolCallError
from tests.fixtures.helpers import wait_for_marker
from tests.fixtures.launch import network_server, tiny_spec

pytestmark = pytest.mark.anyio


async def failure(pool: Pool, server: str, tool: str, **arguments: object) -> ToolCallError:
    with pytest.raises(ToolCallError) as caught:
        await pool.call(server, tool, dict(arguments))
    return caught.value


async def test_failures_before_the_request_goes_out_are_not_delivered() -> None:
    # A "server" that never answers its handshake: a call's deadline passes while
    # it waits for the session, before its request is sent.
    mute = StdioServerSpec(command=sys.executable, args=("-c", "import time; time.sleep(60)"))
    servers = {"tiny": tiny_spec(denied_tools=("environ",)), "mute": mute}
    async with Pool(servers, default_timeout_s=0.5, max_timeout_s=0.5) as pool:
        for server, tool, kind in [
            ("ghost", "echo", ErrorKind.TOOL_UNAVAILABLE),
            ("tiny", "environ", ErrorKind.TOOL_UNAVAILABLE),
            ("tiny", "no_such_tool", ErrorKind.TOOL_UNAVAILABLE),
            ("mute", "anything", ErrorKind.TIMEOUT),
        ]:
            error = await failure(pool, server, tool)
            assert (error.kind, error.delivery) == (kind, Delivery.NOT_DELIVERED), error
        assert "before the request could be sent" in error.message


async def test_a_call_cut_off_after_its_request_went_out_is_ambiguous(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    async with Pool({"tiny": tiny_spec()}) as pool:
        with pytest.raises(ToolCallError) as timeout:
            await pool.call("tiny", "sleep", {"seconds": 30, "marker": str(marker)}, timeout_s=0.3)
        assert (timeout.value.kind, timeout.value.delivery) == (
            ErrorKind.TIMEOUT,
            Delivery.AMBIGUOUS,
        )
        await wait_for_marker(marker, "cancelled")

        exited = await failure(pool, "tiny", "crash", code=3)
        assert (exited.kind, exited.delivery) == (ErrorKind.TOOL_UNAVAILABLE, Delivery.AMBIGUOUS)


async def test_http_refusals_are_not_delivered_and_answers_are_answered(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    async with network_server("http", token="s3cret", weak_token="visitor") as server:
        servers = {"ok": server.spec("s3cret"), "none": server.spec()}
        async with Pool({**servers, "weak": server.spec("visitor")}) as pool:
            unauthenticated = await failure(pool, "none", "echo", text="x")
            assert unauthenticated.kind is ErrorKind.AUTHENTICATION
            assert unauthenticated.delivery is Delivery.NOT_DELIVERED
            forbidden = await failure(pool, "weak", "echo", text="x")
            assert forbidden.kind is ErrorKind.AUTHORIZATION
            assert forbidden.delivery is Delivery.NOT_DELIVERED
            rejected = await failure(pool, "ok", "reject", message="bad x")
            assert (rejected.kind, rejected.delivery) == (
                ErrorKind.INVALID_ARGUMENTS,
                Delivery.ANSWERED,
            )

            # The server dies mid-call: the call may have run.
            errors: list[ToolCallError] = []

            async def long_call() -> None:
                try:
                    await pool.call("ok", "hang", {"marker": str(marker)})
                except ToolCallError as exc:
                    errors.append(exc)

            async with anyio.create_task_group() as tg:
                tg.start_soon(long_call)
                await wait_for_marker(marker, "started")
                await server.kill()
            [lost] = errors
            assert (lost.kind, lost.delivery) == (ErrorKind.NETWORK, Delivery.AMBIGUOUS)

            # Nothing listens any more: the next call cannot connect at all.
            refused = await failure(pool, "ok", "echo", text="x")
            assert (refused.kind, refused.delivery) == (ErrorKind.NETWORK, Delivery.NOT_DELIVERED)
