"""`ModelBackend`: one model call in, one raw answer out.

A backend knows how to reach a model and ask it for a schema-shaped answer; it
knows nothing of plans, validation or repair (`planner.repair` does that, the
same way for every backend).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from planner.models import ModelReply, ModelRequest

__all__ = ["ModelBackend"]


class ModelBackend(ABC):
    """Something that answers one `ModelRequest`."""

    @property
    @abstractmethod
    def model(self) -> str:
        """The model string, for records and messages."""

    @abstractmethod
    async def complete(self, request: ModelRequest) -> ModelReply:
        """Ask the model once.

        Raises:
            PlannerError: The model could not be reached or refused the request.
        """
