"""The one boundary where taskorch's errors become MCP errors a caller can act on.

A `UserError` becomes a tool error saying what to fix; a failed downstream
call, an unusable database or a planner that could not plan, a tool error
saying what broke; anything else is a bug, logged, and still answered
clearly. Resources answer `ResourceNotFoundError` or `ResourceError`.
Errors that arrive inside exception groups (from task groups) are unwrapped.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError

from executor import NotFoundError, StoreError, TaskorchError, ToolCallError, UserError
from executor._utils import leaf_exceptions
from planner.errors import PlannerError

__all__ = ["resource_boundary", "tool_boundary", "tool_error"]

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def tool_boundary() -> Iterator[None]:
    """Turn taskorch's errors raised inside into tool errors (each one told, not "error")."""
    try:
        yield
    except TaskorchError as exc:
        raise tool_error(exc) from exc
    except BaseExceptionGroup as group:
        leaves = leaf_exceptions(group)
        ours = [e for e in leaves if isinstance(e, TaskorchError)]
        if not ours or len(ours) != len(leaves):
            raise
        messages = dict.fromkeys(str(tool_error(e)) for e in ours)
        raise ToolError("; ".join(messages)) from group


@contextlib.contextmanager
def resource_boundary() -> Iterator[None]:
    """Turn taskorch's errors raised inside into resource errors."""
    try:
        yield
    except NotFoundError as exc:
        raise ResourceNotFoundError(str(exc)) from exc
    except TaskorchError as exc:
        raise ResourceError(str(exc)) from exc


def tool_error(exc: TaskorchError) -> ToolError:
    """The tool error a caller is answered for one of taskorch's errors."""
    if isinstance(exc, UserError):
        return ToolError(str(exc))
    if isinstance(exc, ToolCallError):
        return ToolError(f"a downstream call failed ({exc.kind.value}): {exc}")
    if isinstance(exc, StoreError):
        return ToolError(f"the taskorch database cannot be used: {exc}")
    if isinstance(exc, PlannerError):
        # Not a bug: the model timed out, could not be reached or was cut off, and the
        # message names the setting to change.
        return ToolError(f"planning failed ({exc.failure.value}): {exc}")
    # InternalError and the like: a bug, but the caller still gets a clear answer.
    logger.error("internal error", exc_info=exc)
    return ToolError(f"internal error in taskorch: {exc}")
