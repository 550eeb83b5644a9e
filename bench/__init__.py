"""Benchmarks: `bench/bench_<name>.py` modules, each with `main() -> dict[str, object]`.

Run them with `python -m bench [names...]`; see `bench/__main__.py`.
"""
