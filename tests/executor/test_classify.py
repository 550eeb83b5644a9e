"""Downstream failures become kinds at one boundary, through one table."""

from __future__ import annotations

import ast
from pathlib import Path

from executor.downstream.classify import FAILURES, Failure, failure_error, http_failure
from executor.downstream.transports.http import HttpNote
from executor.errors import Delivery, ErrorKind

DOWNSTREAM = Path(__file__).resolve().parents[2] / "executor" / "downstream"


def test_every_failure_has_one_row() -> None:
    assert set(FAILURES) == set(Failure)
    cause_kinds = {f for f, (kind, _) in FAILURES.items() if kind is None}
    assert cause_kinds == {Failure.NOT_SENT, Failure.SERVER_DOWN}
    error = failure_error(Failure.NOT_SENT, "no session", server="s", cause=ErrorKind.NETWORK)
    assert (error.kind, error.delivery, error.server) == (
        ErrorKind.NETWORK,
        Delivery.NOT_DELIVERED,
        "s",
    )


def test_http_facts_are_classified_by_status_and_delivery() -> None:
    def note(status: int | None, *, delivered: bool = True) -> HttpNote:
        return HttpNote("m", status=status, delivered=delivered)

    assert http_failure(note(None, delivered=False)) is Failure.UNREACHABLE
    assert http_failure(note(None)) is Failure.CONNECTION_BROKE
    assert http_failure(note(401, delivered=False)) is Failure.UNAUTHENTICATED
    assert http_failure(note(403, delivered=False)) is Failure.FORBIDDEN
    assert http_failure(note(500)) is None


def test_no_other_module_chooses_a_kind_or_passes_facts_on_the_side() -> None:
    offenders: list[str] = []
    for path in sorted(DOWNSTREAM.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        where = path.relative_to(DOWNSTREAM)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "ToolCallError":
                # classify builds every error; a supervisor only re-attributes a built one.
                if str(where) not in ("classify.py", "supervisor.py"):
                    offenders.append(f"{where}: builds a ToolCallError")
            if isinstance(node, ast.Import | ast.ImportFrom):
                modules = [a.name for a in node.names] + [getattr(node, "module", "") or ""]
                if "contextvars" in modules:
                    offenders.append(f"{where}: imports contextvars")
    assert offenders == []
