"""The execution engine: runs approved plans durably, in parallel, as their DAG allows.

`Scheduler` (`scheduler`) is the facade; a `Run` (`coordinator`) is the handle
of one active run, whose coordinator is the only writer of its state. It keeps
its steps in `steps`, writes through `journal`, and ends as `ending` says; step
calls and timers are in `tasks`. Limits live in `limits`, the rules of starting
and deciding in `starting`, crash recovery and take-over in `recovery`, leases
and run owners in `leases`, cancel requests between processes in `control`,
reports in `reports`, live events in `subscriptions`, this process's runs in
`registry`; a run another process holds is followed through the store
(`follow`). Names are imported on first use.
"""

from __future__ import annotations

import typing

from executor._utils import export_lazily as _export_lazily

if typing.TYPE_CHECKING or not _export_lazily(globals()):
    from executor.run.coordinator import Run as Run
    from executor.run.coordinator import RunContext as RunContext
    from executor.run.follow import FollowedRun as FollowedRun
    from executor.run.leases import RunOwner as RunOwner
    from executor.run.limits import SchedulerConfig as SchedulerConfig
    from executor.run.reports import ExecutionProgress as ExecutionProgress
    from executor.run.reports import ExecutionReport as ExecutionReport
    from executor.run.reports import StepReport as StepReport
    from executor.run.scheduler import Scheduler as Scheduler
    from executor.run.starting import Decision as Decision
    from executor.run.starting import OnInterrupted as OnInterrupted
    from executor.run.starting import rejected_message as rejected_message
    from executor.run.subscriptions import Subscription as Subscription
