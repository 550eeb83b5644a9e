"""The one DAG type: what validation and the run engine both read from it."""

from __future__ import annotations

from typing import Any

from executor.graph import Graph
from executor.plan import Step


def step(step_id: str, *deps: str, **extra: Any) -> Step:
    return Step(id=step_id, server="s", tool="t", depends_on=deps, **extra)


def test_order_dependents_and_height_of_a_dag() -> None:
    graph = Graph([step("d", "b", "c"), step("b", "a"), step("c"), step("a")])
    assert graph.is_dag
    assert graph.order == ("c", "a", "b", "d")
    assert graph.dependents == {"d": [], "b": ["d"], "c": ["d"], "a": ["b"]}
    assert graph.height == {"a": 3, "b": 2, "c": 2, "d": 1}
    assert graph.cycles() == []


def test_duplicates_unknown_dependencies_and_cycles_are_reported_not_raised() -> None:
    graph = Graph(
        [
            step("a", "c"),
            step("b", "a"),
            step("c", "b"),
            step("d", "d"),
            step("e", "ghost"),
            step("e"),
            step("f", "a"),  # held back by the cycle without being on it
        ]
    )
    assert not graph.is_dag
    assert graph.duplicates == {"e": (4, 5)}
    assert graph.unknown == (("e", "ghost"),)
    assert set(graph.stuck) == {"a", "b", "c", "d", "f"}
    assert graph.order == ("e",)
    assert graph.cycles() == [["a", "c", "b", "a"], ["d", "d"]]


def test_the_shortest_cycle_through_the_first_step_is_named() -> None:
    # a -> b -> c -> d -> a, with a shortcut a -> d: the cycle shown is a -> d -> a.
    graph = Graph([step("a", "b", "d"), step("b", "c"), step("c", "d"), step("d", "a")])
    assert graph.cycles() == [["a", "d", "a"]]


def test_a_long_chain_needs_no_recursion() -> None:
    n = 5_000  # well past the recursion limit
    graph = Graph([step(f"s{i}", *([f"s{i - 1}"] if i else [])) for i in range(n)])
    assert graph.height["s0"] == n
    looped = Graph([step(f"s{i}", f"s{(i - 1) % n}") for i in range(n)])
    [cycle] = looped.cycles()
    assert len(cycle) == n + 1
