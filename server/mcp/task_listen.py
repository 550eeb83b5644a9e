"""`notifications/tasks`: a tasks host listening for its tasks hears each change of status.

SEP-2663 (2026-07-28): a client opens a `subscriptions/listen` stream naming
`notifications.taskIds`; the server acknowledges the ids it agreed to, then
may push `notifications/tasks`, each a whole `DetailedTask` (what `tasks/get`
would answer at that moment). The SDK's listen handler knows only its own
event kinds, so `TaskListen`, a middleware, serves a listen that names task
ids (the SDK's events too, from the same bus); any other goes to the SDK.

A task's state is read from its backend (the store, for a run) every
`WATCH_INTERVAL_S`, which also sees runs another process drives. The first
notification goes out at once (a late listener learns where the task stands),
then one per change of status or of pending questions; a task is let go once
it is finished, and the stream ends when none is left and nothing else was
asked for. Only the caller's own tasks are honored: another's ids are left out
of the acknowledgement, as unknown ones are.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any, Final, Literal, cast

import anyio
from anyio.streams.memory import MemoryObjectSendStream
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.subscriptions import SubscriptionBus
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import (
    SUBSCRIPTION_ID_META_KEY,
    ServerEvent,
    event_matches,
    event_to_notification,
)
from mcp_types import (
    ServerNotification,
    SubscriptionFilter,
    SubscriptionsAcknowledgedNotification,
    SubscriptionsAcknowledgedNotificationParams,
    SubscriptionsListenRequestParams,
    SubscriptionsListenResult,
)
from mcp_types.jsonrpc import INVALID_PARAMS, INVALID_REQUEST
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, ValidationError

from executor.tasks_wire import TERMINAL_TASK_STATUSES
from server.mcp.tasks_ext import (
    TaskBackend,
    TaskState,
    caller_of,
    declares_tasks,
    missing_capability,
)

__all__ = [
    "MAX_LISTENS_PER_CALLER",
    "MAX_TASK_IDS",
    "TASK_NOTIFICATION",
    "WATCH_INTERVAL_S",
    "TaskListen",
]

TASK_NOTIFICATION: Final = "notifications/tasks"
"""The method of a task status notification (SEP-2663, 2026-07-28)."""
WATCH_INTERVAL_S: Final = 0.25
"""How often a listened task's state is read."""
MAX_TASK_IDS: Final = 100
"""The most task ids one listen may name."""
MAX_LISTENS_PER_CALLER: Final = 8
"""The most task listens one caller may hold open at once (each reads its tasks' states)."""
_MAX_BUFFERED: Final = 1024


def _task_ids(params: Mapping[str, Any] | None) -> list[str] | None:
    """The task ids a listen request names, or `None` when it names none."""
    notifications = params.get("notifications") if params is not None else None
    if not isinstance(notifications, Mapping) or "taskIds" not in notifications:
        return None
    ids = notifications["taskIds"]
    if (
        not isinstance(ids, list)
        or len(ids) > MAX_TASK_IDS
        or not all(isinstance(i, str) for i in ids)
    ):
        raise MCPError(
            code=INVALID_PARAMS,
            message=f"notifications.taskIds must be a list of at most {MAX_TASK_IDS} task ids "
            "(strings, as tools/call answered them)",
        )
    return list(dict.fromkeys(ids))


def _honored(requested: SubscriptionFilter, task_ids: list[str]) -> SubscriptionFilter:
    """What this stream delivers: the SDK's kinds asked for, and the caller's task ids."""
    return SubscriptionFilter.model_validate(
        {
            "toolsListChanged": True if requested.tools_list_changed else None,
            "promptsListChanged": True if requested.prompts_list_changed else None,
            "resourcesListChanged": True if requested.resources_list_changed else None,
            "resourceSubscriptions": list(requested.resource_subscriptions or ()) or None,
            "taskIds": task_ids,
        }
    )


def _signature(state: TaskState) -> tuple[object, ...]:
    """What a notification is sent for a change of: the status, the questions pending."""
    return state.status, tuple(sorted(state.input_requests or ()))


class _TaskNotification(BaseModel):
    """`notifications/tasks` (the SDK's own notification types are a closed union)."""

    method: Literal["notifications/tasks"] = TASK_NOTIFICATION
    params: dict[str, Any]


class TaskListen:
    """Serves `subscriptions/listen` streams that name task ids (a server middleware).

    Args:
        tasks: The backend whose tasks are listened to.
        bus: The server's subscription bus, for the SDK's own events on the same stream.
        interval_s: How often each listened task's state is read.
    """

    def __init__(
        self, tasks: TaskBackend, bus: SubscriptionBus, *, interval_s: float = WATCH_INTERVAL_S
    ) -> None:
        """Listen to `tasks`' tasks and `bus`'s events."""
        self._tasks = tasks
        self._bus = bus
        self._interval_s = interval_s
        self._open: Counter[str] = Counter()  # listens open, by caller

    async def __call__(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        """Serve a listen that names task ids; pass anything else on."""
        if (
            ctx.method != "subscriptions/listen"
            or ctx.request_id is None
            or ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS
        ):
            return await call_next(ctx)
        ids = _task_ids(ctx.params)
        if ids is None:
            return await call_next(ctx)
        if not declares_tasks(ctx):
            raise missing_capability("task status notifications")
        try:
            params = SubscriptionsListenRequestParams.model_validate(ctx.params or {})
        except ValidationError as exc:
            raise MCPError(code=INVALID_PARAMS, message=f"invalid listen params: {exc}") from exc
        owner = caller_of(ctx)
        if self._open[owner] >= MAX_LISTENS_PER_CALLER:
            raise MCPError(
                code=INVALID_REQUEST,
                message=f"{self._open[owner]} listens for tasks are open already (at most "
                f"{MAX_LISTENS_PER_CALLER} at once): close one, or name several tasks in one",
            )
        self._open[owner] += 1
        try:
            states = {i: s for i in ids if (s := await self._tasks.get(i, owner)) is not None}
            return await self._serve(ctx, params.notifications, owner, states)
        finally:
            self._open[owner] -= 1
            if not self._open[owner]:
                del self._open[owner]

    async def _serve(
        self,
        ctx: ServerRequestContext[Any, Any],
        requested: SubscriptionFilter,
        owner: str,
        states: dict[str, TaskState],
    ) -> SubscriptionsListenResult:
        subscription_id = ctx.request_id
        assert subscription_id is not None
        meta: dict[str, Any] = {SUBSCRIPTION_ID_META_KEY: subscription_id}
        honored = _honored(requested, list(states))
        uris = frozenset(honored.resource_subscriptions or ())
        kinds = (honored.tools_list_changed, honored.prompts_list_changed)
        others = any((*kinds, honored.resources_list_changed, uris))
        send, receive = anyio.create_memory_object_stream[ServerEvent | TaskState](_MAX_BUFFERED)

        def deliver(event: ServerEvent) -> None:
            if event_matches(honored, uris, event):
                try:
                    send.send_nowait(event)
                except (anyio.WouldBlock, anyio.ClosedResourceError):
                    send.close()  # a client that stopped reading: its stream ends

        unsubscribe = self._bus.subscribe(deliver) if others else None
        try:
            ack = SubscriptionsAcknowledgedNotificationParams(notifications=honored, _meta=meta)
            await ctx.session.send_notification(
                SubscriptionsAcknowledgedNotification(params=ack),
                related_request_id=subscription_id,
            )
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._watch, states, owner, send, not others)
                async with receive:
                    async for item in receive:
                        await ctx.session.send_notification(
                            _notification(item, meta), related_request_id=subscription_id
                        )
                tg.cancel_scope.cancel()
        finally:
            if unsubscribe is not None:
                unsubscribe()
            send.close()
        return SubscriptionsListenResult(_meta=meta)

    async def _watch(
        self,
        states: dict[str, TaskState],
        owner: str,
        send: MemoryObjectSendStream[ServerEvent | TaskState],
        close_when_done: bool,
    ) -> None:
        """Send each task's state now, then at each change, until every task is finished."""
        seen: dict[str, tuple[object, ...]] = {}
        pending = dict(states)
        while True:
            for task_id, state in list(pending.items()):
                if _signature(state) != seen.get(task_id):
                    seen[task_id] = _signature(state)
                    try:
                        await send.send(state)
                    except anyio.ClosedResourceError:
                        return  # the stream ended (a client that stopped reading)
                if state.status in TERMINAL_TASK_STATUSES:
                    del pending[task_id]
            if not pending:
                break
            await anyio.sleep(self._interval_s)
            for task_id in list(pending):
                now = await self._tasks.get(task_id, owner)
                if now is None:  # expired meanwhile: nothing more to say of it
                    del pending[task_id]
                else:
                    pending[task_id] = now
        if close_when_done:
            send.close()


def _notification(item: ServerEvent | TaskState, meta: dict[str, Any]) -> ServerNotification:
    """The stamped wire notification for an SDK event or a task's state."""
    if not isinstance(item, TaskState):
        return event_to_notification(item, meta)
    task = item.detailed().model_dump(by_alias=True, mode="json", exclude_none=True)
    task.pop("resultType", None)  # a notification's params, not a result
    # The session sends any model's method and params; its type names only the SDK's own.
    return cast("ServerNotification", _TaskNotification(params={**task, "_meta": meta}))
