"""How the command line shows things: plans as trees, runs and lists as tables, health and reasons.

Everything a caller or a server wrote is escaped for rich's markup and cut to
a line where it could run long; `config check`'s reasons are paragraphs under
its table, so that it reads in an 80-column terminal.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from rich.console import Console

    from executor import ServerHealth
    from executor.stats import Stats
    from executor.store.glance import PlanLine, PlanPage, StepLine
    from server.service import TaskOrchestrator
    from server.views import PlanSummary, PlanView, RunView, StepView

__all__ = [
    "console",
    "print_approval",
    "print_health",
    "print_plan",
    "print_plans",
    "print_report",
    "print_stats",
    "run_bars",
    "styled_status",
]

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
    "up": "green",
    "down": "bold red",
    "starting": "yellow",
    "not_started": "dim",
}
_STDERR_LINES_SHOWN = 5


def console(stderr: bool = False) -> Console:
    """A rich console for a command's output (stdout unless `stderr`)."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def styled_status(status: str) -> str:
    """A status in rich markup, coloured by what it means."""
    style = _STATUS_STYLE.get(status, "")
    return f"[{style}]{status}[/{style}]" if style else status


def _short(value: Any, limit: int = 100) -> str:
    from server.text import one_line

    # One line, whatever the text holds, and a cut that says how much it left out.
    text = one_line(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))
    return text if len(text) <= limit else f"{text[:limit]}…[{len(text) - limit} more characters]"


async def print_approval(orch: TaskOrchestrator, view: PlanView) -> None:
    """Print the question a person approves: the same text as the MCP approval dialog."""
    import typer

    from server.approval import approval_text

    plan = await orch.load_plan(view.plan_id, view.version)
    typer.echo(approval_text(plan, await orch.catalog()))


def print_plan(view: PlanView | PlanPage, console: Console, *, outputs: bool = False) -> None:
    """A plan as a tree: each step, its tool, status, arguments, output or error; what next."""
    from rich.markup import escape
    from rich.tree import Tree

    tree = Tree(
        f"[bold]plan {view.plan_id}[/bold] v{view.version} {styled_status(view.status.value)}"
        f" — {escape(_short(view.query))}"
    )
    if view.strategy:
        tree.add(f"[italic]{escape(_short(view.strategy, 200))}[/italic]")
    for step in view.steps:
        deps = f" after {', '.join(step.depends_on)}" if step.depends_on else ""
        node = tree.add(
            f"[bold]{escape(step.id)}[/bold] {escape(step.server)}.{escape(step.tool)}"
            f" {styled_status(step.status.value)}{escape(deps)}"
        )
        node.add(f"[dim]{escape(_short(step.arguments))}[/dim]")
        shown = _shown_output(step, view.plan_id)
        if outputs and shown is not None:
            node.add(f"→ {escape(_short(shown))}")
        if step.error is not None:
            kind, message = step.error.kind.value, _short(step.error.message, 200)
            node.add(f"[red]{escape(kind)}: {escape(message)}")
    console.print(tree)
    from server.hints import next_action_for

    console.print(f"plan_hash: {view.plan_hash}  approved: {view.approved}")
    console.print(
        f"[dim]{escape(next_action_for(view.plan_id, view.status, view.plan_hash))}[/dim]"
    )


def _shown_output(step: StepView | StepLine, plan_id: str) -> Any:
    """A step's output, or for a large one the beginning its preview has, with its size."""
    from server.hints import output_uri

    preview = step.output_preview
    if preview is None:
        return step.output
    uri = output_uri(plan_id, step.id)
    return f"[{preview.size_bytes:,} bytes: {uri}] {preview.head}…"


class RunBars(Protocol):
    """What `run_bars` yields."""

    def step(self, step_id: str, kind: str) -> None:
        """Print a step's event (`step_started`, `step_succeeded`, ...) above the bar."""

    def stand(self, status: str, counts: Mapping[str, int]) -> None:
        """Show where the run stands: the plan's status and its steps' counts by status."""


@contextmanager
def run_bars(console: Console, plan_id: str, total: int) -> Iterator[RunBars]:
    """A bar for a plan's run, as `watch` shows it: events above it, the count of done steps."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console
    ) as bars:
        task = bars.add_task(f"plan {plan_id}", total=total)

        class _Bars:
            def step(self, step_id: str, kind: str) -> None:
                bars.console.print(f"  {step_id}: {kind}", highlight=False)

            def stand(self, status: str, counts: Mapping[str, int]) -> None:
                done = sum(n for s, n in counts.items() if s not in ("pending", "running"))
                bars.update(task, completed=done, description=f"plan {plan_id} {status}")

        yield _Bars()


def print_report(report: RunView, console: Console) -> None:
    """A run as a table: each step's status, tries, seconds, and output or error."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"plan {report.plan_id} v{report.version}: {report.status.value}")
    for col in ("step", "status", "tries", "seconds", "output / error"):
        table.add_column(col, overflow="fold")
    for step in report.steps:
        shown = _shown_output(step, report.plan_id)
        if step.error is not None:
            error = f"{step.error.kind.value}: {_short(step.error.message, 160)}"
            detail = f"[red]{escape(error)}[/red]"
        else:
            detail = escape(_short(shown, 160)) if shown is not None else ""
        seconds = "-" if step.duration_s is None else f"{step.duration_s:.2f}"
        table.add_row(
            step.id, styled_status(step.status.value), str(step.attempts), seconds, detail
        )
    console.print(table)
    console.print(escape(report.message))


def print_plans(plans: Sequence[PlanSummary] | Sequence[PlanLine], console: Console) -> None:
    """Plans as a table, newest first."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{len(plans)} plan(s)")
    for col in ("id", "v", "status", "steps", "created", "query"):
        table.add_column(col, overflow="fold")
    for p in plans:
        created = p.created_at.strftime("%Y-%m-%d %H:%M:%S") if p.created_at else "-"
        table.add_row(
            p.plan_id,
            str(p.version),
            styled_status(p.status.value),
            str(p.steps),
            created,
            escape(p.query[:80]),
        )
    console.print(table)


def print_stats(figures: Stats, console: Console, *, limit: int) -> None:
    """Per tool and per server figures as two tables, least reliable first."""
    from rich.markup import escape
    from rich.table import Table

    from server.stats_view import server_rows, tool_rows

    since_at = figures.since
    window = "everything recorded" if since_at is None else f"since {since_at:%Y-%m-%d %H:%M} UTC"
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


def print_health(rows: Sequence[ServerHealth], console: Console) -> None:
    """`config check`: a row per server, then why each server that is not up is not.

    The reasons are paragraphs under the table, wrapped to the terminal, so that
    neither the table nor a long reason is squeezed into a narrow column.
    """
    import textwrap

    from rich.table import Table
    from rich.text import Text

    table = Table(title="Downstream servers")
    table.add_column("server", style="bold", overflow="fold")
    table.add_column("transport")
    table.add_column("status")
    table.add_column("tools", justify="right")
    table.add_column("protocol")
    table.add_column("latency", justify="right")
    for row in rows:
        table.add_row(
            Text(row.name),
            row.transport,
            Text(row.status.replace("_", " "), style=_STATUS_STYLE.get(row.status, "")),
            "-" if row.tool_count is None else str(row.tool_count),
            row.protocol_version or "-",
            "-" if row.latency_ms is None else f"{row.latency_ms:.0f} ms",
        )
    console.print(table)
    width = max(console.width, 40)
    for row in rows:
        if row.status == "up" or not (row.error or row.stderr_tail):
            continue  # a healthy server's stderr is its own business
        why = textwrap.fill(f"{row.name}: {row.error or 'down'}", width, subsequent_indent="  ")
        console.print(Text(why, style="red"))
        for line in row.stderr_tail[-_STDERR_LINES_SHOWN:]:
            if line in (row.error or ""):
                continue  # already quoted in the error
            said = textwrap.fill(
                f"stderr: {line}", width, initial_indent="  ", subsequent_indent="  "
            )
            console.print(Text(said, style="dim"))
