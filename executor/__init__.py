"""The runtime: plan model, validation, downstream connections, scheduler, store.

Names are imported on first use (`__getattr__` below), so that importing one
module (`executor.errors`, say) does not load the SDK's client, the scheduler
and jsonschema: `taskorch serve` and the CLI's `--help` start faster.
"""

from __future__ import annotations

import importlib
import typing

# `typing` itself, not its names: the package's namespace holds only its exports.
if typing.TYPE_CHECKING:
    from executor.calls import ProgressFn, ToolCaller, ToolResult
    from executor.catalog import Catalog, ToolAnnotations, ToolInfo, make_alias
    from executor.downstream import (
        DEFAULT_MAX_TIMEOUT_S,
        Pool,
        ServerHealth,
        ServerStatus,
        classify_exception,
        render_health_table,
    )
    from executor.errors import (
        ApprovalError,
        ConfigError,
        CorruptDatabaseError,
        ErrorKind,
        InternalError,
        NotFoundError,
        PlanValidationError,
        SchemaTooNewError,
        StepReferenceError,
        StoreError,
        TaskorchError,
        ToolCallError,
        TransitionError,
        UserError,
    )
    from executor.ids import AgentName, PlanId, ServerName, StepId, ToolName
    from executor.plan import (
        ExecutionProgress,
        OnError,
        Plan,
        PlanStatus,
        RetryPolicy,
        Step,
        StepError,
        StepStatus,
        check_transition,
    )
    from executor.policy import AgentConfig, AgentLimits, AutoApprove, ToolPolicy
    from executor.records import (
        AttemptRecord,
        Event,
        EventKind,
        PlannerAttempt,
        StepState,
        ToolStats,
    )
    from executor.refs import StepRef, find_references, parse_template, resolve_references
    from executor.scheduler import (
        Decision,
        ExecutionReport,
        OnInterrupted,
        Run,
        Scheduler,
        SchedulerConfig,
        StepReport,
        Subscription,
    )
    from executor.specs import (
        HttpServerSpec,
        ServerSpec,
        SseServerSpec,
        StdioServerSpec,
        WebSocketServerSpec,
    )
    from executor.store import (
        ExpectedPlanStatus,
        LeaseInfo,
        PlanStatusChange,
        RunLease,
        Store,
        WriteBatch,
    )
    from executor.validate import (
        Problem,
        check_plan,
        parse_steps,
        topological_order,
        validate_plan,
    )

__all__ = [
    "DEFAULT_MAX_TIMEOUT_S",
    "AgentConfig",
    "AgentLimits",
    "AgentName",
    "ApprovalError",
    "AttemptRecord",
    "AutoApprove",
    "Catalog",
    "ConfigError",
    "CorruptDatabaseError",
    "Decision",
    "ErrorKind",
    "Event",
    "EventKind",
    "ExecutionProgress",
    "ExecutionReport",
    "ExpectedPlanStatus",
    "HttpServerSpec",
    "InternalError",
    "LeaseInfo",
    "NotFoundError",
    "OnError",
    "OnInterrupted",
    "Plan",
    "PlanId",
    "PlanStatus",
    "PlanStatusChange",
    "PlanValidationError",
    "PlannerAttempt",
    "Pool",
    "Problem",
    "ProgressFn",
    "RetryPolicy",
    "Run",
    "RunLease",
    "Scheduler",
    "SchedulerConfig",
    "SchemaTooNewError",
    "ServerHealth",
    "ServerName",
    "ServerSpec",
    "ServerStatus",
    "SseServerSpec",
    "StdioServerSpec",
    "Step",
    "StepError",
    "StepId",
    "StepRef",
    "StepReferenceError",
    "StepReport",
    "StepState",
    "StepStatus",
    "Store",
    "StoreError",
    "Subscription",
    "TaskorchError",
    "ToolAnnotations",
    "ToolCallError",
    "ToolCaller",
    "ToolInfo",
    "ToolName",
    "ToolPolicy",
    "ToolResult",
    "ToolStats",
    "TransitionError",
    "UserError",
    "WebSocketServerSpec",
    "WriteBatch",
    "check_plan",
    "check_transition",
    "classify_exception",
    "find_references",
    "make_alias",
    "parse_steps",
    "parse_template",
    "render_health_table",
    "resolve_references",
    "topological_order",
    "validate_plan",
]

_HOME = {
    "DEFAULT_MAX_TIMEOUT_S": "executor.downstream",
    "AgentConfig": "executor.policy",
    "AgentLimits": "executor.policy",
    "AgentName": "executor.ids",
    "ApprovalError": "executor.errors",
    "AttemptRecord": "executor.records",
    "AutoApprove": "executor.policy",
    "Catalog": "executor.catalog",
    "ConfigError": "executor.errors",
    "CorruptDatabaseError": "executor.errors",
    "Decision": "executor.scheduler",
    "ErrorKind": "executor.errors",
    "Event": "executor.records",
    "EventKind": "executor.records",
    "ExecutionProgress": "executor.plan",
    "ExecutionReport": "executor.scheduler",
    "ExpectedPlanStatus": "executor.store",
    "LeaseInfo": "executor.store",
    "RunLease": "executor.store",
    "HttpServerSpec": "executor.specs",
    "InternalError": "executor.errors",
    "NotFoundError": "executor.errors",
    "OnError": "executor.plan",
    "OnInterrupted": "executor.scheduler",
    "Plan": "executor.plan",
    "PlanId": "executor.ids",
    "PlanStatus": "executor.plan",
    "PlanStatusChange": "executor.store",
    "PlanValidationError": "executor.errors",
    "PlannerAttempt": "executor.records",
    "Pool": "executor.downstream",
    "Problem": "executor.validate",
    "ProgressFn": "executor.calls",
    "RetryPolicy": "executor.plan",
    "Run": "executor.scheduler",
    "Scheduler": "executor.scheduler",
    "SchedulerConfig": "executor.scheduler",
    "SchemaTooNewError": "executor.errors",
    "ServerHealth": "executor.downstream",
    "ServerName": "executor.ids",
    "ServerSpec": "executor.specs",
    "ServerStatus": "executor.downstream",
    "SseServerSpec": "executor.specs",
    "StdioServerSpec": "executor.specs",
    "Step": "executor.plan",
    "StepError": "executor.plan",
    "StepId": "executor.ids",
    "StepRef": "executor.refs",
    "StepReferenceError": "executor.errors",
    "StepReport": "executor.scheduler",
    "StepState": "executor.records",
    "StepStatus": "executor.plan",
    "Store": "executor.store",
    "StoreError": "executor.errors",
    "Subscription": "executor.scheduler",
    "TaskorchError": "executor.errors",
    "ToolAnnotations": "executor.catalog",
    "ToolCallError": "executor.errors",
    "ToolCaller": "executor.calls",
    "ToolInfo": "executor.catalog",
    "ToolName": "executor.ids",
    "ToolPolicy": "executor.policy",
    "ToolResult": "executor.calls",
    "ToolStats": "executor.records",
    "TransitionError": "executor.errors",
    "UserError": "executor.errors",
    "WebSocketServerSpec": "executor.specs",
    "WriteBatch": "executor.store",
    "check_plan": "executor.validate",
    "check_transition": "executor.plan",
    "classify_exception": "executor.downstream",
    "find_references": "executor.refs",
    "make_alias": "executor.catalog",
    "parse_steps": "executor.validate",
    "parse_template": "executor.refs",
    "render_health_table": "executor.downstream",
    "resolve_references": "executor.refs",
    "topological_order": "executor.validate",
    "validate_plan": "executor.validate",
}


def __getattr__(name: str) -> typing.Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'executor' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
