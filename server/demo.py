"""`taskorch demo`: a real MCP session to `taskorch serve`, end to end, in seconds.

It writes a temporary config naming the example servers of `server.examples`
(started with this very Python, so nothing needs to be on `PATH`), starts
`taskorch serve` over stdio as a child process with a temporary database,
connects to it with the MCP SDK's `Client`, and then does what a host would:
lists the tools, creates the example plan (a fan-out, and data flowing between
steps through `${step.path}` references), approves it by its hash, executes it
while showing the progress notifications, and shows the result. No network;
everything lives in a temporary directory removed at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from importlib.resources import files
from pathlib import Path
from typing import Any

import anyio

__all__ = ["demo_config", "demo_plan", "repo_root", "run_demo"]

EXAMPLE_SERVERS = {
    "text": "server.examples.text_server",
    "stats": "server.examples.stats_server",
    "clock": "server.examples.clock_server",
    "notes": "server.examples.notes_server",
}
"""The example servers and their modules."""


def repo_root() -> Path:
    """The directory holding the `server` package: the checkout, or where it is installed."""
    return Path(__file__).resolve().parent.parent


def demo_config(workdir: Path, python: str = sys.executable) -> dict[str, Any]:
    """A config (Claude Desktop `mcpServers` format) running the example servers with `python`.

    The notes server keeps its notes under `workdir/notes`.
    """
    servers: dict[str, Any] = {}
    for name, module in EXAMPLE_SERVERS.items():
        args = ["-m", module]
        if name == "notes":
            args += ["--data-dir", str(workdir / "notes")]
        servers[name] = {"command": python, "args": args, "cwd": str(repo_root())}
    return {"mcpServers": servers}


def demo_plan() -> dict[str, Any]:
    """The example plan, `server/examples/plan.json` (package data: it ships in the wheel)."""
    text = files("server.examples").joinpath("plan.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def child_env() -> dict[str, str]:
    """The environment for child processes: ours, with `server` importable from a checkout too."""
    env = dict(os.environ)
    root = str(repo_root())
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    return env


def run_demo(*, keep: bool = False) -> bool:
    """Run the demo; returns whether the plan completed."""
    workdir = Path(tempfile.mkdtemp(prefix="taskorch-demo-"))
    try:
        return anyio.run(_demo, workdir)
    finally:
        if keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


async def _demo(workdir: Path) -> bool:
    from mcp import Client, StdioServerParameters
    from mcp.client.stdio import stdio_client
    from rich.console import Console
    from rich.markup import escape

    console = Console(highlight=False)
    t0 = time.perf_counter()
    config_path = workdir / "config.json"
    config_path.write_text(json.dumps(demo_config(workdir), indent=2), encoding="utf-8")
    db_path = workdir / "taskorch.db"
    console.rule("[bold]taskorch demo")
    console.print(f"config: {config_path} (the example servers text, stats, clock, notes)")
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "server.cli", "serve", "--config", str(config_path), "--db", str(db_path)],
        env=child_env(),
        cwd=str(repo_root()),
    )
    errlog_path = workdir / "serve.stderr"
    with errlog_path.open("w", encoding="utf-8") as errlog:
        try:
            async with Client(stdio_client(params, errlog=errlog)) as client:
                return await _session(client, console, workdir, t0)
        except Exception:
            console.print("[red]the demo failed; taskorch serve said:[/red]")
            errlog.flush()
            console.print(escape(errlog_path.read_text(encoding="utf-8")[-4000:]))
            raise


def _result(result: Any) -> dict[str, Any]:
    if result.is_error:
        text = " ".join(getattr(c, "text", "") for c in result.content)
        raise RuntimeError(f"tool error: {text}")
    data: dict[str, Any] = result.structured_content or {}
    return data


async def _session(client: Any, console: Any, workdir: Path, t0: float) -> bool:
    from rich.markup import escape
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table
    from rich.tree import Tree

    info = client.server_info
    console.print(
        f"connected to [bold]{info.name if info else 'taskorch'}[/bold] over stdio, "
        f"protocol {client.protocol_version}"
    )
    own = await client.list_tools()
    console.print("taskorch's tools: " + ", ".join(t.name for t in own.tools))

    console.rule("1. the downstream tools")
    tools = _result(await client.call_tool("list_tools", {}))
    by_server: dict[str, list[str]] = {}
    for t in tools["tools"]:
        by_server.setdefault(t["server"], []).append(t["tool"])
    for server, names in sorted(by_server.items()):
        console.print(f"  [bold]{server}[/bold]: {', '.join(names)}")

    console.rule("2. create_plan (steps written by the caller: no model needed)")
    spec = demo_plan()
    plan = _result(
        await client.call_tool(
            "create_plan",
            {"query": spec["query"], "steps": spec["steps"], "strategy": spec.get("strategy", "")},
        )
    )
    tree = Tree(f"[bold]plan {plan['plan_id']}[/bold] — {plan['status']}")
    for step in plan["steps"]:
        after = f"  [dim]after {', '.join(step['depends_on'])}[/dim]" if step["depends_on"] else ""
        tree.add(f"[bold]{step['id']}[/bold] {step['server']}.{step['tool']}{after}")
    console.print(tree)
    console.print(f"plan_hash {plan['plan_hash']}")

    console.rule("3. confirm_plan (approval binds to the plan_hash)")
    confirmed = _result(
        await client.call_tool(
            "confirm_plan", {"plan_id": plan["plan_id"], "plan_hash": plan["plan_hash"]}
        )
    )
    console.print(f"status: {confirmed['status']}, approved: {confirmed['approved']}")

    console.rule("4. execute_plan (progress notifications as they arrive)")
    with Progress(
        TextColumn("{task.description:<48}"),
        BarColumn(),
        TextColumn("{task.completed:.2f}/{task.total:.0f}"),
        TimeElapsedColumn(),
        console=console,
    ) as bars:
        task = bars.add_task("starting", total=len(plan["steps"]))

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            bars.update(task, completed=progress, total=total, description=escape(message or ""))
            if message:
                bars.console.print(f"  [dim]{escape(message)}[/dim]")

        report = _result(
            await client.call_tool(
                "execute_plan", {"plan_id": plan["plan_id"]}, progress_callback=on_progress
            )
        )
    table = Table(title=f"result: {report['status']}")
    for col in ("step", "status", "output"):
        table.add_column(col, overflow="fold")
    for step in report["steps"]:
        out = json.dumps(step["output"], ensure_ascii=False)
        table.add_row(step["id"], step["status"], escape(out[:90] + ("…" if len(out) > 90 else "")))
    console.print(table)

    console.rule("5. the digest the last step saved")
    saved = next((s for s in report["steps"] if s["id"] == "save"), None)
    if saved is not None and saved["output"]:
        note = workdir / "notes" / f"{saved['output']['key']}.note"
        console.print(f"[bold]{saved['output']['key']}[/bold]")
        console.print(escape(note.read_text(encoding="utf-8")))

    console.rule("6. the plan as a resource: plan://{id}/graph (Mermaid)")
    graph = await client.read_resource(f"plan://{plan['plan_id']}/graph")
    text = graph.contents[0].text
    console.print(escape("\n".join(text.splitlines()[:8]) + "\n    ..."))

    progress = _result(await client.call_tool("get_progress", {"plan_id": plan["plan_id"]}))
    console.rule()
    console.print(
        f"{report['status']}: {progress['completed']}/{progress['total']} steps in "
        f"{progress['elapsed_s']:.2f} s of execution; demo took {time.perf_counter() - t0:.1f} s"
    )
    return bool(report["status"] == "completed")
