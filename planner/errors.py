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
    TRUNCATED = "truncated"
    """The last answer was cut at the token limit (`max_tokens`) before it ended."""
    REFUSED = "refused"
    """The host declined or failed the sampling request."""


class PlannerError(TaskorchError):
    """The planning model could not be used; the message says what to check.

    Attributes:
        failure: The classified reason.
        model: The model string (or `host` for the host's own model).
        setting: The planner setting that would fix it (`timeout_s`, `max_tokens`,
            `api_base`, `api_key_env`, `response_mode`, `model`), if one would; the
            face says where that setting is written in its config.
    """

    def __init__(
        self, failure: PlannerFailure, message: str, *, model: str = "", setting: str | None = None
    ) -> None:
        self.failure = failure
        self.model = model
        self.message = message
        self.setting = setting
        prefix = f"planning model {model!r}: " if model else "planning model: "
        super().__init__(prefix + message)
