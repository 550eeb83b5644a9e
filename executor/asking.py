"""Questions from downstream tools (elicitation), on their way to the host.

A downstream tool may ask its client a question (`elicitation/create`: a
mid-call request before 2026-07-28, an input-required round after). taskorch is
that client; it is not the user. The question goes on to whoever runs the plan,
through the `HostAsker` registered for the plan (`Askers`), with the server, the
tool and the step named in it. When nobody can be asked (no host attached, or
one that cannot answer), the question is refused with a sentence saying why,
and the step fails with it. The host sees one question of a step at a time,
with a few more waiting their turn at most (a downstream server cannot flood
it), and an accepted answer must fit the schema the question asked for, as the
SDK checks it for a tool's own question. Sampling requests are refused outright
unless the configuration allows them (see `executor.downstream.Pool`).
"""

from __future__ import annotations

from typing import Any, Protocol

import anyio
from pydantic import BaseModel, ConfigDict

from executor.errors import CannotAsk

__all__ = ["ASKER_META_KEY", "QUESTIONS_WAITING_MAX", "Askers", "DownstreamQuestion", "HostAsker"]


ASKER_META_KEY = "io.github.taskorch/asker"
"""`_meta` key naming who asks, on a question passed on to the host."""
QUESTIONS_WAITING_MAX = 4
"""Questions of one step that may wait for the one the host sees (more are refused)."""


class DownstreamQuestion(BaseModel):
    """A downstream tool's request to its client, with where it comes from."""

    model_config = ConfigDict(frozen=True)

    plan_id: str
    """The plan whose step made the call."""
    step_id: str
    """The step."""
    server: str
    """The downstream server that asks."""
    tool: str
    """Its tool."""
    method: str
    """`elicitation/create` (a question) or `sampling/createMessage` (a model call)."""
    params: dict[str, Any]
    """The request's params, as the server sent them (wire JSON)."""

    def who(self) -> str:
        """Who asks: the server, its tool and the step."""
        return f"{self.server}.{self.tool} (step {self.step_id!r} of plan {self.plan_id})"

    def text(self) -> str:
        """The question as the host shows it: who asks, and what."""
        message = self.params.get("message")
        if self.method == "elicitation/create" and isinstance(message, str):
            return f"{self.who()} asks: {message}"
        return f"{self.who()} asks for a model completion (sampling)"

    def for_host(self) -> dict[str, Any]:
        """The request to put to the host: the server's, saying who asks."""
        params = dict(self.params)
        if self.method == "elicitation/create":
            params["message"] = self.text()
        meta = dict(params.get("_meta") or {})
        meta[ASKER_META_KEY] = self.who()
        params["_meta"] = meta
        return {"method": self.method, "params": params}


class HostAsker(Protocol):
    """Puts a question to the host; returns its `ElicitResult` as wire JSON."""

    async def __call__(self, question: DownstreamQuestion) -> dict[str, Any]:
        """Ask and wait for the answer.

        Raises:
            CannotAsk: The host cannot be asked after all.
        """


class Askers:
    """Who to ask, by plan: set while a host follows the plan's run."""

    def __init__(self) -> None:
        """Nobody to ask yet."""
        self._by_plan: dict[str, HostAsker] = {}
        # Per step with questions out: the turn to ask, and how many want it.
        self._turns: dict[tuple[str, str], tuple[anyio.Lock, list[int]]] = {}

    def set(self, plan_id: str, asker: HostAsker) -> None:
        """Send the questions of `plan_id`'s steps to `asker` (replacing any other)."""
        self._by_plan[plan_id] = asker

    def claim(self, plan_id: str, asker: HostAsker) -> bool:
        """Send `plan_id`'s questions to `asker` unless someone else takes them already."""
        if plan_id in self._by_plan:
            return False
        self._by_plan[plan_id] = asker
        return True

    def asker(self, plan_id: str) -> HostAsker | None:
        """Who `plan_id`'s questions go to now, if anyone."""
        return self._by_plan.get(plan_id)

    def clear(self, plan_id: str, asker: HostAsker | None = None) -> None:
        """Stop sending `plan_id`'s questions (to `asker` only, when given)."""
        if asker is None or self._by_plan.get(plan_id) is asker:
            self._by_plan.pop(plan_id, None)

    async def ask(self, question: DownstreamQuestion) -> dict[str, Any]:
        """Ask whoever follows the plan.

        Raises:
            CannotAsk: Nobody follows it in a way that can answer, the step asks
                again before its question was answered, or the answer does not fit.
        """
        asker = self._by_plan.get(question.plan_id)
        if asker is None:
            raise CannotAsk(
                f"{question.text()}, and no host that can answer follows this run: run the "
                "plan from a host that declares MCP tasks (the host task then asks it), or "
                "wait for it (execute_plan with wait=true) from a host that declares form "
                "elicitation on a 2025-11-25 session"
            )
        step = (question.plan_id, question.step_id)
        turn, wanting = self._turns.setdefault(step, (anyio.Lock(), [0]))
        if wanting[0] > QUESTIONS_WAITING_MAX:
            raise CannotAsk(
                f"{question.text()} while {wanting[0]} of its questions are out already: "
                "too many at once"
            )
        wanting[0] += 1
        try:
            async with turn:  # the host sees one question of the step at a time
                answer = await asker(question)
        finally:
            wanting[0] -= 1
            if not wanting[0]:
                self._turns.pop(step, None)
        if question.method == "elicitation/create":
            _check_answer(question, answer)
        return answer


def _check_answer(question: DownstreamQuestion, answer: dict[str, Any]) -> None:
    """An accepted answer must carry content that fits the schema asked for."""
    if answer.get("action") != "accept":
        return
    content = answer.get("content")
    if not isinstance(content, dict):
        raise CannotAsk(f"{question.text()}, and the host accepted without an answer")
    import jsonschema  # not at import time: read-only commands never load it

    schema = question.params.get("requestedSchema")
    if not isinstance(schema, dict):
        return  # the SDK's own check of the request let it through; nothing to check against
    try:
        jsonschema.validate(content, schema)
    except jsonschema.ValidationError as exc:
        raise CannotAsk(
            f"{question.text()}, and the host's answer does not match the question: {exc.message}"
        ) from None
    except jsonschema.SchemaError:
        raise CannotAsk(f"{question.text()}, with a schema that is not valid") from None
