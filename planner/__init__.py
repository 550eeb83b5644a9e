"""The compiler: turns a query, an agent and a tool catalog into a validated plan.

Three `Planner`s: `ModelPlanner` (a `ModelBackend`: litellm's providers or the
host's model, with the validate-and-repair loop of `planner.repair`),
`StepsPlanner` (steps the caller wrote) and, inside an MCP tool,
`planner.host.HostPlanning`. Every way ends in `executor.validate.validate_plan`
against the catalog and the agent's policy: an invalid plan is never returned
(`PlanValidationError`); a model that cannot be used raises `PlannerError`.
"""

from __future__ import annotations

import typing

from executor._utils import export_lazily as _export_lazily

if typing.TYPE_CHECKING or not _export_lazily(globals()):
    from planner.backends import LiteLLMBackend as LiteLLMBackend
    from planner.backends import ModelBackend as ModelBackend
    from planner.backends import Sampler as Sampler
    from planner.backends import SamplingBackend as SamplingBackend
    from planner.backends import sampling_params as sampling_params
    from planner.errors import PlannerError as PlannerError
    from planner.errors import PlannerFailure as PlannerFailure
    from planner.host import HostPlanning as HostPlanning
    from planner.host import HostPlanOutcome as HostPlanOutcome
    from planner.host import host_supports_sampling as host_supports_sampling
    from planner.models import ChatMessage as ChatMessage
    from planner.models import ModelReply as ModelReply
    from planner.models import ModelRequest as ModelRequest
    from planner.models import PlanDraft as PlanDraft
    from planner.models import PlanRequest as PlanRequest
    from planner.models import ResponseMode as ResponseMode
    from planner.models import Revision as Revision
    from planner.models import SessionEntry as SessionEntry
    from planner.options import DEFAULT_MAX_REPAIRS as DEFAULT_MAX_REPAIRS
    from planner.options import PlannerOptions as PlannerOptions
    from planner.planners import CALLER_MODEL as CALLER_MODEL
    from planner.planners import ModelPlanner as ModelPlanner
    from planner.planners import Planner as Planner
    from planner.planners import StepsPlanner as StepsPlanner
    from planner.prompt import build_messages as build_messages
    from planner.prompt import estimate_tokens as estimate_tokens
    from planner.repair import AttemptCallback as AttemptCallback
    from planner.repair import RepairSession as RepairSession
    from planner.repair import parse_answer as parse_answer
    from planner.repair import plan_with_repair as plan_with_repair
    from planner.schema import answer_budget as answer_budget
    from planner.schema import grammar_safe as grammar_safe
    from planner.schema import plan_schema as plan_schema
    from planner.shortlist import SHORTLIST_SIZE as SHORTLIST_SIZE
    from planner.shortlist import SHORTLIST_THRESHOLD as SHORTLIST_THRESHOLD
    from planner.shortlist import shortlist as shortlist
