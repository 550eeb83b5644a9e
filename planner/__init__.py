"""The compiler: turns a query, an agent and a tool catalog into a validated plan.

Every way to a plan ends in the same check, `executor.validate.validate_plan`
against the catalog, the agent's tool policy and its step limit; a plan that
fails it is never returned (`PlanValidationError` carries the problems).

The API the face uses:

```python
request = PlanRequest(
    query="...", catalog=await pool.catalog(), agent=agent,
    history=(SessionEntry.from_plan(p, outcome), ...),      # same session, oldest first
    revision=Revision(plan=old_plan, feedback="..."),       # only when revising
    plan_id=new_id,                                         # stamps the attempt records
)

# 1. A model through litellm; the face picks the model (`server.config.model_for`)
#    and builds the options from the config:
options = PlannerOptions(max_repairs=2, timeout_s=120, ordered_steps=False)
backend = LiteLLMBackend(model, api_base=..., api_key_env=...,
                         timeout_s=options.timeout_s, response_mode=options.response_mode)
planner: Planner = ModelPlanner(backend, options)
#    ordered_steps=True fixes ids to s1, s2, ... with dependencies on earlier steps
#    only, in the decoding constraint: what makes a tiny local model's plans valid.
# 2. Caller-written steps, no model:
planner = StepsPlanner(steps, strategy="...")
# 3. The host's model, from an MCPServer tool: see `planner.host.HostPlanning`
#    (or `ModelPlanner(SamplingBackend(sampler))` given a sampling function).

draft = await planner.plan(request, on_attempt=store.record_planner_attempt)
plan = draft.to_plan(new_id, query=request.query, agent=agent.name, session_id=...)
```

`PlanDraft` holds `strategy`, `steps`, `considered_tools` (the aliases shown to
the model after policy and shortlisting), `model` and `attempts`.

Errors: `PlanValidationError` (the plan is still invalid after the repairs;
`UserError`; its problems are `executor.validate.Problem`s, with the planner's own
codes `unparseable_answer` and `invalid_answer` for answers that are not a
`{strategy, steps}` object), `PlannerError` (the model could not be used:
`failure` says why, one of `PlannerFailure`; the message says what to check and
`setting` names the option that would fix it).
Both are `TaskorchError`s.

Every model call is passed to `on_attempt` as an `executor.records.PlannerAttempt`
(prompt tokens as reported, else estimated at four characters a token; latency;
the problems of its answer), failed calls included, before the error is raised.

Pieces, for tests and benchmarks: `RepairSession` (the loop without I/O),
`plan_with_repair`, `plan_schema` (the constrained answer schema), `answer_budget`
(the default `max_tokens`), `build_messages` (the prompt), `shortlist` (BM25
ranking above `SHORTLIST_THRESHOLD` tools), `estimate_tokens`.

Names are imported on first use (`__getattr__` below), so that importing one
module (`planner.host`, say) does not load every planner piece.
"""

from __future__ import annotations

import typing

from executor._utils import lazy_exports as _lazy_exports

# `typing` itself, not its names: the package's namespace holds only its exports.
if typing.TYPE_CHECKING:
    from planner.backends import (
        LiteLLMBackend,
        ModelBackend,
        Sampler,
        SamplingBackend,
        sampling_params,
    )
    from planner.errors import PlannerError, PlannerFailure
    from planner.host import HostPlanning, HostPlanOutcome, host_supports_sampling
    from planner.models import (
        ChatMessage,
        ModelReply,
        ModelRequest,
        PlanDraft,
        PlanRequest,
        ResponseMode,
        Revision,
        SessionEntry,
    )
    from planner.options import DEFAULT_MAX_REPAIRS, PlannerOptions
    from planner.planners import CALLER_MODEL, ModelPlanner, Planner, StepsPlanner
    from planner.prompt import build_messages, estimate_tokens
    from planner.repair import AttemptCallback, RepairSession, parse_answer, plan_with_repair
    from planner.schema import answer_budget, grammar_safe, plan_schema

# Not lazy: importing the submodule `planner.shortlist` (planner.host does) would
# bind its name here to the module, hiding the function of the same name.
from planner.shortlist import SHORTLIST_SIZE, SHORTLIST_THRESHOLD, shortlist

__all__ = [
    "CALLER_MODEL",
    "DEFAULT_MAX_REPAIRS",
    "SHORTLIST_SIZE",
    "SHORTLIST_THRESHOLD",
    "AttemptCallback",
    "ChatMessage",
    "HostPlanOutcome",
    "HostPlanning",
    "LiteLLMBackend",
    "ModelBackend",
    "ModelPlanner",
    "ModelReply",
    "ModelRequest",
    "PlanDraft",
    "PlanRequest",
    "Planner",
    "PlannerError",
    "PlannerFailure",
    "PlannerOptions",
    "RepairSession",
    "ResponseMode",
    "Revision",
    "Sampler",
    "SamplingBackend",
    "SessionEntry",
    "StepsPlanner",
    "answer_budget",
    "build_messages",
    "estimate_tokens",
    "grammar_safe",
    "host_supports_sampling",
    "parse_answer",
    "plan_schema",
    "plan_with_repair",
    "sampling_params",
    "shortlist",
]

_HOME = {
    "CALLER_MODEL": "planner.planners",
    "DEFAULT_MAX_REPAIRS": "planner.options",
    "AttemptCallback": "planner.repair",
    "ChatMessage": "planner.models",
    "HostPlanOutcome": "planner.host",
    "HostPlanning": "planner.host",
    "LiteLLMBackend": "planner.backends",
    "ModelBackend": "planner.backends",
    "ModelPlanner": "planner.planners",
    "ModelReply": "planner.models",
    "ModelRequest": "planner.models",
    "PlanDraft": "planner.models",
    "PlanRequest": "planner.models",
    "Planner": "planner.planners",
    "PlannerError": "planner.errors",
    "PlannerFailure": "planner.errors",
    "PlannerOptions": "planner.options",
    "RepairSession": "planner.repair",
    "ResponseMode": "planner.models",
    "Revision": "planner.models",
    "Sampler": "planner.backends",
    "SamplingBackend": "planner.backends",
    "SessionEntry": "planner.models",
    "StepsPlanner": "planner.planners",
    "answer_budget": "planner.schema",
    "build_messages": "planner.prompt",
    "estimate_tokens": "planner.prompt",
    "grammar_safe": "planner.schema",
    "host_supports_sampling": "planner.host",
    "parse_answer": "planner.repair",
    "plan_schema": "planner.schema",
    "plan_with_repair": "planner.repair",
    "sampling_params": "planner.backends",
}


__getattr__, __dir__ = _lazy_exports(__name__, _HOME, globals())
