"""Planning with the host's own model, from inside an `MCPServer` tool call.

The SDK v2 fills a tool parameter annotated `Resolve(fn)` by running `fn`,
which may return a `Sample` request: mid-call `sampling/createMessage` on
2025-11-25, an `InputRequiredResult` and a second call on 2026-07-28, where
every resolver runs again each round. One resolver asks one question, so the
repair loop is unrolled into a chain (`start -> ask1 -> feed1 -> ... -> finish`,
each `ask` asking only while the plan is invalid), with prompts rendered
deterministically so that no round re-asks what was answered.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.resolve import Resolve, Sample
from mcp.types import CreateMessageResult

from executor.errors import PlanValidationError
from executor.records import PlannerAttempt
from executor.validate import Problem
from planner.backends import reply_from_sampling, sampling_params
from planner.errors import PlannerError, PlannerFailure
from planner.models import PlanDraft, PlanRequest
from planner.options import PlannerOptions
from planner.repair import RepairSession

__all__ = ["HOST_MODEL", "HostPlanOutcome", "HostPlanning", "host_supports_sampling"]

HOST_MODEL = "host"
"""`PlannerAttempt.model` for the host's own model (the host does not say which)."""


def host_supports_sampling(ctx: Context[Any, Any]) -> bool:
    """Whether the client of this request declared the `sampling` capability."""
    capabilities = ctx.client_capabilities
    return capabilities is not None and capabilities.sampling is not None


@dataclass(frozen=True, slots=True)
class HostPlanOutcome:
    """What host planning came to.

    Attributes:
        draft: The valid draft, when one came of it.
        problems: The last answer's problems, when none was valid.
        attempts: One record per sampled answer. `latency_s` is the wait for
            the host where it answers within the call (2025-11-25); on 2026-07-28
            the answer arrives in a later round and the wait is not seen (0).
        error: Why the host's answer could not be used at all, if so.
    """

    draft: PlanDraft | None
    problems: tuple[Problem, ...]
    attempts: tuple[PlannerAttempt, ...]
    error: PlannerError | None = None

    def unwrap(self) -> PlanDraft:
        """The draft.

        Raises:
            PlannerError: The host's answer could not be used.
            PlanValidationError: The last answer was still invalid.
        """
        if self.draft is not None:
            return self.draft
        if self.error is not None:
            raise self.error
        raise PlanValidationError(list(self.problems))


class _State:
    """The loop's state, passed along the resolver chain within one round."""

    def __init__(self, session: RepairSession | None, error: PlannerError | None = None) -> None:
        self.session = session
        """`None` when planning could not start (then `error` says why)."""
        self.asked_at: float | None = None
        self.error = error


class HostPlanning:
    """Builds the resolver chain that plans with the host's model.

    The SDK reads the `Resolve` marker through `typing.get_type_hints`, so with
    `from __future__ import annotations` the `HostPlanning` object must be a
    module global, where the string annotation can be evaluated. The request
    resolver takes tool arguments by name and the `Context`, like any resolver;
    it returns `None` to skip host planning for a call (steps were given, a
    model is configured, or the client cannot sample).

    Example:
        ```python
        async def host_request(query: str, ctx: Context) -> PlanRequest | None:
            if not host_supports_sampling(ctx):
                return None
            return PlanRequest(query=query, catalog=await pool.catalog(), agent=agent)

        host = HostPlanning(host_request, PlannerOptions(max_repairs=2))

        @app.tool()
        async def create_plan(
            query: str, planned: Annotated[HostPlanOutcome | None, Resolve(host.resolver)]
        ) -> ...:
            draft = planned.unwrap() if planned is not None else ...
        ```

    Attributes:
        resolver: The resolver to annotate a tool parameter with:
            `Annotated[HostPlanOutcome | None, Resolve(host.resolver)]`.
    """

    def __init__(
        self, request_resolver: Callable[..., Any], options: PlannerOptions | None = None
    ) -> None:
        """Chain the resolvers.

        Args:
            request_resolver: A resolver (tool arguments by name, `Context`, other
                resolvers) returning the `PlanRequest`, or `None` to skip.
            options: Repairs, answer budget, shortlist (the defaults when `None`);
                the chain has one ask per repair round, so they are fixed here.
        """
        options = PlannerOptions() if options is None else options

        async def start(request: Any) -> _State | None:
            if request is None:
                return None
            if not isinstance(request, PlanRequest):
                raise TypeError(
                    f"the request resolver returned {type(request).__name__}; it must return "
                    "a PlanRequest, or None to skip host planning"
                )
            try:
                session = RepairSession(request, options)
            except PlannerError as error:
                # Raised inside a resolver it would reach the client as an opaque
                # tool failure; carried in the outcome, the tool reports it.
                return _State(None, error)
            return _State(session)

        _annotate(start, request=request_resolver)
        link: Callable[..., Any] = start
        for _ in range(options.max_repairs + 1):
            ask = _make_ask(link)
            link = _make_feed(link, ask)

        async def finish(state: _State | None) -> HostPlanOutcome | None:
            if state is None:
                return None
            session = state.session
            if session is None:
                return HostPlanOutcome(draft=None, problems=(), attempts=(), error=state.error)
            error = state.error
            if error is None and session.draft is None and session.problems:
                try:
                    session.result()
                except PlannerError as cut:  # the answers were cut at the token limit
                    error = cut
                except PlanValidationError:
                    pass  # carried as `problems`
            return HostPlanOutcome(
                draft=session.draft,
                problems=tuple(session.problems),
                attempts=tuple(session.attempts),
                error=error,
            )

        _annotate(finish, state=link)
        self.resolver: Callable[..., Any] = finish


def _annotate(fn: Callable[..., Any], **dependencies: Callable[..., Any]) -> None:
    # The SDK reads resolver dependencies from the annotations; they are set as
    # objects (not strings) because the resolvers they name are local values.
    fn.__annotations__ = {
        **{name: Annotated[Any, Resolve(dep)] for name, dep in dependencies.items()},
        "return": Any,
    }


def _make_ask(previous: Callable[..., Any]) -> Callable[..., Any]:
    async def ask(state: _State | None) -> Sample | None:
        if state is None or state.session is None or state.session.done:
            return None
        request = state.session.next_request()
        assert request is not None
        params = sampling_params(request)
        state.asked_at = time.perf_counter()
        return Sample(
            params.messages,
            max_tokens=params.max_tokens,
            system_prompt=params.system_prompt,
            include_context=params.include_context,
        )

    _annotate(ask, state=previous)
    return ask


def _make_feed(previous: Callable[..., Any], ask: Callable[..., Any]) -> Callable[..., Any]:
    async def feed(state: _State | None, answer: object) -> _State | None:
        if state is None or state.session is None or state.session.done:
            return state
        session: RepairSession = state.session
        latency = 0.0 if state.asked_at is None else time.perf_counter() - state.asked_at
        # Mutating the state in place is safe: within a round each resolver runs
        # once, in chain order, and every round rebuilds the chain from `start`.
        if not isinstance(answer, CreateMessageResult):
            error = PlannerError(
                PlannerFailure.BAD_RESPONSE,
                f"the host's sampling answer is a {type(answer).__name__}, not a message",
                model=HOST_MODEL,
            )
            session.fail(error, latency_s=latency, model=HOST_MODEL)
            state.error = error
            return state
        try:
            reply = reply_from_sampling(answer, model=HOST_MODEL)
        except PlannerError as error:
            session.fail(error, latency_s=latency, model=HOST_MODEL)
            state.error = error
            return state
        session.feed(reply, latency_s=latency, model=HOST_MODEL)
        return state

    _annotate(feed, state=previous, answer=ask)
    return feed
