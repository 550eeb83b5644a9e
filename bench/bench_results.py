"""Large results through `taskorch serve`: bytes a host receives, peak memory, database size.

A host (the SDK's `Client` over stdio) runs plans whose steps read files with
the npm filesystem server: 1 step reading 5 MB, then 4 steps in parallel each
reading its own 50 MB file. Each scenario runs in a fresh `taskorch serve`
process on a fresh database. Figures per scenario:

- `answer_bytes`: the `execute_plan` tool result as JSON, as it crosses the wire;
- `peak_rss_mb`: the serve process's peak resident memory (`VmHWM`), read just
  before it is stopped, and `peak_rss_per_result_mb`, that over the MB of results;
- `db_bytes_per_stored_mb`: the database's growth over the MB of file content
  the run read, measured once `serve` has exited (its WAL checkpointed into the
  file), from the size it had before the run (file and WAL).

`TASKORCH_BENCH_ROOT` runs `serve` from another checkout (its code on
`PYTHONPATH`, its directory as cwd), to measure an older version the same way:
`TASKORCH_BENCH_ROOT=/tmp/main .venv/bin/python -m bench results`.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import psutil
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp_types import CallToolResult

from server.demo import child_env, repo_root

MB = 1024 * 1024
SCENARIOS = (("1x5MB", 1, 5 * MB), ("4x50MB", 4, 50 * MB))
FILESYSTEM = repo_root() / "tests" / "npm" / "node_modules" / ".bin" / "mcp-server-filesystem"


def _write_file(path: Path, size: int, seed: int) -> None:
    line = f"{seed:02d} the quick brown fox jumps over the lazy dog 0123456789\n".encode()
    with path.open("wb") as f:
        whole, rest = divmod(size, len(line))
        f.write(line * whole + line[:rest])


def _vm_hwm_mb(pid: int) -> float:
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        if row.startswith("VmHWM:"):
            return int(row.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc: this bench needs Linux")


def _serve_pid(db: Path) -> int:
    for proc in psutil.Process().children(recursive=True):
        try:
            if str(db) in proc.cmdline():
                return proc.pid
        except psutil.Error:
            continue
    raise RuntimeError("the taskorch serve process was not found")


def _db_bytes(db: Path) -> int:
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*") if p.is_file())


def _structured(result: CallToolResult) -> dict[str, Any]:
    if result.is_error:
        raise RuntimeError(" ".join(getattr(c, "text", "") for c in result.content))
    content: dict[str, Any] | None = result.structured_content
    assert content is not None
    return content


async def _scenario(workdir: Path, name: str, count: int, size: int) -> dict[str, Any]:
    root = Path(os.environ.get("TASKORCH_BENCH_ROOT") or repo_root())
    files = workdir / name
    files.mkdir()
    paths = [files / f"f{i}.txt" for i in range(count)]
    for i, path in enumerate(paths):
        _write_file(path, size, i)
    config = workdir / f"{name}.json"
    servers = {"fs": {"command": str(FILESYSTEM), "args": [str(files)]}}
    config.write_text(json.dumps({"mcpServers": servers}), encoding="utf-8")
    db = workdir / f"{name}.db"
    env = child_env()
    env["PYTHONPATH"] = str(root)
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "server.cli", "serve", "--config", str(config), "--db", str(db)],
        env=env,
        cwd=str(root),
    )
    steps = [
        {"id": f"r{i}", "server": "fs", "tool": "read_text_file", "arguments": {"path": str(p)}}
        for i, p in enumerate(paths)
    ]
    with (workdir / "stderr.log").open("a", encoding="utf-8") as errlog:
        async with Client(stdio_client(params, errlog=errlog)) as client:
            created = _structured(
                await client.call_tool("create_plan", {"query": name, "steps": steps})
            )
            pid = _serve_pid(db)
            rss_before = _vm_hwm_mb(pid)
            db_before = _db_bytes(db)
            plan_id = created["plan_id"]
            await client.call_tool(
                "confirm_plan", {"plan_id": plan_id, "plan_hash": created["plan_hash"]}
            )
            t0 = time.perf_counter()
            result = await client.call_tool("execute_plan", {"plan_id": plan_id})
            seconds = time.perf_counter() - t0
            report = _structured(result)
            errors = {
                s["id"]: (s.get("error") or {}).get("message", "")[:300]
                for s in report["steps"]
                if s["status"] != "succeeded"
            }
            answer = len(result.model_dump_json(by_alias=True, exclude_none=True).encode())
            peak = _vm_hwm_mb(pid)
    # Measured once `serve` has exited: its last close checkpoints the WAL into the file.
    growth = _db_bytes(db) - db_before
    stored_mb = count * size / MB
    return {
        f"{name}_answer_bytes": answer,
        f"{name}_peak_rss_mb": round(peak, 1),
        f"{name}_rss_at_start_mb": round(rss_before, 1),
        f"{name}_peak_rss_per_result_mb": round((peak - rss_before) / stored_mb, 2),
        f"{name}_db_bytes_per_stored_mb": round(growth / stored_mb),
        f"{name}_run_s": round(seconds, 2),
        f"{name}_status": report["status"],
        **({f"{name}_errors": errors} if errors else {}),
    }


async def _measure(workdir: Path) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for name, count, size in SCENARIOS:
        figures.update(await _scenario(workdir, name, count, size))
    return figures


def main() -> dict[str, object]:
    """Run both scenarios; returns their figures."""
    if not FILESYSTEM.exists():
        raise RuntimeError(f"{FILESYSTEM} is missing: run `make test` (it installs tests/npm)")
    with tempfile.TemporaryDirectory(prefix="taskorch-bench-results-") as tmp:
        figures = anyio.run(_measure, Path(tmp))
    figures["code_root"] = os.environ.get("TASKORCH_BENCH_ROOT") or str(repo_root())
    return figures


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
