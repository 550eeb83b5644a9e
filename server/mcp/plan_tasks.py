"""Planning as an MCP task: `create_plan` answers a tasks host with a handle while a model plans.

When the host declares the tasks extension and a model writes the plan (the
config's, through litellm, or the host's own, through sampling), `create_plan`
answers with a task. Once `completed`, its result is exactly what `create_plan`
answers inline: the stored plan, or the tool error saying why there is none
(SEP-2663: a tool error is a `completed` task; `failed` is for protocol errors).

Approval is not part of the task. A plan's approval binds to the hash the user
saw, so the task ends when the plan is stored: `awaiting_confirmation` with its
`plan_hash` (or `confirmed`, when the agent auto-approves), as inline; the user
approves it with `confirm_plan` or in `execute_plan`'s own round, whose run is
a task of its own. Caller-written steps need no model and are answered inline.
The host's model is asked in the input-required rounds before the task exists
(SEP-2663 resolves such rounds before creating a task); the task then checks
and stores its answer.

Planning is not durable: the task runs in this process, `tasks/cancel` stops it
(nothing is stored), and a restart loses it. Its id is signed for its caller
with a key the store keeps, so after a restart an id this database issued reads
as `failed`, saying so and what to do; any other id is unknown.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import anyio.abc
from mcp_types.jsonrpc import INTERNAL_ERROR

from executor.tasks_wire import TaskStatus
from server.mcp.tasks_ext import TaskState
from server.mcp.tasks_memory import MemoryTasks
from server.service import TaskOrchestrator

__all__ = ["PLANNING_POLL_INTERVAL_MS", "PLANNING_TTL_MS", "PlanningTasks"]

PLANNING_TTL_MS: Final = 3_600_000
"""How long a planning task reads after it was created (an hour)."""
PLANNING_POLL_INTERVAL_MS: Final = 500
"""How often hosts are asked to poll a planning task."""

_SEPARATOR: Final = "."
_HEX: Final = re.compile(r"[0-9a-f]{1,16}")
"""Parts of a planning task's id; never in a run task's id (URL-safe base64)."""
_ID_DOMAIN: Final = b"taskorch planning task ids"
_MAC_BYTES: Final = 16


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class PlanningTasks(MemoryTasks):
    """Planning tasks, on the orchestrator's task group (see the module docstring).

    Args:
        orchestrator: The orchestrator that plans, and whose store keeps the key.
    """

    def __init__(self, orchestrator: TaskOrchestrator) -> None:
        """Hold no task yet."""
        super().__init__(ttl_ms=PLANNING_TTL_MS, poll_interval_ms=PLANNING_POLL_INTERVAL_MS)
        self._orch = orchestrator

    @staticmethod
    def owns(task_id: str) -> bool:
        """Whether `task_id` has the shape of a planning task's id (run tasks' ids do not)."""
        return task_id.count(_SEPARATOR) == 2

    def _runner(self) -> anyio.abc.TaskGroup:
        # Planning lives as long as the orchestrator that plans, not as one request.
        return self._orch.background

    def _seal(self, owner: str, token: str, created_ms: int) -> str:
        # Derived from the store's key (read per use: it is the store's once opened).
        key = hmac.new(self._orch.request_state_key, _ID_DOMAIN, hashlib.sha256).digest()
        signed = f"{owner}\n{token}\n{created_ms}".encode()
        return _b64(hmac.new(key, signed, hashlib.sha256).digest()[:_MAC_BYTES])

    def _new_id(self, owner: str, created_at: datetime) -> str:
        token = secrets.token_urlsafe(18)
        created_ms = int(created_at.timestamp() * 1000)
        return _SEPARATOR.join((token, f"{created_ms:x}", self._seal(owner, token, created_ms)))

    def _issued_at(self, task_id: str, owner: str) -> datetime | None:
        """When this database issued `task_id` to `owner`; `None` for an id it did not."""
        if not self.owns(task_id):
            return None
        token, created_hex, mac = task_id.split(_SEPARATOR)
        if _HEX.fullmatch(created_hex) is None:
            return None  # the time as `_new_id` writes it, not another spelling int() takes
        try:
            created_ms = int(created_hex, 16)
            created_at = datetime.fromtimestamp(created_ms / 1000, UTC)
        except (ValueError, OverflowError, OSError):
            return None
        if not hmac.compare_digest(mac, self._seal(owner, token, created_ms)):
            return None
        return created_at

    def _lost(self, task_id: str, owner: str) -> TaskState | None:
        """A task issued before a restart of taskorch: it read `failed` since, until its TTL."""
        created_at = self._issued_at(task_id, owner)
        if created_at is None:
            return None
        if created_at + timedelta(milliseconds=self.ttl_ms) < datetime.now(UTC):
            return None  # expired, as it would have if taskorch had not restarted
        message = (
            "this taskorch does not hold this planning task: it restarted while the task was "
            "planning or before its result was read, or another replica on the same database "
            "plans it (planning is kept neither across restarts nor between replicas). "
            "list_plans shows whether the plan was stored; else call create_plan again"
        )
        return TaskState(
            task_id=task_id,
            status=TaskStatus.FAILED,
            created_at=created_at,
            updated_at=created_at,
            ttl_ms=self.ttl_ms,
            poll_interval_ms=self.poll_interval_ms,
            status_message=message,
            error={"code": INTERNAL_ERROR, "message": message},
        )

    async def get(self, task_id: str, owner: str) -> TaskState | None:
        """The task; one from before a restart reads `failed`, saying so."""
        state = await super().get(task_id, owner)
        return state if state is not None else self._lost(task_id, owner)

    async def cancel(self, task_id: str, owner: str) -> TaskState | None:
        """Stop the planning (nothing is stored); it reads `cancelled` from now on."""
        state = await super().cancel(task_id, owner)
        return state if state is not None else self._lost(task_id, owner)

    async def update(
        self, task_id: str, owner: str, responses: Mapping[str, Any]
    ) -> TaskState | None:
        """A planning task asks nothing: answers are ignored."""
        state = await super().update(task_id, owner, responses)
        return state if state is not None else self._lost(task_id, owner)
