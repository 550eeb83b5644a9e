"""Why a planning model could not be used.

```
TaskorchError
└── PlannerError            the planning model failed (carries a PlannerFailure)
```

A plan the model *did* produce but that never validated is not a `PlannerError`:
it is the executor's `PlanValidationError`, carrying the problems, so the face
reports both kinds of bad plan the same way.
"""

from __future__ import annotations

from enum import StrEnum

from executor.errors import TaskorchError

__all__ = ["PlannerError", "PlannerFailure"]


class PlannerFailure(StrEnum):
    """What went wrong with the planning model."""

    NOT_CONFIGURED = "not_configured"
    """No model is configured, or its key variable is not set."""
    AUTHENTICATION = "authentication"
    """The provider refused the credentials (HTTP 401/403)."""
    NOT_FOUND = "not_found"
    """The provider does not know the model (HTTP 404)."""
    RATE_LIMITED = "rate_limited"
    """The provider asked us to slow down (HTTP 429)."""
    TIMEOUT = "timeout"
    """The model did not answer in time."""
    UNAVAILABLE = "unavailable"
    """The endpoint could not be reached, or it failed (HTTP 5xx)."""
    BAD_REQUEST = "bad_request"
    """The provider rejected the request (HTTP 400/422) in every output mode."""
    BAD_RESPONSE = "bad_response"
    """The provider answered with nothing usable (no text, no tool call)."""
    REFUSED = "refused"
    """The host declined or failed the sampling request."""


class PlannerError(TaskorchError):
    """The planning model could not be used; the message says what to check.

    Attributes:
        failure: The classified reason.
        model: The model string (or `host` for the host's own model).
    """

    def __init__(self, failure: PlannerFailure, message: str, *, model: str = "") -> None:
        self.failure = failure
        self.model = model
        self.message = message
        prefix = f"planning model {model!r}: " if model else "planning model: "
        super().__init__(prefix + message)
