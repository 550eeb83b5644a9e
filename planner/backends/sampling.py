"""`SamplingBackend`: the MCP host's own model, through a `Sampler`.

A `Sampler` sends `sampling/createMessage`. From a tool handler of the SDK's
`MCPServer` use `planner.host.HostPlanning` instead, which asks through the
SDK's `Resolve`/`Sample` form and so works on both protocol eras.
"""

from __future__ import annotations

from typing import Protocol

import anyio
from mcp.shared.exceptions import MCPError
from mcp.types import (
    CreateMessageRequestParams,
    CreateMessageResult,
    SamplingMessage,
    TextContent,
)

from planner.backends.base import ModelBackend
from planner.errors import PlannerError, PlannerFailure
from planner.models import ModelReply, ModelRequest, ResponseMode
from planner.prompt import schema_instruction

__all__ = ["Sampler", "SamplingBackend", "reply_from_sampling", "sampling_params"]


class Sampler(Protocol):
    """Sends one `sampling/createMessage` request to the host and returns its answer."""

    async def __call__(self, params: CreateMessageRequestParams) -> CreateMessageResult:
        """Sample the host's model.

        Raises:
            MCPError: The host refused or failed the request.
        """


def sampling_params(request: ModelRequest) -> CreateMessageRequestParams:
    """Render a model request as MCP sampling parameters.

    Sampling cannot constrain decoding, so the schema goes into the system prompt.
    The rendering is deterministic: the same request gives the same parameters.
    """
    schema = request.prompt_schema or request.answer_schema
    system = f"{request.system}\n\n{schema_instruction(schema)}".strip()
    messages = [
        SamplingMessage(role=m.role, content=TextContent(type="text", text=m.content))
        for m in request.messages
        if m.role != "system"
    ]
    return CreateMessageRequestParams(
        messages=messages,
        system_prompt=system,
        max_tokens=request.max_tokens,
        include_context="none",
    )


def reply_from_sampling(result: CreateMessageResult, *, model: str = "host") -> ModelReply:
    """Turn the host's sampling result into a `ModelReply`.

    Raises:
        PlannerError: The host answered with something other than text.
    """
    content = result.content
    if not isinstance(content, TextContent):
        raise PlannerError(
            PlannerFailure.BAD_RESPONSE,
            f"the host answered with {content.type} content, not text",
            model=model,
        )
    return ModelReply(
        text=content.text,
        model=result.model or model,
        truncated=result.stop_reason == "maxTokens",
        mode=ResponseMode.NONE,
    )


class SamplingBackend(ModelBackend):
    """The host's own model, through MCP sampling."""

    def __init__(self, sampler: Sampler, *, timeout_s: float = 300.0) -> None:
        """Use `sampler` to reach the host.

        Args:
            sampler: Sends `sampling/createMessage` and returns the result.
            timeout_s: Seconds the host may take (a person may be approving it).
        """
        self._sampler = sampler
        self.timeout_s = timeout_s

    @property
    def model(self) -> str:
        """`host`: the host picks the model."""
        return "host"

    async def complete(self, request: ModelRequest) -> ModelReply:
        """Ask the host's model once."""
        params = sampling_params(request)
        try:
            with anyio.fail_after(self.timeout_s):
                result = await self._sampler(params)
        except TimeoutError:
            raise PlannerError(
                PlannerFailure.TIMEOUT,
                f"the host did not answer the sampling request within {self.timeout_s:g} s",
                model="host",
            ) from None
        except MCPError as exc:
            raise PlannerError(
                PlannerFailure.REFUSED,
                f"the host refused the sampling request: {exc}. Configure a model for the "
                "agent, or pass steps",
                model="host",
            ) from exc
        return reply_from_sampling(result)
