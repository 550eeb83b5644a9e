"""Reading a step's output after the run: whole, one value in it, a page, a content block.

The result is stored once, whole; these read it back. Pages are cut between
UTF-8 characters and rebuild the output byte for byte. The last result read
is kept: a host paging through an output asks for it again and again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from executor import (
    NotFoundError,
    Plan,
    StepReferenceError,
    StepState,
    StepStatus,
    ToolResult,
    UserError,
)
from executor.outputs import output_text, page_text, value_text
from executor.refs import StepValue, read_path
from server.views import StepOutputPage

if TYPE_CHECKING:
    from executor import Store

__all__ = ["StepOutputs"]


class StepOutputs:
    """The outputs of steps that succeeded, read from the store."""

    def __init__(self, store: Store, budget_bytes: int) -> None:
        """Read from `store`; a page fits an answer of `budget_bytes`."""
        self.store = store
        self.budget_bytes = budget_bytes
        self._last: tuple[tuple[str, int, str], ToolResult] | None = None

    async def result(
        self, plan_id: str, step_id: str, version: int | None = None
    ) -> tuple[Plan, ToolResult]:
        """The whole result of a step that succeeded (latest plan version by default).

        Raises:
            NotFoundError: No such plan, version or step.
            UserError: The step has not succeeded, so it has no output.
        """
        plan = await self.store.get_plan(plan_id, version)
        states = await self.store.get_step_states(plan.id, plan.version)
        state = _succeeded(plan, states, step_id)
        key = (plan.id, plan.version, step_id)
        if self._last is not None and self._last[0] == key:
            return plan, self._last[1]
        result = await self.store.get_step_result(*key)
        if result is None:
            # No result kept (a state written without one): the output is all there is.
            output = state.output
            if isinstance(output, dict):
                result = ToolResult(structured_content=output)
            else:
                result = ToolResult(content=[{"type": "text", "text": value_text(output)}])
        self._last = (key, result)
        return plan, result

    async def text(
        self, plan_id: str, step_id: str, path: str = "", version: int | None = None
    ) -> tuple[Plan, str, bool]:
        """A step's output (or the value at `path` in it) as text, and whether it is JSON.

        Raises:
            NotFoundError: No such plan, version or step.
            UserError: The step has no output, or `path` does not exist in it.
        """
        plan, result = await self.result(plan_id, step_id, version)
        if not path:
            structured = result.structured_content is not None
            return plan, output_text(result), structured or not isinstance(result.output(), str)
        segments = path.split(".")
        if not all(segments):
            raise UserError(
                f"path {path!r} has an empty segment: write keys and array indexes "
                "joined by dots, such as items.0.name"
            )
        try:
            value = read_path(StepValue(result.output(), result.content), segments, root=step_id)
        except StepReferenceError as exc:
            raise UserError(str(exc)) from None
        return plan, value_text(value), not isinstance(value, str)

    async def page(
        self,
        plan_id: str,
        step_id: str,
        *,
        offset: int = 0,
        limit: int | None = None,
        path: str = "",
        version: int | None = None,
    ) -> StepOutputPage:
        """One page of a step's output, or of the value at a reference path in it.

        Pages are cut between UTF-8 characters; start at 0 and pass each page's
        `next_offset` to get the next; together they are the output byte for byte.

        Raises:
            NotFoundError: No such plan, version or step.
            UserError: No output, a bad path, or an offset outside the text.
        """
        plan, text, is_json = await self.text(plan_id, step_id, path, version)
        # A page is answered twice over (structured and as text), with room for the rest.
        room = max(self.budget_bytes // 2 - 1024, 1)
        page = page_text(text, offset, room if limit is None else min(limit, room))
        return StepOutputPage(
            plan_id=plan.id,
            version=plan.version,
            step_id=step_id,
            path=path,
            kind="json" if is_json else "text",
            total_bytes=page.total_bytes,
            offset=page.offset,
            next_offset=page.next_offset,
            data=page.data,
        )

    async def content(
        self, plan_id: str, step_id: str, index: int, version: int | None = None
    ) -> dict[str, Any]:
        """One content block a step's tool returned, as its JSON object.

        Raises:
            NotFoundError: No such plan, version, step or block.
            UserError: The step has not succeeded.
        """
        _, result = await self.result(plan_id, step_id, version)
        if not 0 <= index < len(result.content):
            raise NotFoundError(
                f"step {step_id!r} returned {len(result.content)} content block(s): "
                f"index {index} is not one of them"
            )
        block: dict[str, Any] = result.content[index]
        return block


def _succeeded(plan: Plan, states: dict[str, StepState], step_id: str) -> StepState:
    if step_id not in {s.id for s in plan.steps}:
        known = ", ".join(repr(s.id) for s in plan.steps[:50])
        raise NotFoundError(
            f"plan {plan.id!r} version {plan.version} has no step {step_id!r}; its steps: {known}"
        )
    state = states.get(step_id)
    if state is None or state.status is not StepStatus.SUCCEEDED:
        status = state.status.value if state is not None else "pending"
        raise UserError(
            f"step {step_id!r} of plan {plan.id!r} is {status}: only a step that "
            "succeeded has an output; execute_plan runs it, get_plan shows where it stands"
        )
    return state
