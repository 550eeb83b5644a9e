"""The `taskorch` command line.

Every command takes `--config PATH` (else `TASKORCH_CONFIG`, else the default
location) and `--db PATH` (else `TASKORCH_DB`, else the config's `database`,
else the default location); `server.config` resolves both.

```
taskorch serve [--http [--host 127.0.0.1] [--port 8765]]   (token in $TASKORCH_TOKEN)
taskorch plan "query" [--steps plan.json]     taskorch run plan.json | PLAN_ID [--yes]
taskorch plans   taskorch show ID   taskorch watch ID   taskorch confirm ID   taskorch cancel ID
taskorch stats [--server S] [--since 1d]      taskorch config check      taskorch demo
```

Imports are kept inside the commands: `taskorch serve` must answer its first
`tools/list` quickly, so nothing it does not need (rich, the planner's model
library) is loaded at start.
"""

from __future__ import annotations

import atexit
import gc
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from executor._utils import leaf_exceptions
from executor.errors import TaskorchError, UserError

if TYPE_CHECKING:
    from rich.console import Console

    from executor.redact import Scrubber
    from server.config import TaskorchConfig
    from server.http_guard import HttpLimits
    from server.orchestrator import ProgressUpdate, TaskOrchestrator
    from server.views import ExecutionReport, PlanView

__all__ = ["app", "main", "serve_fast_options"]

TOKEN_ENV_VAR = "TASKORCH_TOKEN"
"""Environment variable holding the bearer token of `serve --http` when `--token` is not given."""

app = typer.Typer(
    name="taskorch",
    help="Plan, approve and run multi-step tool workflows across MCP servers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="Config file (else $TASKORCH_CONFIG, else the default location).",
        dir_okay=False,
    ),
]
DbOpt = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="SQLite file or postgresql:// URL (else $TASKORCH_DB, else the config's, else "
        "the default).",
    ),
]
LogOpt = Annotated[
    str | None,
    typer.Option("--log-level", help="DEBUG, INFO, WARNING (default) or ERROR; logs go to stderr."),
]

_T = TypeVar("_T")


def main() -> None:
    """Entry point of the `taskorch` console script."""
    args = sys.argv[1:]
    if args[:1] == ["serve"] and (options := serve_fast_options(args[1:])) is not None:
        # Typer's parsing adds to `serve`'s cold start (it builds the whole command
        # tree and a pydantic adapter per option); a host starts the server often.
        try:
            serve(**options)
        except typer.BadParameter as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except typer.Exit as exc:
            sys.exit(exc.exit_code)
        return
    app()


_SERVE_VALUE_OPTIONS = {
    "--config": "config",
    "--db": "db",
    "--host": "host",
    "--port": "port",
    "--token": "token",
    "--allow-host": "allow_host",
    "--log-level": "log_level",
    "--max-connections": "max_connections",
    "--request-timeout": "request_timeout",
    "--keep-alive": "keep_alive",
}
_SERVE_FLAGS = {"--http": "http", "--insecure-no-token": "insecure_no_token"}
_SERVE_INT_OPTIONS = ("port", "max_connections", "keep_alive")


def serve_fast_options(args: Sequence[str]) -> dict[str, Any] | None:
    """The keyword arguments of `serve` for plain, valid `serve` arguments, else `None`.

    Only the unambiguous forms are read (`--opt VALUE`, `--opt=VALUE`, `--http`,
    each option at most once but `--allow-host`); anything else (`--help`, an
    unknown or repeated option, a port that is not a number, a directory as the
    config) gives `None`, and typer parses it and reports the problem as usual.
    """
    options: dict[str, Any] = {}
    allow_host: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        flag = _SERVE_FLAGS.get(arg)
        if flag is not None and flag not in options:
            options[flag] = True
            continue
        name, eq, value = arg.partition("=")
        key = _SERVE_VALUE_OPTIONS.get(name)
        if key is None or (key in options and key != "allow_host"):
            return None
        if not eq:
            if i == len(args):
                return None
            value = args[i]
            i += 1
        if not value or value.startswith("-"):
            return None
        if key == "allow_host":
            allow_host.append(value)
            continue
        parsed = _fast_value(key, value)
        if parsed is None:
            return None
        options[key] = parsed
    if allow_host:
        options["allow_host"] = allow_host
    return options


def _fast_value(key: str, value: str) -> Any:
    """`value` as `serve`'s parameter `key` takes it, or `None` when typer should judge it."""
    if key in _SERVE_INT_OPTIONS:
        return int(value) if value.isdigit() else None
    if key == "request_timeout":
        try:
            return float(value)
        except ValueError:
            return None
    if key == "config":
        path = Path(value)
        return None if path.is_dir() else path
    if key == "log_level" and value.upper() not in _LOG_LEVELS:
        return None
    return value


# --- plumbing ---------------------------------------------------------------------------------


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _setup_logging(
    level: str | None, config_level: str | None = None, *, secrets: Scrubber | None = None
) -> None:
    from executor.logguard import LogGuard

    chosen = (level or config_level or "WARNING").upper()
    if chosen not in _LOG_LEVELS:
        raise typer.BadParameter(f"unknown log level {level!r}: use DEBUG, INFO, WARNING or ERROR")
    # stderr only: on stdio, stdout belongs to the protocol.
    logging.basicConfig(
        level=chosen,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    # What servers send reaches the log through many libraries: scrub and bound it all here.
    guard = LogGuard(secrets)
    for handler in logging.getLogger().handlers:
        handler.addFilter(guard)
    atexit.register(guard.report)  # before logging's own exit hook, registered earlier


def _secrets(cfg: TaskorchConfig, *extra: str | None) -> Scrubber:
    from executor.redact import Scrubber

    return Scrubber.for_servers(cfg.servers.values(), extra=[e for e in extra if e])


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def _run(fn: Callable[[], Awaitable[_T]]) -> _T:
    import anyio

    try:
        return anyio.run(fn)
    except BaseExceptionGroup as group:
        # One real error inside task groups: report it like a bare one.
        leaves = leaf_exceptions(group)
        inner = leaves[0] if len(leaves) == 1 else None
        if isinstance(inner, UserError):
            raise _fail(str(inner), 2) from None
        if isinstance(inner, TaskorchError):
            raise _fail(str(inner)) from None
        if isinstance(inner, typer.Exit):
            raise inner from None
        raise
    except UserError as exc:
        raise _fail(str(exc), 2) from None
    except TaskorchError as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        raise _fail("interrupted", 130) from None


def _orchestrator(
    config: Path | None,
    db: str | None,
    *,
    log_level: str | None = None,
    resume: bool = True,
    token: str | None = None,
) -> TaskOrchestrator:
    from server.config import load_config, resolve_db_path
    from server.orchestrator import TaskOrchestrator

    try:
        cfg = load_config(config)
    except TaskorchError as exc:
        raise _fail(str(exc), 2) from None
    _setup_logging(log_level, cfg.log_level, secrets=_secrets(cfg, token))
    secrets = (token,) if token else ()
    return TaskOrchestrator(cfg, db_path=resolve_db_path(db, cfg), resume=resume, secrets=secrets)


def _pause_gc() -> Callable[[], None]:
    """Stop the cyclic garbage collector until the returned function is called.

    Start-up allocates a few hundred thousand objects (the SDK's and taskorch's
    pydantic models, the tools' JSON schemas) and frees almost none of them, so
    collecting during it is wasted time. Resuming freezes what start-up made
    (`gc.freeze`), so later collections do not walk those objects again during
    the first requests; the cyclic leftovers of start-up are kept for good, once.
    Calling the function twice is harmless.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    resumed = False

    def resume() -> None:
        nonlocal resumed
        if resumed:
            return
        resumed = True
        if was_enabled:
            gc.freeze()
            gc.enable()

    return resume


def _console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


# --- serve ------------------------------------------------------------------------------------


@app.command()
def serve(
    config: ConfigOpt = None,
    db: DbOpt = None,
    http: Annotated[bool, typer.Option("--http", help="Serve streamable HTTP at /mcp.")] = False,
    host: Annotated[str, typer.Option(help="Address to bind with --http.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port with --http.")] = 8765,
    token: Annotated[
        str | None,
        typer.Option(
            help="Bearer token every HTTP request must carry. Prefer $TASKORCH_TOKEN: "
            "`ps` shows command lines to every user of the machine."
        ),
    ] = None,
    allow_host: Annotated[
        list[str] | None,
        typer.Option("--allow-host", help="Another Host header value to accept (repeatable)."),
    ] = None,
    insecure_no_token: Annotated[
        bool,
        typer.Option(
            "--insecure-no-token",
            help="Serve HTTP beyond loopback without a token: anyone who reaches the port "
            "can run tools.",
        ),
    ] = False,
    max_connections: Annotated[
        int | None,
        typer.Option(
            help="HTTP connections open at once (default 100); past it the oldest one "
            "not being answered is closed."
        ),
    ] = None,
    request_timeout: Annotated[
        float | None,
        typer.Option(help="Seconds an HTTP client has to send a whole request (default 10)."),
    ] = None,
    keep_alive: Annotated[
        int | None,
        typer.Option(help="Seconds an idle HTTP connection is kept open (default 5)."),
    ] = None,
    log_level: LogOpt = None,
) -> None:
    """Serve taskorch as an MCP server: stdio (default) or streamable HTTP."""
    resume_gc = _pause_gc()
    try:
        bearer = token if token is not None else os.environ.get(TOKEN_ENV_VAR) or None
        limits = None
        if http:
            from server.http_guard import check_bind

            limits = _http_limits(max_connections, request_timeout, keep_alive)
            try:
                check_bind(host, bearer, allow_no_token=insecure_no_token)
            except UserError as exc:
                raise _fail(str(exc), 2) from None
        orch = _orchestrator(config, db, log_level=log_level, token=bearer)

        async def go() -> None:
            from server.app import build_server, serve_http, serve_stdio

            async with orch:
                server = build_server(orch)
                resume_gc()
                if http:
                    logging.getLogger(__name__).warning(
                        "taskorch serving streamable HTTP at http://%s:%d/mcp%s",
                        host,
                        port,
                        " (bearer token required)" if bearer else "",
                    )
                    await serve_http(
                        server,
                        host=host,
                        port=port,
                        token=bearer,
                        allowed_hosts=allow_host or (),
                        limits=limits,
                        allow_no_token=insecure_no_token,
                    )
                else:
                    await serve_stdio(server)

        _run(go)
    finally:
        resume_gc()


_HTTP_LIMIT_OPTIONS = {
    "max_connections": "--max-connections",
    "request_timeout_s": "--request-timeout",
    "keep_alive_s": "--keep-alive",
}


def _http_limits(
    max_connections: int | None, request_timeout: float | None, keep_alive: int | None
) -> HttpLimits:
    from pydantic import ValidationError

    from server.http_guard import HttpLimits

    given = {
        "max_connections": max_connections,
        "request_timeout_s": request_timeout,
        "keep_alive_s": keep_alive,
    }
    try:
        return HttpLimits.model_validate({k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        error = exc.errors()[0]
        option = _HTTP_LIMIT_OPTIONS.get(str(error["loc"][0]), str(error["loc"][0]))
        raise typer.BadParameter(f"{option}: {error['msg']}") from None


# --- plans ------------------------------------------------------------------------------------


def _read_plan_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise _fail(f"{path}: cannot read the plan file: {exc.strerror or exc}", 2) from None
    except ValueError as exc:
        raise _fail(f"{path}: not valid JSON: {exc}", 2) from None
    if isinstance(data, list):
        data = {"steps": data}
    if not isinstance(data, dict) or not isinstance(data.get("steps"), list):
        raise _fail(
            f"{path}: a plan file is a JSON object with a 'steps' array "
            "(and optionally 'query', 'strategy', 'agent', 'session_id')",
            2,
        )
    return data


@app.command()
def plan(
    query: Annotated[str, typer.Argument(help="What the plan should do.")],
    steps: Annotated[
        Path | None,
        typer.Option(help="A JSON file with the steps (no model needed); else the planner."),
    ] = None,
    agent: Annotated[str | None, typer.Option(help="The agent whose policy applies.")] = None,
    session: Annotated[str | None, typer.Option(help="Session id grouping plans.")] = None,
    config: ConfigOpt = None,
    db: DbOpt = None,
    log_level: LogOpt = None,
) -> None:
    """Create a plan for a query and show it (approve it with `confirm` or `run`)."""
    orch = _orchestrator(config, db, log_level=log_level, resume=False)
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
            _print_plan(view)
            if not view.approved:
                await _print_approval(orch, view)

    _run(go)


@app.command()
def confirm(
    plan_id: Annotated[str, typer.Argument(help="The plan.")],
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
    orch = _orchestrator(config, db, log_level=log_level, resume=False)

    async def go() -> None:
        async with orch:
            view = await orch.confirm_task_plan(plan_id, not reject, plan_hash, reason)
        _print_plan(view)

    _run(go)


@app.command()
def run(
    target: Annotated[str, typer.Argument(help="A plan JSON file, or the id of a stored plan.")],
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
) -> None:
    """Run a plan with live progress bars: a plan file (created, approved, run) or a stored id.

    A stored plan left executing by a process that is gone is taken over and resumed;
    one that another live process runs is followed to its end.
    """
    if on_interrupted not in (None, "rerun", "skip"):
        raise _fail("--on-interrupted takes 'rerun' or 'skip'", 2)
    # Not resume=True: this command runs its own plan, and exits when that ends; other
    # plans it resumed would stop (as after a crash) when it does.
    orch = _orchestrator(config, db, log_level=log_level, resume=False)
    path = Path(target)
    data = _read_plan_file(path) if path.suffix == ".json" or path.is_file() else None
    console = _console()

    async def go() -> ExecutionReport:
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
            _print_plan(view, console)
            pid = view.plan_id
            if not view.approved and view.status.value in ("draft", "awaiting_confirmation"):
                if not yes:
                    await _print_approval(orch, view)
                if not yes and not typer.confirm(f"Run plan {pid}?", default=False):
                    raise _fail(
                        f"not approved: plan {pid} still awaits confirmation; "
                        f"`taskorch confirm {pid}` approves it, "
                        f"`taskorch confirm {pid} --reject` rejects it"
                    )
                await orch.confirm_task_plan(pid, True, view.plan_hash, "approved (cli)")
            if view.status.value == "executing":
                owner = await orch.run_owner(pid)
                if owner is not None and not owner.holds:
                    console.print(f"plan {pid}: {owner.describe()}; taking the run over")
                elif owner is not None and not owner.here:
                    console.print(f"plan {pid}: {owner.describe()}; following it")
            return await _execute_with_bars(orch, view, console, on_interrupted)

    report = _run(go)
    _print_report(report, console)
    if report.status.value != "completed":
        raise typer.Exit(1)


async def _execute_with_bars(
    orch: TaskOrchestrator, view: PlanView, console: Console, on_interrupted: str | None
) -> ExecutionReport:
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
    with Progress(*columns, console=console, transient=False) as bars:
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
    from executor.status import PlanStatus

    try:
        statuses = [PlanStatus(s) for s in status] if status else None
    except ValueError:
        known = ", ".join(s.value for s in PlanStatus)
        raise _fail(f"unknown status in {status}: use one of {known}", 2) from None
    orch = _orchestrator(config, db, log_level=log_level, resume=False)

    async def go() -> None:
        from rich.table import Table

        async with orch:
            listed = await orch.list_task_plans(statuses=statuses, session_id=session, limit=limit)
        table = Table(title=f"{listed.count} plan(s)")
        for col in ("id", "v", "status", "steps", "created", "query"):
            table.add_column(col, overflow="fold")
        for p in listed.plans:
            created = p.created_at.strftime("%Y-%m-%d %H:%M:%S") if p.created_at else "-"
            table.add_row(
                p.plan_id,
                str(p.version),
                _styled_status(p.status.value),
                str(p.steps),
                created,
                p.query[:80],
            )
        _console().print(table)

    _run(go)


@app.command()
def show(
    plan_id: Annotated[str, typer.Argument(help="The plan.")],
    version: Annotated[int | None, typer.Option(help="A version (else the latest).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
    graph: Annotated[bool, typer.Option(help="Print the Mermaid flowchart.")] = False,
    timeline: Annotated[bool, typer.Option(help="Print the Mermaid Gantt chart.")] = False,
    config: ConfigOpt = None,
    db: DbOpt = None,
    log_level: LogOpt = None,
) -> None:
    """Show a plan: its steps as a tree with their status (or --json, --graph, --timeline)."""
    orch = _orchestrator(config, db, log_level=log_level, resume=False)

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
            _print_plan(plan_view(plan_obj, states), outputs=True)

    _run(go)


@app.command()
def watch(
    plan_id: Annotated[str, typer.Argument(help="The plan.")],
    interval: Annotated[float, typer.Option(help="Seconds between looks.")] = 0.25,
    config: ConfigOpt = None,
    db: DbOpt = None,
    log_level: LogOpt = None,
) -> None:
    """Follow a plan's run (wherever it runs) until it stops."""
    orch = _orchestrator(config, db, log_level=log_level, resume=False)
    console = _console()

    async def go() -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        async with orch:
            progress = await orch.get_progress(plan_id)
            owner = await orch.run_owner(plan_id)
            if owner is not None:
                console.print(f"plan {plan_id}: {owner.describe()}")
            with Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console
            ) as bars:
                task = bars.add_task(f"plan {plan_id}", total=progress.total)
                async for update in orch.poll_progress(plan_id, interval_s=interval):
                    p = update.progress
                    done = sum(n for s, n in p.counts.items() if s not in ("pending", "running"))
                    bars.update(task, completed=done, description=f"plan {plan_id} {p.status}")
                    if update.event.step_id:
                        bars.console.print(
                            f"  {update.event.step_id}: {update.event.kind.value}", highlight=False
                        )
            final = await orch.get_progress(plan_id)
            owner = await orch.run_owner(plan_id)
        console.print(f"plan {plan_id}: {_styled_status(final.status.value)}")
        if owner is not None and not owner.holds:
            # poll_progress stopped because nobody runs the plan: say so, not "done".
            raise _fail(
                f"plan {plan_id} is executing, but {owner.describe()}: nothing runs it now; "
                f"`taskorch run {plan_id}` takes it over and resumes it"
            )

    _run(go)


@app.command()
def cancel(
    plan_id: Annotated[str, typer.Argument(help="The plan.")],
    wait: Annotated[
        float,
        typer.Option(min=0, help="Seconds to wait for the process that runs the plan to stop it."),
    ] = 10.0,
    config: ConfigOpt = None,
    db: DbOpt = None,
    log_level: LogOpt = None,
) -> None:
    """Cancel a plan's run; a run in another process is asked to stop, and this waits for it.

    Exits 0 once the run has stopped (or had already ended), 1 if its process has
    not stopped it within --wait (the request stands: it stops it when it sees it).
    """
    orch = _orchestrator(config, db, log_level=log_level, resume=False)

    async def go() -> ExecutionReport:
        async with orch:
            return await orch.cancel_task_execution(plan_id, wait_s=wait)

    report = _run(go)
    _print_report(report, _console())
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
    """Performance statistics per tool and per server, least reliable and slowest first."""
    from executor.stats import parse_since

    try:
        start = parse_since(since) if since is not None else None
    except UserError as exc:
        raise _fail(str(exc), 2) from None
    orch = _orchestrator(config, db, log_level=log_level, resume=False)

    async def go() -> Any:
        async with orch:
            return await orch.get_stats(server=server, tool=tool, since=start)

    figures = _run(go)
    from server.stats_view import server_rows, stats_view, tool_rows

    if as_json:
        typer.echo(stats_view(figures, limit=limit).model_dump_json(indent=2))
        return
    from rich.markup import escape
    from rich.table import Table

    since_at = figures.since
    window = "everything recorded" if since_at is None else f"since {since_at:%Y-%m-%d %H:%M} UTC"
    console = _console()
    tools = Table(title=f"tools ({window}): least reliable, then slowest, first")
    for col in ("tool", "calls", "ok", "failed", "retries", "p50", "p95", "max", "last failure"):
        tools.add_column(col, overflow="fold")
    for row in tool_rows(figures)[:limit]:
        tools.add_row(*(escape(cell) for cell in row))
    servers = Table(title="servers: least reliable first")
    for col in ("server", "calls", "failed", "fail %", "restarts", "down", "last down because"):
        servers.add_column(col, overflow="fold")
    for row in server_rows(figures)[:limit]:
        servers.add_row(*(escape(cell) for cell in row))
    console.print(tools)
    if len(figures.tools) > limit:
        console.print(f"{len(figures.tools) - limit} more tool(s) not shown (--limit)")
    console.print(servers)
    if not figures.tools and not figures.servers:
        console.print("nothing recorded yet: run a plan first")


# --- config check -----------------------------------------------------------------------------


@config_app.command("check")
def config_check(
    config: ConfigOpt = None,
    db: DbOpt = None,
    log_level: LogOpt = None,
) -> None:
    """Connect to every configured server and report; exit 1 when any is down."""
    from server.config import load_config, resolve_config_path, resolve_db_path

    try:
        cfg = load_config(config)
    except TaskorchError as exc:
        raise _fail(str(exc), 2) from None
    _setup_logging(log_level, cfg.log_level, secrets=_secrets(cfg))
    console = _console()
    where = cfg.config_path or resolve_config_path(config)
    console.print(f"config: {where}{'' if cfg.config_path else ' (not found: empty config)'}")
    console.print(f"database: {resolve_db_path(db, cfg)}")

    async def go() -> list[Any]:
        from executor.downstream import Pool

        limits = cfg.limits
        pool = Pool(
            cfg.servers,
            default_timeout_s=limits.default_timeout_s,
            max_timeout_s=limits.max_timeout_s,
        )
        async with pool:
            return await pool.check()

    rows = _run(go)
    if not rows:
        console.print("no servers are configured (add them under 'mcpServers')")
        return
    from executor.downstream import render_health_table

    console.print(render_health_table(rows))
    down = [r.name for r in rows if r.status != "up"]
    if down:
        raise _fail(f"{len(down)} server(s) not up: {', '.join(down)}")


# --- demo -------------------------------------------------------------------------------------


@app.command()
def demo(
    keep: Annotated[
        bool, typer.Option(help="Keep the temporary directory and print its path.")
    ] = False,
) -> None:
    """A real MCP session to `taskorch serve` with the example servers: plan, approve, run."""
    from server.demo import run_demo

    _setup_logging("WARNING")
    try:
        ok = run_demo(keep=keep)
    except KeyboardInterrupt:
        raise _fail("interrupted", 130) from None
    if not ok:
        raise typer.Exit(1)


# --- printing ---------------------------------------------------------------------------------

_STATUS_STYLE = {
    "pending": "dim",
    "running": "cyan",
    "succeeded": "green",
    "completed": "green",
    "confirmed": "green",
    "failed": "red",
    "rejected": "red",
    "cancelled": "yellow",
    "skipped": "dim",
    "interrupted": "magenta",
    "awaiting_confirmation": "yellow",
    "executing": "cyan",
    "draft": "dim",
}


def _styled_status(status: str) -> str:
    style = _STATUS_STYLE.get(status, "")
    return f"[{style}]{status}[/{style}]" if style else status


def _short(value: Any, limit: int = 100) -> str:
    from server.approval import one_line

    # One line, whatever the text holds, and a cut that says how much it left out.
    text = one_line(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))
    return text if len(text) <= limit else f"{text[:limit]}…[{len(text) - limit} more characters]"


async def _print_approval(orch: TaskOrchestrator, view: PlanView) -> None:
    """Print the question a person approves: the same text as the MCP approval dialog."""
    from server.approval import approval_text

    plan = await orch.load_plan(view.plan_id, view.version)
    typer.echo(approval_text(plan, await orch.catalog()))


def _print_plan(view: PlanView, console: Console | None = None, *, outputs: bool = False) -> None:
    from rich.markup import escape
    from rich.tree import Tree

    console = console or _console()
    tree = Tree(
        f"[bold]plan {view.plan_id}[/bold] v{view.version} {_styled_status(view.status.value)}"
        f" — {escape(_short(view.query))}"
    )
    if view.strategy:
        tree.add(f"[italic]{escape(_short(view.strategy, 200))}[/italic]")
    for step in view.steps:
        deps = f" after {', '.join(step.depends_on)}" if step.depends_on else ""
        node = tree.add(
            f"[bold]{escape(step.id)}[/bold] {escape(step.server)}.{escape(step.tool)}"
            f" {_styled_status(step.status.value)}{escape(deps)}"
        )
        node.add(f"[dim]{escape(_short(step.arguments))}[/dim]")
        if outputs and _shown_output(step) is not None:
            node.add(f"→ {escape(_short(_shown_output(step)))}")
        if step.error is not None:
            node.add(f"[red]{escape(step.error.kind)}: {escape(_short(step.error.message, 200))}")
    console.print(tree)
    console.print(f"plan_hash: {view.plan_hash}  approved: {view.approved}")
    if view.next_action:
        console.print(f"[dim]{escape(view.next_action)}[/dim]")


def _shown_output(step: Any) -> Any:
    """A step's output, or for a large one the beginning its preview has, with its size."""
    preview = step.output_preview
    if preview is None:
        return step.output
    return f"[{preview.size_bytes:,} bytes: {preview.uri}] {preview.head}…"


def _print_report(report: ExecutionReport, console: Console) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"plan {report.plan_id} v{report.version}: {report.status.value}")
    for col in ("step", "status", "tries", "seconds", "output / error"):
        table.add_column(col, overflow="fold")
    for step in report.steps:
        detail = (
            f"[red]{escape(step.error.kind)}: {escape(_short(step.error.message, 160))}[/red]"
            if step.error is not None
            else escape(_short(_shown_output(step), 160))
            if _shown_output(step) is not None
            else ""
        )
        seconds = "-" if step.duration_s is None else f"{step.duration_s:.2f}"
        table.add_row(
            step.id, _styled_status(step.status.value), str(step.attempts), seconds, detail
        )
    console.print(table)
    console.print(escape(report.message))


if __name__ == "__main__":
    main()
