"""The runtime: plan model, validation, downstream connections, the run engine, the store.

Names are imported on first use (see `executor._utils.export_lazily`), so that
importing one module (`executor.errors`, say) does not load the SDK's client,
the scheduler and jsonschema: `taskorch serve` and the CLI's `--help` start faster.
"""

from __future__ import annotations

import typing

from executor._utils import export_lazily as _export_lazily

if typing.TYPE_CHECKING or not _export_lazily(globals()):
    from executor.calls import ProgressFn as ProgressFn
    from executor.calls import ToolCaller as ToolCaller
    from executor.calls import ToolResult as ToolResult
    from executor.catalog import Catalog as Catalog
    from executor.catalog import ToolAnnotations as ToolAnnotations
    from executor.catalog import ToolInfo as ToolInfo
    from executor.catalog import make_alias as make_alias
    from executor.downstream import DEFAULT_MAX_TIMEOUT_S as DEFAULT_MAX_TIMEOUT_S
    from executor.downstream import HttpServerSpec as HttpServerSpec
    from executor.downstream import Pool as Pool
    from executor.downstream import ServerEventFn as ServerEventFn
    from executor.downstream import ServerHealth as ServerHealth
    from executor.downstream import ServerSpec as ServerSpec
    from executor.downstream import ServerStatus as ServerStatus
    from executor.downstream import SseServerSpec as SseServerSpec
    from executor.downstream import StdioServerSpec as StdioServerSpec
    from executor.downstream import WebSocketServerSpec as WebSocketServerSpec
    from executor.errors import ApprovalError as ApprovalError
    from executor.errors import CannotAsk as CannotAsk
    from executor.errors import ConfigError as ConfigError
    from executor.errors import CorruptDatabaseError as CorruptDatabaseError
    from executor.errors import Delivery as Delivery
    from executor.errors import ErrorKind as ErrorKind
    from executor.errors import InternalError as InternalError
    from executor.errors import NotFoundError as NotFoundError
    from executor.errors import PlanValidationError as PlanValidationError
    from executor.errors import SchemaTooNewError as SchemaTooNewError
    from executor.errors import StepReferenceError as StepReferenceError
    from executor.errors import StoreError as StoreError
    from executor.errors import TaskorchError as TaskorchError
    from executor.errors import ToolCallError as ToolCallError
    from executor.errors import TransitionError as TransitionError
    from executor.errors import UserError as UserError
    from executor.graph import Graph as Graph
    from executor.ids import PlanId as PlanId
    from executor.ids import StepId as StepId
    from executor.plan import OnError as OnError
    from executor.plan import Plan as Plan
    from executor.plan import RetryPolicy as RetryPolicy
    from executor.plan import Step as Step
    from executor.plan import StepError as StepError
    from executor.policy import AgentConfig as AgentConfig
    from executor.policy import AgentLimits as AgentLimits
    from executor.policy import AutoApprove as AutoApprove
    from executor.policy import ModelSettings as ModelSettings
    from executor.policy import ResponseMode as ResponseMode
    from executor.policy import ToolPolicy as ToolPolicy
    from executor.records import AttemptRecord as AttemptRecord
    from executor.records import Event as Event
    from executor.records import EventKind as EventKind
    from executor.records import LastFailure as LastFailure
    from executor.records import PlannerAttempt as PlannerAttempt
    from executor.records import ServerEvent as ServerEvent
    from executor.records import ServerEventKind as ServerEventKind
    from executor.records import StepState as StepState
    from executor.records import ToolCallStats as ToolCallStats
    from executor.records import ToolStats as ToolStats
    from executor.refs import StepRef as StepRef
    from executor.refs import find_references as find_references
    from executor.refs import parse_template as parse_template
    from executor.refs import resolve_references as resolve_references
    from executor.retry import RetryDecision as RetryDecision
    from executor.retry import Verdict as Verdict
    from executor.retry import decide as decide
    from executor.run import Decision as Decision
    from executor.run import ExecutionProgress as ExecutionProgress
    from executor.run import ExecutionReport as ExecutionReport
    from executor.run import OnInterrupted as OnInterrupted
    from executor.run import Run as Run
    from executor.run import RunOwner as RunOwner
    from executor.run import Scheduler as Scheduler
    from executor.run import SchedulerConfig as SchedulerConfig
    from executor.run import StepReport as StepReport
    from executor.run import Subscription as Subscription
    from executor.stats import CriticalStep as CriticalStep
    from executor.stats import RunAnalysis as RunAnalysis
    from executor.stats import ServerCallStats as ServerCallStats
    from executor.stats import Stats as Stats
    from executor.stats import analyse_run as analyse_run
    from executor.stats import collect_stats as collect_stats
    from executor.stats import parse_since as parse_since
    from executor.status import PlanStatus as PlanStatus
    from executor.status import RunPhase as RunPhase
    from executor.status import SkipReason as SkipReason
    from executor.status import StepStatus as StepStatus
    from executor.status import check_transition as check_transition
    from executor.store import ExpectedPlanStatus as ExpectedPlanStatus
    from executor.store import LeaseInfo as LeaseInfo
    from executor.store import PlanStatusChange as PlanStatusChange
    from executor.store import RunLease as RunLease
    from executor.store import SqliteStore as SqliteStore
    from executor.store import Store as Store
    from executor.store import WriteBatch as WriteBatch
    from executor.validate import Problem as Problem
    from executor.validate import check_arguments as check_arguments
    from executor.validate import checked_graph as checked_graph
    from executor.validate import parse_steps as parse_steps
    from executor.validate import validate_plan as validate_plan
