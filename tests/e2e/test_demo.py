"""`taskorch demo` (what `make demo` runs): a real session, end to end, self-contained."""

from __future__ import annotations

from tests.e2e.support import clean_env, run_cli


def test_the_demo_runs_the_example_plan_to_completion() -> None:
    done = run_cli("demo", timeout=110, env=clean_env())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "connected to taskorch over stdio" in out
    assert "status: confirmed, approved: True" in out
    # Progress notifications, forwarded from the downstream server too.
    assert "tally (stats.running_total): added 2 of 4" in out
    assert "completed: 10/10 steps" in out
    assert "flowchart TD" in out
    assert "Keywords:" in out  # the saved digest, read back
