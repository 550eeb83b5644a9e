"""Questions from downstream tools, put to a host that waits for the run (`execute_plan`).

A host that follows the run as an MCP task is asked through its task
(`server.mcp.run_tasks`). A host that waits for the run inside its
`execute_plan(wait=true)` call is asked with an `elicitation/create` request
sent during that call, which only a 2025-era session allows (a 2026-07-28
session has no mid-call requests, and a long wait cannot be an input-required
round) and only when the host declared form elicitation. Otherwise, while it
waits, the step's question fails with a sentence saying what the host would
need. Once the wait ends, nobody follows the run for this host.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from mcp.server.mcpserver import Context
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ServerMessageMetadata
from mcp_types import ElicitRequest, ElicitRequestFormParams, ElicitResult
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError

from executor.asking import Askers, DownstreamQuestion, HostAsker
from executor.errors import CannotAsk
from server.mcp.approval import can_elicit

__all__ = ["asking_the_waiting_host"]

_TASKS = "io.modelcontextprotocol/tasks"


def _refusing(why: str) -> HostAsker:
    async def refuse(question: DownstreamQuestion) -> dict[str, Any]:
        raise CannotAsk(f"{question.text()}, and {why}")

    return refuse


def _eliciting(ctx: Context[Any, Any]) -> HostAsker:
    """Puts a question to the host as a request inside its `execute_plan` call."""
    session = ctx.session
    related = ServerMessageMetadata(related_request_id=ctx.request_id)

    async def ask(question: DownstreamQuestion) -> dict[str, Any]:
        if question.method != "elicitation/create":
            raise CannotAsk(
                f"{question.text()}, which taskorch passes on to a host only through its MCP "
                f"task: run the plan from a host that declares {_TASKS}"
            )
        request = question.for_host()
        try:
            params = ElicitRequestFormParams.model_validate(request["params"])
        except ValidationError:
            raise CannotAsk(f"{question.text()}, which is not a form question") from None
        try:
            answer = await session.send_request(
                ElicitRequest(params=params), ElicitResult, metadata=related
            )
        except MCPError as exc:
            raise CannotAsk(
                f"{question.text()}, and the host answered with an error: {exc}"
            ) from None
        except ValidationError:
            raise CannotAsk(f"{question.text()}, and the host's answer is not valid") from None
        wire: dict[str, Any] = answer.model_dump(by_alias=True, mode="json", exclude_none=True)
        return wire

    return ask


def _asker(ctx: Context[Any, Any]) -> HostAsker:
    """How to ask the host behind `ctx`: by a mid-call request, or not (saying why)."""
    if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
        return _refusing(
            f"the host waits for the run on a {ctx.protocol_version} session, where taskorch "
            f"cannot put a question to it during the call: declare the MCP tasks extension "
            f"({_TASKS}) on execute_plan, or use a host that supports it, to be asked"
        )
    if not can_elicit(ctx):
        return _refusing(
            "the host waiting for the run does not declare the elicitation capability (form "
            f"mode): use a host that does, or one that declares MCP tasks ({_TASKS})"
        )
    return _eliciting(ctx)


@contextmanager
def asking_the_waiting_host(ctx: Context[Any, Any], askers: Askers, plan_id: str) -> Iterator[None]:
    """While the block runs, `plan_id`'s questions go to the host of `ctx`.

    A host following the run as an MCP task keeps them (it can answer at any time).
    """
    asker = _asker(ctx)
    claimed = askers.claim(plan_id, asker)
    try:
        yield
    finally:
        if claimed:
            askers.clear(plan_id, asker)
