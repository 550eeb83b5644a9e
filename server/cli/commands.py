"""The `taskorch` commands.

```
taskorch serve [--http [--host 127.0.0.1] [--port 8765]]   (token in $TASKORCH_TOKEN)
taskorch plan "query" [--steps plan.json]     taskorch run plan.json | PLAN_ID [--yes]
taskorch plans   taskorch show ID   taskorch watch ID   taskorch confirm ID   taskorch cancel ID
taskorch stats [--server S] [--since 1d]      taskorch config check      taskorch demo
taskorch auth login NAME   taskorch auth logout NAME   taskorch auth status
taskorch --version
```

Every command takes `--config` and `--db` (`server.config` resolves both).
Commands that only read or decide (`plans`, `show`, `watch`, `stats`,
`confirm`, `cancel`) open the service without connecting to any server: they
load neither the MCP SDK, the pool nor the model library.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from executor.errors import TaskorchError, UserError
from server.cli.auth import auth_app
from server.cli.common import (
    ConfigOpt,
    DbOpt,
    LogFormatOpt,
    LogOpt,
    console,
    fail,
    load,
    open_orchestrator,
    run,
    setup_logging,
)
from server.cli.printing import (
    print_approval,
    print_health,
    print_plan,
    print_plans,
    print_report,
    print_stats,
    run_bars,
    styled_status,
)
from server.cli.serve import serve

if TYPE_CHECKING:
    from rich.console import Console

    from executor import ServerHealth
    from executor.stats import Stats
    from server.progress import ProgressUpdate
    from server.service import TaskOrchestrator
    from server.views import PlanView, RunView

__all__ = ["app", "commands"]

app = typer.Typer(
    name="taskorch",
    help="Plan, approve and run multi-step tool workflows across MCP servers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help and usage errors: typer's boxed ones load rich's markdown, syntax and
    # traceback modules (more than half of `--help`'s time) for a frame around the text.
    rich_markup_mode=None,
)
config_app = typer.Typer(
    help="Inspect the configuration.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(config_app, name="config")
app.add_typer(auth_app, name="auth")
app.command()(serve)


def commands() -> dict[str, Callable[..., Any]]:
    """The top-level commands by the name a user types (`config check` is a group's)."""
    return {
        info.name or info.callback.__name__.lower().replace("_", "-"): info.callback
        for info in app.registered_commands
        if info.callback is not None
    }


def _show_version(value: bool) -> None:
    if value:
        from server._version import installed_version

        typer.echo(f"taskorch {installed_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print the installed version and exit.",
            callback=_show_version,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """Plan, approve and run multi-step tool workflows across MCP servers."""


# --- plans ------------------------------------------------------------------------------------


def _read_plan_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise fail(f"{path}: cannot read the plan file: {exc.strerror or exc}", 2) from None
    except ValueError as exc:
        raise fail(f"{path}: not valid JSON: {exc}", 2) from None
    if isinstance(data, list):
        data = {"steps": data}
    if not isinstance(data, dict) or not isinstance(data.get("steps"), list):
        raise fail(
            f"{path}: a plan file is a JSON object with a 'steps' array "
            "(and optionally 'query', 'strategy', 'agent', 'session_id')",
            2,
        )
    return data


@app.command()
def plan(
    query: Annotated[str, typer.Argument(help="What the plan should do.", metavar="QUERY")],
    steps: Annotated[
        Path | None,
        typer.Option(help="A JSON file with the steps (no model needed); else the planner."),
    ] = None,
    agent: Annotated[str | None, typer.Option(help="The agent whose policy applies.")] = None,
    session: Annotated[str | None, typer.Option(help="Session id grouping plans.")] = None,
    config: ConfigOpt = None,
    db: DbOpt = None,
    log_level: LogOpt = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Create a plan for a query and show it.

    Approve it with `confirm`, or approve and run it with `run`.
    """
    orch = open_orchestrator(
        config,
        db,
        log_level=log_level,
        engine=False,
        resume=False,
        log_format=log_format,
        traced=True,
    )
    data = _read_plan_file(steps) if steps is not None else None

    async def go() -> None:
        async with orch:
            view = await orch.create_task_plan(
                query,
                session_id=session,
                agent_id=agent,
                steps=None if data is None else data["steps"],
                strategy=str(data.get("strategy", "")) if data else "",
            )
            print_plan(view, console())
            if not view.approved:
                await print_approval(orch, view)

    run(go)


@app.command()
def confirm(
    plan_id: Annotated[str, typer.Argument(help="The plan.", metavar="PLAN_ID")],
    plan_hash: Annotated[
        str | None, typer.Option("--hash", help="The plan_hash reviewed (else the latest).")
    ] = None,
    reject: Annotated[bool, typer.Option(help="Reject instead of approving.")] = False,
    reason: Annotated[str | None, typer.Option(help="Why, kept with the plan.")] = None,
    config: ConfigOpt = None,
    db: DbOpt = None,
    log_level: LogOpt = None,
) -> None:
    """Approve (or --reject) a plan."""
    orch = open_orchestrator(
        config, db, log_level=log_level, connect=False, engine=False, resume=False
    )

    async def go() -> None:
        async with orch:
            view = await orch.confirm_task_plan(plan_id, not reject, plan_hash, reason)
        print_plan(view, console())

    run(go)


@app.command("run")
def run_command(
    target: Annotated[
        str, typer.Argument(help="A plan JSON file, or the id of a stored plan.", metavar="TARGET")
    ],
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Approve without asking (plans that need it).")
    ] = False,
    on_interrupted: Annotated[
        str | None,
        typer.Option(help="For an interrupted plan: 'rerun' or 'skip' its interrupted steps."),
    ] = None,
    agent: Annotated[str | None, typer.Option(help="The agent, for a plan file.")] = None,
    config: ConfigOpt = None,
    db: DbOpt = None,
    log_level: LogOpt = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Run a plan file or a stored plan, with live progress bars.

    A plan file is stored, approved (after asking, unless --yes) and run.
    A stored plan left executing by a process that is gone is taken over and resumed;
    one that another live process runs is followed to its end.
    """
    if on_interrupted not in (None, "rerun", "skip"):
        raise fail("--on-interrupted takes 'rerun' or 'skip'", 2)
    # Not resume=True: this command runs its own plan, and exits when that ends; other
    # plans it resumed would stop (as after a crash) when it does.
    orch = open_orchestrator(
        config, db, log_level=log_level, resume=False, log_format=log_format, traced=True
    )
    path = Path(target)
    data = _read_plan_file(path) if path.suffix == ".json" or path.is_file() else None
    out = console()

    async def go() -> RunView:
        async with orch:
            if data is not None:
                view = await orch.create_task_plan(
                    str(data.get("query") or f"run {path.name}"),
                    session_id=data.get("session_id"),
                    agent_id=agent or data.get("agent"),
                    steps=data["steps"],
                    strategy=str(data.get("strategy", "")),
                )
            else:
                view = await orch.get_task_plan(target)
            print_plan(view, out)
            pid = view.plan_id
            if not view.approved and view.status.value in ("draft", "awaiting_confirmation"):
                if not yes:
                    await print_approval(orch, view)
                if not yes and not typer.confirm(f"Run plan {pid}?", default=False):
                    raise fail(
                        f"not approved: plan {pid} still awaits confirmation; "
                        f"`taskorch confirm {pid}` approves it, "
                        f"`taskorch confirm {pid} --reject` rejects it"
                    )
                await orch.confirm_task_plan(pid, True, view.plan_hash, "approved (cli)")
            if view.status.value == "executing":
                owner = await orch.run_owner(pid)
                if owner is not None and not owner.holds:
                    out.print(f"plan {pid}: {owner.describe()}; taking the run over")
                elif owner is not None and not owner.here:
                    out.print(f"plan {pid}: {owner.describe()}; following it")
            return await _execute_with_bars(orch, view, out, on_interrupted)

    report = run(go)
    print_report(report, out)
    if report.status.value != "completed":
        raise typer.Exit(1)


async def _execute_with_bars(
    orch: TaskOrchestrator, view: PlanView, out: Console, on_interrupted: str | None
) -> RunView:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeElapsedColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    step_tasks: dict[str, TaskID] = {}
    with Progress(*columns, console=out, transient=False) as bars:
        overall = bars.add_task(f"plan {view.plan_id}", total=len(view.steps))

        async def on_update(update: ProgressUpdate) -> None:
            event, progress = update.event, update.progress
            done = sum(n for s, n in progress.counts.items() if s not in ("pending", "running"))
            bars.update(overall, completed=done)
            step = event.step_id
            if step is None:
                return
            kind = event.kind.value
            if kind == "step_started" and step not in step_tasks:
                step_tasks[step] = bars.add_task(f"  {step}", total=None)
            elif kind == "step_progress" and step in step_tasks:
                total = event.data.get("total")
                bars.update(
                    step_tasks[step],
                    completed=float(event.data.get("progress") or 0),
                    total=float(total) if isinstance(total, int | float) else None,
                )
            elif step in step_tasks and kind != "step_retrying":
                task = step_tasks.pop(step)
                bars.update(task, description=f"  {step} [{kind.removeprefix('step_')}]")
                bars.remove_task(task)

        decision: Any = on_interrupted
        return await orch.execute_task_plan(
            view.plan_id, wait=True, on_interrupted=decision, on_update=on_update
        )


@app.command()
def plans(
    status: Annotated[
        list[str] | None, typer.Option(help="Only these statuses (repeatable).")
    ] = None,
    session: Annotated[str | None, typer.Option(help="Only this session's plans.")] = None,
    limit: Annotated[int, typer.Option(help="Most plans shown.")] = 30,
    config: ConfigOpt = None,
    db: DbOpt = None,
    log_level: LogOpt = None,
) -> None:
    """List plans, newest first."""
    from executor import PlanStatus

    try:
        statuses = [PlanStatus(s) for s in status] if status else None
    except ValueError:
        known = ", ".join(s.value for s in PlanStatus)
        raise fail(f"unknown status in {status}: use one of {known}", 2) from None
    orch = open_orchestrator(
        config, db, log_level=log_level, connect=False, engine=False, resume=False
    )

    async def go() -> None:
        async with orch:
            listed = await orch.list_task_plans(statuses=statuses, session_id=session, limit=limit)
        print_plans(listed.plans, console())

    run(go)


@app.command()
def show(
    plan_id: Annotated[str, typer.Argument(help="The plan.", metavar="PLAN_ID")],
    version: Annotated[int | None, typer.Option(help="A version (else the latest).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
    graph: Annotated[bool, typer.Option(help="Print the Mermaid flowchart.")] = False,
    timeline: Annotated[bool, typer.Option(help="Print the Mermaid Gantt chart.")] = False,
    config: ConfigOpt = None,
    db: DbOpt = None,
    log_level: LogOpt = None,
) -> None:
    """Show a plan's steps as a tree with their status.

    Or the plan as JSON (--json), its Mermaid flowchart (--graph) or Gantt chart
    (--timeline).
    """
    orch = open_orchestrator(
        config, db, log_level=log_level, connect=False, engine=False, resume=False
    )

    async def go() -> None:
        from server.render import render_graph, render_plan_json, render_timeline
        from server.views import plan_view

        async with orch:
            plan_obj, states = await orch.plan_with_states(plan_id, version)
            timing = await orch.plan_timing(plan_obj, states) if timeline else None
        if as_json:
            typer.echo(render_plan_json(plan_obj, states))
        elif graph:
            typer.echo(render_graph(plan_obj, states), nl=False)
        elif timeline:
            typer.echo(render_timeline(plan_obj, states, timing=timing), nl=False)
        else:
            print_plan(plan_view(plan_obj, states), console(), outputs=True)

    run(go)


@app.command()
def watch(
    plan_id: Annotated[str, typer.Argument(help="The plan.", metavar="PLAN_ID")],
    interval: Annotated[float, typer.Option(help="Seconds between looks.")] = 0.25,
    config: ConfigOpt = None,
    db: DbOpt = None,
    log_level: LogOpt = None,
) -> None:
    """Follow a plan's run (wherever it runs) until it stops."""
    orch = open_orchestrator(config, db, log_level=log_level, connect=False, resume=False)
    out = console()

    async def go() -> None:
        async with orch:
            progress = await orch.get_progress(plan_id)
            owner = await orch.run_owner(plan_id)
            if owner is not None:
                out.print(f"plan {plan_id}: {owner.describe()}")
            with run_bars(out, plan_id, progress.total) as bars:
                async for update in orch.poll_progress(plan_id, interval_s=interval):
                    p = update.progress
                    bars.stand(p.status.value, p.counts)
                    if update.event.step_id:
                        bars.step(update.event.step_id, update.event.kind.value)
            final = await orch.get_progress(plan_id)
            owner = await orch.run_owner(plan_id)
        out.print(f"plan {plan_id}: {styled_status(final.status.value)}")
        if owner is not None and not owner.holds:
            # poll_progress stopped because nobody runs the plan: say so, not "done".
            raise fail(
                f"plan {plan_id} is executing, but {owner.describe()}: nothing runs it now; "
                f"`taskorch run {plan_id}` takes it over and resumes it"
            )

    run(go)


@app.command()
def cancel(
    plan_id: Annotated[str, typer.Argument(help="The plan.", metavar="PLAN_ID")],
    wait: Annotated[
        float,
        typer.Option(min=0, help="Seconds to wait for the process that runs the plan to stop it."),
    ] = 10.0,
    config: ConfigOpt = None,
    db: DbOpt = None,
    log_level: LogOpt = None,
) -> None:
    """Cancel a plan's run and wait for it to stop.

    A run in another process is asked to stop, and this waits for it.
    Exits 0 once the run has stopped (or had already ended), 1 if its process has
    not stopped it within --wait (the request stands: it stops it when it sees it).
    """
    orch = open_orchestrator(config, db, log_level=log_level, connect=False, resume=False)

    async def go() -> RunView:
        async with orch:
            return await orch.cancel_task_execution(plan_id, wait_s=wait)

    report = run(go)
    print_report(report, console())
    if report.status.value == "executing":
        raise typer.Exit(1)


# --- stats ------------------------------------------------------------------------------------


@app.command()
def stats(
    server: Annotated[str | None, typer.Option(help="Only this server (and its tools).")] = None,
    tool: Annotated[str | None, typer.Option(help="Only tools of this name.")] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Only calls from then on: 30m, 12h, 1d, 2w, or an ISO-8601 time."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="Most tools (and servers) shown.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
    config: ConfigOpt = None,
    db: DbOpt = None,
    log_level: LogOpt = None,
) -> None:
    """Statistics per tool and per server, least reliable first.

    Calls, failures, retries and durations (p50, p95, max), then the slowest.
    """
    from executor.stats import parse_since

    try:
        start = parse_since(since) if since is not None else None
    except UserError as exc:
        raise fail(str(exc), 2) from None
    orch = open_orchestrator(
        config, db, log_level=log_level, connect=False, engine=False, resume=False
    )

    async def go() -> Stats:
        async with orch:
            return await orch.get_stats(server=server, tool=tool, since=start)

    figures = run(go)
    if as_json:
        from server.stats_view import stats_view

        typer.echo(stats_view(figures, limit=limit).model_dump_json(indent=2))
        return
    print_stats(figures, console(), limit=limit)


# --- config check -----------------------------------------------------------------------------


@config_app.command("check")
def config_check(
    config: ConfigOpt = None,
    db: DbOpt = None,
    log_level: LogOpt = None,
) -> None:
    """Connect to every configured server and report; exit 1 when any is down."""
    from server.config import resolve_config_path, resolve_db_path

    cfg = load(config, log_level)
    out = console()
    where = cfg.config_path or resolve_config_path(config)
    out.print(f"config: {where}{'' if cfg.config_path else ' (not found: empty config)'}")
    try:
        database = resolve_db_path(db, cfg)
    except TaskorchError as exc:
        raise fail(str(exc), 2) from None
    out.print(f"database: {database}")  # a URL says itself without its password

    async def go() -> list[ServerHealth]:
        from executor import Pool

        limits = cfg.limits
        pool = Pool(
            cfg.servers,
            default_timeout_s=limits.default_timeout_s,
            max_timeout_s=limits.max_timeout_s,
        )
        async with pool:
            return await pool.check()

    rows = run(go)
    if not rows:
        out.print("no servers are configured (add them under 'mcpServers')")
        return
    print_health(rows, out)
    down = [r.name for r in rows if r.status != "up"]
    if down:
        raise fail(f"{len(down)} server(s) not up: {', '.join(down)}")


# --- demo -------------------------------------------------------------------------------------


@app.command()
def demo(
    keep: Annotated[
        bool, typer.Option(help="Keep the temporary directory and print its path.")
    ] = False,
) -> None:
    """Plan, approve and run a plan on the example servers.

    A real MCP session to `taskorch serve`, as a host would hold it.
    """
    from server.demo import run_demo

    setup_logging("WARNING")
    try:
        ok = run_demo(keep=keep)
    except KeyboardInterrupt:
        raise fail("interrupted", 130) from None
    if not ok:
        raise typer.Exit(1)
