"""The exception tree and the error kinds every failure is sorted into.

```
TaskorchError
├── UserError                      misuse: the caller can fix it
│   ├── PlanValidationError        a plan failed static validation (carries problems)
│   ├── StepReferenceError         a `${...}` reference is malformed or cannot resolve
│   ├── ConfigError                a config file or value is wrong
│   ├── NotFoundError              no plan / agent / server by that name
│   └── ApprovalError              approval missing, stale (hash changed) or refused
├── StoreError                     the database cannot be used
│   ├── SchemaTooNewError          written by a newer taskorch
│   └── CorruptDatabaseError       not a database, or damaged
├── ToolCallError                  a downstream call failed (carries an ErrorKind and a Delivery)
├── LoginError                     an OAuth login to a downstream server did not complete
├── CannotAsk                      a downstream tool's question has nobody to answer it
└── InternalError                  a bug in taskorch
    └── TransitionError            an illegal status change was attempted
```

`UserError` is kept apart from runtime failures so that the MCP face can turn
the first into a tool error that tells the caller what to fix, and the rest
into a tool error that says what broke.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "ApprovalError",
    "CannotAsk",
    "ConfigError",
    "CorruptDatabaseError",
    "Delivery",
    "ErrorKind",
    "InternalError",
    "LoginError",
    "NotFoundError",
    "PlanValidationError",
    "SchemaTooNewError",
    "StepReferenceError",
    "StoreError",
    "TaskorchError",
    "ToolCallError",
    "TransitionError",
    "UserError",
]


class ErrorKind(StrEnum):
    """Why a step or a downstream call failed; retry policies select on it."""

    NETWORK = "network"
    """The connection was refused, reset or dropped."""
    AUTHENTICATION = "authentication"
    """The server refused our credentials (HTTP 401)."""
    AUTHORIZATION = "authorization"
    """The server knows us but refused the action (HTTP 403)."""
    INVALID_ARGUMENTS = "invalid_arguments"
    """The arguments were rejected (JSON-RPC invalid params, a bad reference)."""
    TOOL_UNAVAILABLE = "tool_unavailable"
    """The tool is unknown or its server is down."""
    TOOL_ERROR = "tool_error"
    """The tool ran and answered with `isError`."""
    TIMEOUT = "timeout"
    """The call or the plan ran past its deadline."""
    CANCELLED = "cancelled"
    """We cancelled the call."""
    INTERRUPTED = "interrupted"
    """The process died while the call was in flight."""
    INTERNAL = "internal"
    """A bug in taskorch."""


class Delivery(StrEnum):
    """Whether a failed call may have reached the tool: what makes repeating it safe or not."""

    NOT_DELIVERED = "not_delivered"
    """The request certainly never reached the tool (no connection, refused, 401/403)."""
    AMBIGUOUS = "ambiguous"
    """It may have run: sent, then no answer (timeout, connection or server lost mid-call)."""
    ANSWERED = "answered"
    """The server answered with an error: a protocol or argument error, or the tool's own."""


class TaskorchError(Exception):
    """Root of every error taskorch raises on purpose."""


class UserError(TaskorchError):
    """Misuse that the caller can fix; the message says how."""


class PlanValidationError(UserError):
    """A plan failed static validation.

    Attributes:
        problems: Every problem found, each naming its step and what to fix.
    """

    def __init__(self, problems: list[object]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"- {p}" for p in self.problems)
        super().__init__(f"the plan is not valid ({len(self.problems)} problem(s)):\n{lines}")


class StepReferenceError(UserError):
    """A `${...}` reference is malformed or does not resolve against the outputs."""


class ConfigError(UserError):
    """A config file or value is wrong; the message names the file and key path."""


class NotFoundError(UserError):
    """No plan, agent or server by the given name or id."""


class ApprovalError(UserError):
    """The plan is not approved for what it would run now."""


class StoreError(TaskorchError):
    """The database cannot be used."""


class SchemaTooNewError(StoreError):
    """The database was written by a newer taskorch than this one."""


class CorruptDatabaseError(StoreError):
    """The file is not a taskorch database or is damaged; it is never replaced."""


class LoginError(TaskorchError):
    """An OAuth login to a downstream server did not complete (`taskorch auth login`)."""


class CannotAsk(TaskorchError):
    """A downstream tool asked its client something, and nobody can answer; the message says why."""


class ToolCallError(TaskorchError):
    """A downstream tool call failed.

    Attributes:
        kind: The classified reason.
        server: The downstream server's configured name.
        tool: The tool's name on that server.
        delivery: Whether the request may have reached the tool; `AMBIGUOUS`
            unless whoever raised it knows better.
    """

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        server: str = "",
        tool: str = "",
        delivery: Delivery = Delivery.AMBIGUOUS,
    ) -> None:
        self.kind = kind
        self.delivery = delivery
        self.server = server
        self.tool = tool
        self.message = message
        where = f"{server}.{tool}: " if server and tool else (f"{server}: " if server else "")
        super().__init__(f"{where}{message}")


class InternalError(TaskorchError):
    """A bug in taskorch; never expected in normal operation."""


class TransitionError(InternalError):
    """An illegal status transition was attempted."""
