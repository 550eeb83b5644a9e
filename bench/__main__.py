"""Run benchmarks: `python -m bench [names...]`.

Imports every `bench/bench_*.py` (or only the named ones: `validate` or
`bench_validate`), calls its `main()`, prints the figures it returns as one
table per bench, and writes every result to `bench/results/latest.json`. A
bench that fails prints its error and the others still run; the exit status
is then 1.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_OUTPUT = BENCH_DIR / "results" / "latest.json"


def available() -> list[str]:
    """Names of every bench module, without the `bench_` prefix, sorted."""
    return sorted(p.stem.removeprefix("bench_") for p in BENCH_DIR.glob("bench_*.py"))


def select(names: list[str]) -> list[str]:
    """Resolve the names given on the command line (all when none).

    Raises:
        SystemExit: A name matches no bench; the message lists the benches.
    """
    known = available()
    if not names:
        return known
    chosen: list[str] = []
    for raw in names:
        name = Path(raw).stem.removeprefix("bench_")
        if name not in known:
            raise SystemExit(
                f"no bench named {raw!r}: choose from {', '.join(known) or 'none'} "
                "(files bench/bench_<name>.py)"
            )
        if name not in chosen:
            chosen.append(name)
    return chosen


def run_one(name: str) -> dict[str, Any]:
    """Import `bench.bench_<name>`, run its `main()`, and say how it went."""
    start = time.perf_counter()
    try:
        module = importlib.import_module(f"bench.bench_{name}")
        main = getattr(module, "main", None)
        if not callable(main):
            raise TypeError(f"bench/bench_{name}.py has no main() function")
        figures = main()
        if not isinstance(figures, dict):
            raise TypeError(f"main() returned {type(figures).__name__}, not a dict of figures")
    except Exception as exc:
        return {
            "ok": False,
            "seconds": round(time.perf_counter() - start, 3),
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),
        }
    return {"ok": True, "seconds": round(time.perf_counter() - start, 3), "figures": figures}


def render(name: str, result: dict[str, Any]) -> str:
    """One bench's result as an aligned two-column table."""
    head = f"== {name}  ({result['seconds']:.1f} s)"
    if not result["ok"]:
        return f"{head}  FAILED\n{result['traceback'].rstrip()}"
    figures: dict[str, object] = result["figures"]
    if not figures:
        return f"{head}\n  (no figures)"
    width = max(len(str(k)) for k in figures)
    lines = [head]
    for key, value in figures.items():
        lines.append(f"  {str(key).ljust(width)}  {_format(value)}")
    return "\n".join(lines)


def _format(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 1e6 else f"{value:.3e}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return str(value)


def environment() -> dict[str, object]:
    """What the figures were measured on."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benches and return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", help="benches to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the benches and exit")
    parser.add_argument(
        "--output", type=Path, default=DEFAULT_OUTPUT, help="where to write the JSON results"
    )
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(available()))
        return 0
    names = select(args.names)
    if not names:
        print("no benches found (bench/bench_*.py)", file=sys.stderr)
        return 1
    started = datetime.now(UTC)
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        results[name] = run_one(name)
        print(render(name, results[name]), flush=True)
        print(flush=True)
    failed = [n for n, r in results.items() if not r["ok"]]
    report = {
        "started_at": started.isoformat(),
        "environment": environment(),
        "benches": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2, default=str) + "\n")
    summary = (
        f"{len(results) - len(failed)} of {len(results)} benches ran; results in {args.output}"
    )
    if failed:
        print(f"{summary}; FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(summary, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
