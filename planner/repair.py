"""Validate and repair: ask, check with the executor's validation, send the problems back.

`RepairSession` is the loop as a state machine that performs no I/O: it says
what to ask next (`next_request`) and takes each answer (`feed`). So the same
loop drives a backend directly (`plan_with_repair`) and a host that is asked
across MCP rounds (`planner.host`), where the answers arrive as resolver
results rather than as return values.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from executor.errors import PlanValidationError
from executor.plan import Step
from executor.records import PlannerAttempt
from executor.tracing import planner_span
from executor.validate import Problem, parse_steps, validate_plan
from planner.backends import ModelBackend
from planner.errors import PlannerError, PlannerFailure
from planner.models import ChatMessage, ModelReply, ModelRequest, PlanDraft, PlanRequest
from planner.options import PlannerOptions
from planner.prompt import build_messages, estimate_tokens, plan_as_answer, repair_message
from planner.schema import answer_budget, ordered_step_limit, plan_schema
from planner.shortlist import closest, considered_aliases, shortlist

__all__ = [
    "AttemptCallback",
    "RepairSession",
    "parse_answer",
    "plan_with_repair",
]

AttemptCallback = Callable[[PlannerAttempt], Awaitable[None]]
"""Receives each model call's record (the face stores it)."""

_FENCE = re.compile(r"\A```[A-Za-z]*\s*\n(?P<body>.*?)\n?```\Z", re.DOTALL)
_ANSWER_KEYS = ("strategy", "steps")
# Problems that only restate that a step was dropped for a problem reported already.
_FOLLOW_ON = frozenset({"unknown_dependency", "unknown_reference", "empty_plan"})


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_answer(reply: ModelReply) -> tuple[str, list[Any], list[Problem]]:
    """Read a model's answer strictly as `{strategy, steps}`.

    The text must be one JSON object (a Markdown code fence around the whole
    answer is tolerated, nothing else); it must have exactly the keys
    `strategy` (a non-empty string) and `steps` (an array).

    Returns:
        The strategy, the raw steps, and the problems (empty when well-formed):
        code `unparseable_answer` when the text is not JSON, `invalid_answer`
        when it is not the `{strategy, steps}` object.
    """
    if reply.data is not None:
        value: Any = reply.data
    else:
        text = (reply.text or "").strip()
        fenced = _FENCE.match(text)
        if fenced:
            text = fenced.group("body").strip()
        try:
            value = json.loads(text, parse_constant=_reject_constant)
        except ValueError as exc:
            cut = " (the answer was cut off)" if reply.truncated else ""
            return (
                "",
                [],
                [
                    Problem(
                        None,
                        "unparseable_answer",
                        f"the answer is not valid JSON{cut}: {exc}; answer with one JSON object "
                        '{"strategy": ..., "steps": [...]} and no other text',
                    )
                ],
            )
    if not isinstance(value, Mapping):
        return (
            "",
            [],
            [
                Problem(
                    None,
                    "invalid_answer",
                    f"the answer is a JSON {type(value).__name__}, not an object: answer with "
                    '{"strategy": ..., "steps": [...]}',
                )
            ],
        )
    problems: list[Problem] = []
    extra = [k for k in value if k not in _ANSWER_KEYS]
    if extra:
        names = ", ".join(repr(k) for k in extra)
        problems.append(
            Problem(
                None,
                "invalid_answer",
                f"the answer has unexpected keys {names}: keep only 'strategy' and 'steps'",
            )
        )
    strategy = value.get("strategy")
    if not isinstance(strategy, str) or not strategy.strip():
        problems.append(
            Problem(
                None,
                "invalid_answer",
                "'strategy' is missing or empty: say in one or two sentences how the plan "
                "gets the result",
            )
        )
        strategy = ""
    steps = value.get("steps")
    if not isinstance(steps, list):
        problems.append(
            Problem(None, "invalid_answer", "'steps' is missing or not an array: add the steps")
        )
        steps = []
    return strategy.strip(), steps, problems


class RepairSession:
    """One planning request's ask-validate-repair loop, without I/O.

    Use: `while (ask := session.next_request()) is not None: session.feed(answer_to(ask))`,
    then `session.result()`.
    """

    def __init__(self, request: PlanRequest, options: PlannerOptions | None = None) -> None:
        """Prepare the prompt and schema for `request`.

        Args:
            request: What to plan.
            options: How (repairs, answer budget, ordered ids, shortlist); the
                defaults when `None`. With `ordered_steps` the decoding constraint
                fixes ids to `s1, s2, ...` depending only on earlier steps (see
                `plan_schema`); a backend that must write the schema into the
                prompt (MCP sampling) writes the plain one, `prompt_schema`.

        Raises:
            PlannerError: The agent's policy leaves no tool to plan with.
        """
        options = PlannerOptions() if options is None else options
        self.options = options
        self.request = request
        self.max_repairs = options.max_repairs
        agent = request.agent
        revision = request.revision
        keep = {(s.server, s.tool) for s in revision.plan.steps} if revision else set()
        ranking_text = request.query + (f" {revision.feedback}" if revision else "")
        self.tools = shortlist(
            request.catalog,
            agent.tool_policy,
            ranking_text,
            size=options.shortlist_size,
            threshold=options.shortlist_threshold,
            keep=keep,
        )
        if not self.tools:
            raise PlannerError(
                PlannerFailure.NOT_CONFIGURED,
                f"no tool to plan with: the catalog has {len(request.catalog)} tool(s) and the "
                f"policy of agent {agent.name!r} allows none of them; start the servers or "
                "widen the agent's tool_policy",
            )
        self.considered_tools = considered_aliases(self.tools)
        self.max_steps = agent.limits.max_steps
        ordered = options.ordered_steps
        self.schema = plan_schema(self.tools, max_steps=self.max_steps, ordered=ordered)
        self.prompt_schema: dict[str, Any] | None = None
        shown_limit = self.max_steps
        if ordered:
            self.prompt_schema = plan_schema(self.tools, max_steps=self.max_steps)
            shown_limit = ordered_step_limit(len(self.tools), self.max_steps)
        copied = ranking_text + (json.dumps(plan_as_answer(revision.plan)) if revision else "")
        self.max_tokens = options.max_tokens or answer_budget(
            self.tools, max_steps=self.max_steps, ordered=ordered, copied_text=copied
        )
        self.messages: tuple[ChatMessage, ...] = tuple(
            build_messages(
                query=request.query,
                agent=agent,
                tools=self.tools,
                max_steps=shown_limit,
                history=request.history,
                revision=revision,
                example_tool=closest(request.catalog, self.tools, ranking_text),
            )
        )
        self.attempts: list[PlannerAttempt] = []
        self.draft: PlanDraft | None = None
        self.problems: list[Problem] = []
        self._last_answer: str | None = None
        self._last_truncated = False
        self._truncated_answers = 0
        self._failed = False

    @property
    def done(self) -> bool:
        """Whether no more model calls will be made."""
        return self.draft is not None or self._failed or len(self.attempts) > self.max_repairs

    def next_request(self) -> ModelRequest | None:
        """The next model call to make, or `None` when the loop is over."""
        if self.done:
            return None
        messages = self.messages
        if self._last_answer is not None:
            messages = (
                *messages,
                ChatMessage(role="assistant", content=self._last_answer),
                ChatMessage(
                    role="user",
                    content=repair_message(self.problems, truncated=self._last_truncated),
                ),
            )
        return ModelRequest(
            messages=messages,
            answer_schema=self.schema,
            prompt_schema=self.prompt_schema,
            max_tokens=self.max_tokens,
        )

    def feed(self, reply: ModelReply, *, latency_s: float = 0.0, model: str = "") -> PlannerAttempt:
        """Take one answer: parse, validate, and either finish or prepare a repair.

        Args:
            reply: The model's answer to the last `next_request()`.
            latency_s: Seconds the call took (0 when unknown).
            model: The model string configured (the reply's own name wins).

        Returns:
            The attempt's record (also appended to `attempts`).
        """
        asked = self.next_request()
        strategy, raw_steps, problems = parse_answer(reply)
        steps: list[Step] = []
        if not problems:
            steps, problems = parse_steps(raw_steps)
            checked = validate_plan(
                steps,
                self.request.catalog,
                self.request.agent.tool_policy,
                max_steps=self.max_steps,
            )
            if problems:
                # Steps with field errors were dropped: what points at them is noise.
                checked = [p for p in checked if p.code not in _FOLLOW_ON]
            problems = [*problems, *checked]
        self.problems = problems
        self._last_answer = (
            reply.text if reply.text is not None else json.dumps(reply.data, ensure_ascii=False)
        )
        self._last_truncated = reply.truncated
        self._truncated_answers += reply.truncated
        prompt_tokens = reply.prompt_tokens
        if prompt_tokens is None and asked is not None:
            prompt_tokens = sum(estimate_tokens(m.content) for m in asked.messages)
        attempt = PlannerAttempt(
            plan_id=self.request.plan_id,
            attempt=len(self.attempts) + 1,
            model=model or reply.model,
            prompt_tokens=prompt_tokens,
            completion_tokens=reply.completion_tokens,
            latency_s=latency_s,
            errors=tuple(str(p) for p in problems),
        )
        self.attempts.append(attempt)
        if not problems:
            self.draft = PlanDraft(
                strategy=strategy,
                steps=tuple(steps),
                considered_tools=self.considered_tools,
                model=model or reply.model,
                attempts=len(self.attempts),
            )
        return attempt

    def fail(self, error: Exception, *, latency_s: float = 0.0, model: str = "") -> PlannerAttempt:
        """Record a model call that raised; the loop is over."""
        asked = self.next_request()
        prompt_tokens = (
            sum(estimate_tokens(m.content) for m in asked.messages) if asked is not None else None
        )
        attempt = PlannerAttempt(
            plan_id=self.request.plan_id,
            attempt=len(self.attempts) + 1,
            model=model,
            prompt_tokens=prompt_tokens,
            latency_s=latency_s,
            errors=(str(error),),
        )
        self.attempts.append(attempt)
        self._failed = True
        return attempt

    def result(self) -> PlanDraft:
        """The valid draft.

        Raises:
            PlanValidationError: The last answer still had problems (they are attached).
        """
        if self.draft is not None:
            return self.draft
        if not self.problems:
            raise PlanValidationError(
                [Problem(None, "no_answer", "the model was not asked: nothing to validate")]
            )
        if self._last_truncated:
            cut = self._truncated_answers
            raise PlannerError(
                PlannerFailure.TRUNCATED,
                f"{cut} of {len(self.attempts)} answers, the last one included, were cut at the "
                f"token limit ({self.max_tokens} tokens) before the plan ended: raise max_tokens "
                "(or let taskorch derive it by leaving it unset), or ask for a smaller plan. "
                f"The last answer's problems: {'; '.join(str(p) for p in self.problems)}",
                model=self.attempts[-1].model if self.attempts else "",
                setting="max_tokens",
            )
        raise PlanValidationError(list(self.problems))


def _chat_attributes(model: str) -> dict[str, str | int | None]:
    """A model call's span attributes (OpenTelemetry's GenAI names)."""
    return {"gen_ai.operation.name": "chat", "gen_ai.request.model": model}


async def plan_with_repair(
    backend: ModelBackend,
    request: PlanRequest,
    options: PlannerOptions | None = None,
    *,
    on_attempt: AttemptCallback | None = None,
) -> PlanDraft:
    """Ask `backend` for a plan, validate it, and send problems back until it is valid.

    Args:
        backend: The model to ask.
        request: What to plan.
        options: Repairs, answer budget, ordered ids, shortlist (see `RepairSession`).
        on_attempt: Awaited with each model call's record, failures included.

    Returns:
        A draft whose steps passed `validate_plan`.

    Raises:
        PlanValidationError: The last answer was still invalid; it carries the problems.
        PlannerError: The model could not be used (provider error, timeout, an
            answer cut at the token limit, ...).
    """
    session = RepairSession(request, options)
    while (ask := session.next_request()) is not None:
        started = time.perf_counter()
        try:
            with planner_span(f"chat {backend.model}", _chat_attributes(backend.model)):
                reply = await backend.complete(ask)
        except PlannerError as exc:
            attempt = session.fail(
                exc, latency_s=time.perf_counter() - started, model=backend.model
            )
            if on_attempt is not None:
                await on_attempt(attempt)
            raise
        attempt = session.feed(reply, latency_s=time.perf_counter() - started, model=backend.model)
        if on_attempt is not None:
            await on_attempt(attempt)
    return session.result()
