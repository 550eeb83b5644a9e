"""The one DAG of a plan: which step depends on which, and what follows from it.

Validation reads it for repeated ids, dependencies on no step and cycles; the
run engine for an order, each step's dependents and each step's height (its
dispatch priority: long chains start first). Every algorithm here is iterative
(no recursion limit) and linear in steps plus dependencies.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Mapping, Sequence

from executor.plan import Step

__all__ = ["Graph"]


class Graph:
    """The dependency graph of some steps; edges point at dependencies.

    Built from any steps, valid or not: ids may repeat (`duplicates`), a
    dependency may name no step (`unknown`), and the dependencies may form
    cycles (`cycles()`). `order` and `height` cover every step only when the
    graph `is_dag`.

    Attributes:
        index: The first position of each id in the steps.
        duplicates: The positions of each id written more than once.
        unknown: Each `(step id, dependency)` whose dependency names no step, in plan order.
        deps: Each id's dependencies that name a step (a repeated id gets the union).
        dependents: Each id's direct dependents.
    """

    def __init__(self, steps: Sequence[Step]) -> None:
        """Build the graph of `steps`, in the order written."""
        index: dict[str, int] = {}
        repeats: dict[str, list[int]] = {}
        for pos, step in enumerate(steps):
            if step.id in index:
                repeats.setdefault(step.id, [index[step.id]]).append(pos)
            else:
                index[step.id] = pos
        deps: dict[str, list[str]] = {}
        unknown: list[tuple[str, str]] = []
        for step in steps:
            known = [d for d in step.depends_on if d in index]
            if len(known) < len(step.depends_on):
                unknown.extend((step.id, d) for d in step.depends_on if d not in index)
            mine = deps.get(step.id)
            if mine is None:
                deps[step.id] = known
            else:
                mine.extend(d for d in known if d not in mine)
        dependents: dict[str, list[str]] = {i: [] for i in deps}
        for i, ds in deps.items():
            for d in ds:
                dependents[d].append(i)
        self.index: Mapping[str, int] = index
        self.duplicates: Mapping[str, tuple[int, ...]] = {k: tuple(v) for k, v in repeats.items()}
        self.unknown: tuple[tuple[str, str], ...] = tuple(unknown)
        self.deps: Mapping[str, Sequence[str]] = deps
        self.dependents: Mapping[str, Sequence[str]] = dependents

    @functools.cached_property
    def _sorted(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Kahn's algorithm: the ids in dependency order, and the ids a cycle holds back."""
        pending = {i: len(d) for i, d in self.deps.items()}
        # A heap keyed by position would order ready steps by position across
        # the whole plan; a FIFO seeded in plan order is linear and just as stable.
        ready = deque(i for i, n in pending.items() if n == 0)
        order: list[str] = []
        dependents = self.dependents
        while ready:
            node = ready.popleft()
            order.append(node)
            for nxt in dependents[node]:
                pending[nxt] -= 1
                if pending[nxt] == 0:
                    ready.append(nxt)
        return tuple(order), tuple(i for i, n in pending.items() if n > 0)

    @property
    def order(self) -> tuple[str, ...]:
        """The ids so that each follows its dependencies; deterministic.

        Steps with no dependencies come first in plan order, then each step as
        soon as its last dependency is placed, first come first served. Ids a
        cycle holds back are left out (see `stuck`).
        """
        return self._sorted[0]

    @property
    def stuck(self) -> tuple[str, ...]:
        """The ids that can never be placed: on a cycle, or depending on one."""
        return self._sorted[1]

    @property
    def is_dag(self) -> bool:
        """Whether every id is unique, every dependency names a step, and nothing is stuck."""
        return not self.duplicates and not self.unknown and not self.stuck

    @functools.cached_property
    def height(self) -> Mapping[str, int]:
        """Steps on the longest chain from each placed step to a sink, itself included."""
        height: dict[str, int] = {}
        dependents = self.dependents
        for sid in reversed(self.order):
            height[sid] = 1 + max((height[c] for c in dependents[sid]), default=0)
        return height

    def cycles(self) -> list[list[str]]:
        """One cycle per group of steps that depend on each other, shortest first found.

        Each is the shortest cycle through its group's first-written step, as a
        closed path: `[a, b, c, a]` says a depends on b, b on c, c on a; a step
        that depends on itself is `[a, a]`.
        """
        if not self.stuck:
            return []
        found: list[list[str]] = []
        for component in _strong_components(self.stuck, self.deps):
            cycle = self._shortest_cycle(component)
            if cycle is not None:
                found.append(cycle)
        return found

    def _shortest_cycle(self, component: set[str]) -> list[str] | None:
        """The shortest cycle through the component's first-written step (breadth first)."""
        start = min(component, key=self.index.__getitem__)
        parent: dict[str, str] = {}
        queue = deque([start])
        while queue:
            node = queue.popleft()
            for dep in self.deps[node]:
                if dep == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    path.reverse()
                    return [*path, start]
                if dep in component and dep not in parent:
                    parent[dep] = node
                    queue.append(dep)
        return None


def _strong_components(nodes: Sequence[str], deps: Mapping[str, Sequence[str]]) -> list[set[str]]:
    """Tarjan's algorithm, iterative, over `nodes`; only components holding a cycle."""
    inside = set(nodes)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[set[str]] = []
    counter = 0
    for root in nodes:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, child = work.pop()
            if child == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            edges = deps[node]
            while child < len(edges):
                nxt = edges[child]
                child += 1
                if nxt not in inside:
                    continue
                if nxt not in index:
                    work.append((node, child))
                    work.append((nxt, 0))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                if low[node] == index[node]:
                    component: set[str] = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1 or node in deps[node]:
                        found.append(component)
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
    return found
