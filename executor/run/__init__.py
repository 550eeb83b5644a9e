"""The execution engine: runs approved plans durably, in parallel, as their DAG allows.

`Scheduler` (`scheduler`) is the facade; a `Run` (`coordinator`) is the handle
of one active run, whose coordinator is the only writer of its state. It keeps
its steps in `steps`, writes through `journal`, and ends as `ending` says; step
calls and timers are in `tasks`. Limits live in `limits`, the rules of starting
and deciding in `starting`, crash recovery and take-over in `recovery`, leases
and run owners in `leases`, cancel requests between processes in `control`,
reports in `reports`, live events in `subscriptions`, this process's runs in
`registry`. Names are imported on first use.
"""

from __future__ import annotations

import typing

from executor._utils import lazy_exports as _lazy_exports

# `typing` itself, not its names: the package's namespace holds only its exports.
if typing.TYPE_CHECKING:
    from executor.run.coordinator import Run, RunContext
    from executor.run.leases import RunOwner
    from executor.run.limits import SchedulerConfig
    from executor.run.reports import ExecutionProgress, ExecutionReport, StepReport
    from executor.run.scheduler import Scheduler
    from executor.run.starting import Decision, OnInterrupted, rejected_message
    from executor.run.subscriptions import Subscription

__all__ = [
    "Decision",
    "ExecutionProgress",
    "ExecutionReport",
    "OnInterrupted",
    "Run",
    "RunContext",
    "RunOwner",
    "Scheduler",
    "SchedulerConfig",
    "StepReport",
    "Subscription",
    "rejected_message",
]

_HOME = {
    "Decision": "executor.run.starting",
    "ExecutionProgress": "executor.run.reports",
    "ExecutionReport": "executor.run.reports",
    "OnInterrupted": "executor.run.starting",
    "Run": "executor.run.coordinator",
    "RunContext": "executor.run.coordinator",
    "RunOwner": "executor.run.leases",
    "Scheduler": "executor.run.scheduler",
    "SchedulerConfig": "executor.run.limits",
    "StepReport": "executor.run.reports",
    "Subscription": "executor.run.subscriptions",
    "rejected_message": "executor.run.starting",
}

__getattr__, __dir__ = _lazy_exports(__name__, _HOME, globals())
