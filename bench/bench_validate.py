"""Static validation time of large plans: a random DAG, with the catalog and schemas.

The baseline, measured in the same run, is what a plain jsonschema pass over
every step's arguments costs (references taken literally, no graph checks).
"""

from __future__ import annotations

import functools
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from jsonschema import Draft202012Validator

from executor.catalog import Catalog, ToolInfo
from executor.plan import Step
from executor.policy import ToolPolicy
from executor.validate import checked_graph, parse_steps, validate_plan

RUNS = 7
SIZES = (1_000, 10_000)

_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "query": {"type": "string", "minLength": 1},
        "limit": {"type": "integer", "minimum": 1, "maximum": 100},
        "mode": {"enum": ["fast", "full"]},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["query"],
    "additionalProperties": False,
}


def make_catalog() -> Catalog:
    """Four servers of five tools each, all with the same small schema."""
    return Catalog(
        ToolInfo(server=f"srv{s}", name=f"tool.{t}", input_schema=_SCHEMA)
        for s in range(4)
        for t in range(5)
    )


def make_raw_plan(n: int, seed: int = 7) -> list[dict[str, Any]]:
    """A random DAG of `n` steps, about two dependencies each: one a reference."""
    rng = random.Random(seed)
    raw: list[dict[str, Any]] = []
    for i in range(n):
        deps = rng.sample(range(i), k=min(i, 2))
        args: dict[str, Any] = {"limit": rng.randint(1, 100), "mode": rng.choice(["fast", "full"])}
        if deps:
            args["query"] = f"${{s{deps[0]}.items.0}}"
            args["tags"] = [f"from ${{s{deps[0]}.name}}", "plain"]
        else:
            args["query"] = f"seed {i}"
        raw.append(
            {
                "id": f"s{i}",
                "server": f"srv{rng.randrange(4)}",
                "tool": f"tool.{rng.randrange(5)}",
                "arguments": args,
                "depends_on": [f"s{d}" for d in deps[1:]],
            }
        )
    return raw


def _median_ms(fn: Callable[[], object]) -> float:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 2)


def _jsonschema_only(steps: list[Step], catalog: Catalog) -> None:
    """The baseline: one full jsonschema pass per step, references taken literally."""
    validators: dict[tuple[str, str], Draft202012Validator] = {}
    for step in steps:
        key = (step.server, step.tool)
        if key not in validators:
            info = catalog.get(*key)
            assert info is not None
            validators[key] = Draft202012Validator(info.input_schema)
        for _ in validators[key].iter_errors(step.arguments):
            pass


def main() -> dict[str, object]:
    catalog = make_catalog()
    policy = ToolPolicy(allow=("srv*",), deny=("srv9.*",))
    figures: dict[str, object] = {"runs": RUNS}
    per_step_us = 0.0
    for n in SIZES:
        raw = make_raw_plan(n)
        steps, problems = parse_steps(raw)
        assert not problems, problems[:3]
        found = validate_plan(steps, catalog, policy, max_steps=n)
        assert not found, found[:3]
        ms = _median_ms(functools.partial(validate_plan, steps, catalog, policy, max_steps=n))
        figures[f"validate_{n}_ms"] = ms
        per_step_us = ms * 1000 / n
        baseline = _median_ms(functools.partial(_jsonschema_only, steps, catalog))
        figures[f"jsonschema_only_{n}_ms"] = baseline
        figures[f"validate_vs_jsonschema_only_{n}"] = round(ms / baseline, 2)
        figures[f"validate_{n}_no_catalog_ms"] = _median_ms(functools.partial(validate_plan, steps))
        figures[f"topological_order_{n}_ms"] = _median_ms(functools.partial(checked_graph, steps))
        figures[f"parse_steps_{n}_ms"] = _median_ms(functools.partial(parse_steps, raw))
    figures[f"us_per_step_{SIZES[-1]}"] = round(per_step_us, 1)
    return figures
