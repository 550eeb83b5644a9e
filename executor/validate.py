"""Static checks of a plan against a catalog and a policy, before anything runs.

`validate_plan` reports every problem at once, each naming its step and saying
what to fix in one sentence, so that a person can read the list and a planning
model can repair its plan from it in one round. The checks:

- the plan has steps, no more than the limit, and unique step ids;
- every `depends_on` entry and every `${...}` reference names a step of the plan,
  and a reference's path fits the producing tool's `outputSchema` when it has
  one (`${rd.contents}` when the schema declares only `content` is refused);
- the dependencies (references included) form no cycle; a cycle is shown as a
  path such as `a -> b -> c -> a`;
- every tool exists in the catalog (close names are suggested) and the policy
  allows it;
- every step's arguments are valid for its tool's `inputSchema`.

`check_arguments` is the same check at run time, on arguments whose references
are resolved: every value is then data, checked literally.

Arguments holding references cannot be checked literally. A value that is
exactly one reference (`"${s1.items}"`) can be of any JSON type at run time, so
it is replaced by a placeholder that every schema keyword accepts: its key
still counts as present for `required` and `additionalProperties`, but nothing
is said about the value. A string with a reference inside longer text is
certainly a string, so its type is checked but not its content (`pattern`,
`enum`, lengths). Objects and arrays holding such values are checked
everywhere except by the keywords whose verdict an unknown value could flip
(`not`, `if`, `enum`, `const`, `contains`; `oneOf` is relaxed to `anyOf`). The
rule throughout: a plan is never refused for what only run time can know.

The graph algorithms are iterative (no recursion limit) and linear in steps
plus dependencies. Schema checks go first through `_Fast`, a conservative
acceptor for the keywords most tools use, and through jsonschema (whose
validators are cached per schema) only when it cannot say yes, so a plan of
10,000 steps validates in a fraction of a second (`python -m bench validate`).
"""

from __future__ import annotations

import difflib
import functools
import itertools
import json
import logging
import re
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import jsonschema.validators
from jsonschema.exceptions import SchemaError, ValidationError
from jsonschema.protocols import Validator
from pydantic import ValidationError as PydanticValidationError
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource, Unresolvable

from executor._utils import json_kind
from executor.catalog import Catalog, ToolInfo
from executor.errors import PlanValidationError, StepReferenceError
from executor.plan import Step
from executor.policy import ToolPolicy
from executor.refs import StepRef, parse_template

__all__ = [
    "Problem",
    "check_arguments",
    "check_plan",
    "parse_steps",
    "topological_order",
    "validate_plan",
]

logger = logging.getLogger(__name__)

_MAX_SHOWN = 10
"""Most names listed in one message (servers, tools, keys)."""
_MAX_MESSAGE_VALUE = 120
"""Longest rendering of a value quoted in a message."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a plan.

    Attributes:
        step_id: The step it concerns; `None` for plan-level problems.
        code: What kind of problem: `empty_plan`, `too_many_steps`,
            `invalid_step`, `bad_reference`, `duplicate_id`,
            `unknown_dependency`, `unknown_reference`, `invalid_reference`,
            `cycle`, `unknown_tool`, `tool_not_allowed` or `invalid_arguments`.
        message: One sentence: what is wrong and what to fix.
    """

    step_id: str | None
    code: str
    message: str

    def __str__(self) -> str:
        if self.step_id is None:
            return self.message
        return f"step {self.step_id!r}: {self.message}"


# --------------------------------------------------------------------------- parsing

_STEP_FIELDS = tuple(Step.model_fields)

_FIELD_HINTS: dict[str, str] = {
    "id": (
        "write a short id that starts with a letter or '_' and has only letters, digits, "
        "'_' and '-' (at most 64 characters), such as 'get_weather'"
    ),
    "server": "write the downstream server's configured name, such as 'time'",
    "tool": "write the tool's name exactly as its server lists it",
    "arguments": 'write a JSON object of the tool\'s arguments, such as {"city": "Paris"}',
    "depends_on": 'write a list of ids of steps that must succeed first, such as ["s1"]',
    "description": "write one short sentence, or leave the field out",
    "timeout_s": "write a number of seconds greater than 0, or leave the field out",
    "retry": (
        "write an object with any of initial_interval_s, backoff_coefficient, "
        "maximum_interval_s, maximum_attempts, non_retryable, jitter and non_idempotent, "
        "or leave it out"
    ),
    "on_error": "write 'fail' or 'continue'",
}

# Names models often write for a step's fields; difflib does not see these.
_FIELD_SYNONYMS: dict[str, str] = {
    "args": "arguments",
    "arguments_json": "arguments",
    "input": "arguments",
    "inputs": "arguments",
    "params": "arguments",
    "parameters": "arguments",
    "deps": "depends_on",
    "dependencies": "depends_on",
    "depends": "depends_on",
    "needs": "depends_on",
    "after": "depends_on",
    "name": "id",
    "step_id": "id",
    "server_name": "server",
    "tool_name": "tool",
    "timeout": "timeout_s",
    "retries": "retry",
    "retry_policy": "retry",
    "onerror": "on_error",
}


def parse_steps(raw: Sequence[Mapping[str, Any]]) -> tuple[list[Step], list[Problem]]:
    """Build steps from caller or model JSON, turning every error into a `Problem`.

    Args:
        raw: One JSON object per step.

    Returns:
        The steps that could be built, in order, and a problem for each field
        that could not (code `invalid_step`) and each malformed `${...}`
        reference (code `bad_reference`). A step with any problem is left out
        of the list.
    """
    steps: list[Step] = []
    problems: list[Problem] = []
    for index, entry in enumerate(raw):
        # Callers pass whatever JSON they parsed, whatever the annotation says.
        item = cast(object, entry)
        if not isinstance(item, Mapping):
            problems.append(
                Problem(
                    None,
                    "invalid_step",
                    f"steps[{index}] is {json_kind(item)}, not a step: write an object with "
                    f"the fields {', '.join(_STEP_FIELDS)}",
                )
            )
            continue
        data = dict(item)
        raw_id = data.get("id")
        step_id = raw_id if isinstance(raw_id, str) and raw_id else None
        where = "" if step_id is not None else f"steps[{index}]: "
        try:
            steps.append(Step.model_validate(data))
            continue
        except PydanticValidationError as exc:
            problems.extend(
                Problem(step_id, "invalid_step", where + _pydantic_message(err))
                for err in exc.errors()
            )
            continue
        except StepReferenceError:
            pass
        # A malformed reference stops Step before pydantic sees the other fields:
        # report each bad reference where it is, then check the rest without them.
        problems.extend(
            Problem(step_id, "bad_reference", f"{where}arguments{path}: {message}")
            for path, message in _malformed_references(data["arguments"])
        )
        try:
            Step.model_validate({**data, "arguments": {}})
        except PydanticValidationError as exc:
            problems.extend(
                Problem(step_id, "invalid_step", where + _pydantic_message(err))
                for err in exc.errors()
            )
    return steps, problems


def _pydantic_message(err: Mapping[str, Any]) -> str:
    loc = tuple(err.get("loc", ()))
    path = _loc_path(loc)
    field = str(loc[0]) if loc else ""
    hint = _FIELD_HINTS.get(field, "")
    kind = err.get("type", "")
    if kind == "missing":
        return f"the required field {path!r} is missing: {hint or 'add it'}"
    if kind == "extra_forbidden":
        name = str(loc[-1]) if loc else "?"
        if len(loc) == 1:
            guess = _FIELD_SYNONYMS.get(name.lower()) or next(
                iter(difflib.get_close_matches(name, _STEP_FIELDS, n=1)), None
            )
            instead = f" (did you mean {guess!r}?)" if guess else ""
            return (
                f"a step has no field {name!r}{instead}: remove it; the fields are "
                f"{', '.join(_STEP_FIELDS)}"
            )
        return f"{path!r} is not an accepted field: remove it; {hint}".rstrip("; ")
    text = str(err.get("msg", "is not valid"))
    # pydantic prefixes messages from our own validators; the rest reads fine.
    text = text.removeprefix("Value error, ")
    got = _short(err.get("input"))
    fix = f"; {hint}" if hint else ""
    return f"{path!r} is not valid: {text} (got {got}){fix}"


def _loc_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "step"


def _malformed_references(arguments: Any) -> list[tuple[str, str]]:
    """Every string in `arguments` whose `${...}` does not parse, with its JSON path."""
    found: list[tuple[str, str]] = []
    for path, value in _walk_strings(arguments):
        if "${" not in value:
            continue
        try:
            parse_template(value)
        except StepReferenceError as exc:
            found.append((path, str(exc)))
    return found


def _walk_strings(value: Any) -> Iterator[tuple[str, str]]:
    """Yield `(path, string)` for every string in a JSON value, in document order."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            yield path, item
        elif isinstance(item, Mapping):
            stack.extend((f"{path}.{k}", v) for k, v in reversed(list(item.items())))
        elif isinstance(item, list | tuple):
            stack.extend((f"{path}[{i}]", v) for i, v in reversed(list(enumerate(item))))


def _short(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, default=repr)
    except ValueError:
        text = repr(value)
    if len(text) > _MAX_MESSAGE_VALUE:
        text = text[: _MAX_MESSAGE_VALUE - 3] + "..."
    return text


# --------------------------------------------------------------------------- validation


def validate_plan(
    steps: Sequence[Step],
    catalog: Catalog | None = None,
    policy: ToolPolicy | None = None,
    *,
    max_steps: int | None = None,
) -> list[Problem]:
    """Check a plan statically and return every problem found.

    Args:
        steps: The plan's steps, in the order written.
        catalog: The tools that exist; when given, every step's tool must be in
            it and its arguments must fit the tool's `inputSchema`.
        policy: The agent's tool policy; when given, every tool must be allowed.
        max_steps: Most steps the plan may have.

    Returns:
        The problems, plan-level ones first and then by step in plan order;
        empty when the plan is valid.
    """
    if not steps:
        return [Problem(None, "empty_plan", "the plan has no steps: add at least one step")]
    problems: list[Problem] = []
    if max_steps is not None and len(steps) > max_steps:
        problems.append(
            Problem(
                None,
                "too_many_steps",
                f"the plan has {len(steps)} steps but at most {max_steps} are allowed: "
                "merge or drop steps, or split the work into several plans",
            )
        )
    graph = _Graph.build(steps)
    problems.extend(graph.duplicate_problems())
    tools = _ToolChecker(catalog, policy) if catalog is not None or policy is not None else None
    producers = {step_id: steps[pos] for step_id, pos in graph.index.items()}
    for step in steps:
        problems.extend(graph.dependency_problems(step))
        if tools is not None:
            problems.extend(tools.check(step))
            if step.depends_on:  # a step without dependencies holds no reference
                problems.extend(tools.reference_problems(step, producers))
    problems.extend(graph.cycle_problems())
    return problems


def check_arguments(info: ToolInfo, arguments: Mapping[str, Any]) -> list[str]:
    """Check arguments as they will be sent (references resolved) against the tool's schema.

    Unlike the plan-time check, every value is data: a `${...}` in a string is
    text the tool receives, checked like any other.

    Args:
        info: The tool, with its `inputSchema`.
        arguments: The arguments exactly as they would be sent.

    Returns:
        One message per problem, naming the argument and what it must be; empty
        when they fit, or when the schema itself cannot be used (the server's
        fault: the call is then left to the server to judge).
    """
    validators = _compiled_by_identity(info.input_schema)
    if validators is None:
        return []
    return _argument_errors(f"{info.server}.{info.name}", arguments, validators, literal=True)


_BY_IDENTITY: dict[int, tuple[Mapping[str, Any], _Validators | None]] = {}
_BY_IDENTITY_MAX = 4096


def _compiled_by_identity(schema: Mapping[str, Any]) -> _Validators | None:
    """`_compiled`, without serialising the schema again for a schema object seen before.

    A run checks every call's arguments against its catalog's (long-lived) schema
    objects; keeping a reference to each keeps its id from being reused.
    """
    hit = _BY_IDENTITY.get(id(schema))
    if hit is not None and hit[0] is schema:
        return hit[1]
    if len(_BY_IDENTITY) >= _BY_IDENTITY_MAX:
        _BY_IDENTITY.clear()
    validators = _compiled(schema)
    _BY_IDENTITY[id(schema)] = (schema, validators)
    return validators


def check_plan(
    steps: Sequence[Step],
    catalog: Catalog | None = None,
    policy: ToolPolicy | None = None,
    *,
    max_steps: int | None = None,
) -> None:
    """Validate a plan and raise if anything is wrong.

    Args:
        steps: The plan's steps.
        catalog: See `validate_plan`.
        policy: See `validate_plan`.
        max_steps: See `validate_plan`.

    Raises:
        PlanValidationError: With every problem found.
    """
    problems = validate_plan(steps, catalog, policy, max_steps=max_steps)
    if problems:
        raise PlanValidationError(list(problems))


def topological_order(steps: Sequence[Step]) -> list[str]:
    """Order step ids so that every step comes after the steps it depends on.

    The order is deterministic: steps with no dependencies come first in plan
    order, then each step as soon as its last dependency is placed, first come
    first served. Dependencies on ids that are not steps are ignored
    (`validate_plan` reports them).

    Raises:
        PlanValidationError: The dependencies form a cycle, or ids repeat.
    """
    graph = _Graph.build(steps)
    duplicates = graph.duplicate_problems()
    if duplicates:
        raise PlanValidationError(list(duplicates))
    order, remaining = graph.kahn()
    if remaining:
        raise PlanValidationError(list(graph.cycle_problems()))
    return order


class _Graph:
    """The dependency graph over unique step ids; edges point at dependencies."""

    def __init__(self, steps: Sequence[Step]) -> None:
        self.steps = steps
        self.index: dict[str, int] = {}
        """First position of each id."""
        self.repeats: dict[str, list[int]] = {}
        """Positions of ids written more than once."""
        self.deps: dict[str, list[str]] = {}
        """Known dependencies of each id (a repeated id gets the union)."""

    @classmethod
    def build(cls, steps: Sequence[Step]) -> _Graph:
        graph = cls(steps)
        index = graph.index
        for pos, step in enumerate(steps):
            if step.id in index:
                graph.repeats.setdefault(step.id, [index[step.id]]).append(pos)
            else:
                index[step.id] = pos
        deps = graph.deps
        for step in steps:
            known = [d for d in step.depends_on if d in index]
            if step.id in deps:
                deps[step.id].extend(d for d in known if d not in deps[step.id])
            else:
                deps[step.id] = known
        return graph

    def duplicate_problems(self) -> list[Problem]:
        return [
            Problem(
                step_id,
                "duplicate_id",
                f"the id is used by {len(positions)} steps (at positions "
                f"{', '.join(str(p) for p in positions)}): give each step its own id",
            )
            for step_id, positions in self.repeats.items()
        ]

    def dependency_problems(self, step: Step) -> list[Problem]:
        missing = [d for d in step.depends_on if d not in self.index]
        if not missing:
            return []
        # Step merges referenced ids into depends_on; tell the two apart here,
        # only for the rare step that has a problem, to say where the fix goes.
        refs = _references_by_step(step.arguments)
        problems: list[Problem] = []
        for dep in missing:
            if dep in refs:
                path, ref = refs[dep]
                problems.append(
                    Problem(
                        step.id,
                        "unknown_reference",
                        f"the reference '{ref}' in arguments{path} names no step of the "
                        f"plan: {self._instead(dep, step.id)}",
                    )
                )
            else:
                problems.append(
                    Problem(
                        step.id,
                        "unknown_dependency",
                        f"depends_on names {dep!r}, which is no step of the plan: "
                        f"{self._instead(dep, step.id)}",
                    )
                )
        return problems

    def _instead(self, dep: str, own: str) -> str:
        candidates = [i for i in self.index if i != own]
        close = _close_matches(dep, candidates)
        if close:
            return f"did you mean {_or_list(close)}?"
        return "use the id of an earlier step, or remove it"

    def kahn(self) -> tuple[list[str], list[str]]:
        """Return the ids in dependency order, and the ids a cycle holds back."""
        pending = {i: len(d) for i, d in self.deps.items()}
        dependents: dict[str, list[str]] = {i: [] for i in self.deps}
        for i, deps in self.deps.items():
            for d in deps:
                dependents[d].append(i)
        # A heap keyed by position would order ready steps by position across
        # the whole plan; a FIFO seeded in plan order is linear and just as stable.
        ready = deque(i for i, n in pending.items() if n == 0)
        order: list[str] = []
        while ready:
            node = ready.popleft()
            order.append(node)
            for nxt in dependents[node]:
                pending[nxt] -= 1
                if pending[nxt] == 0:
                    ready.append(nxt)
        remaining = [i for i, n in pending.items() if n > 0]
        return order, remaining

    def cycle_problems(self) -> list[Problem]:
        _, remaining = self.kahn()
        if not remaining:
            return []
        problems: list[Problem] = []
        for component in _strong_components(remaining, self.deps):
            cycle = self._shortest_cycle(component)
            if cycle is not None:
                problems.append(self._cycle_problem(cycle))
        return problems

    def _shortest_cycle(self, component: set[str]) -> list[str] | None:
        """The shortest cycle through the component's first-written step."""
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

    def _cycle_problem(self, cycle: list[str]) -> Problem:
        members = set(cycle)
        by_id = {s.id: s for s in self.steps if s.id in members}
        via: list[str] = []
        for here, there in itertools.pairwise(cycle):
            refs = _references_by_step(by_id[here].arguments)
            if there in refs:
                via.append(f"{here!r} reads '{refs[there][1]}'")
        if len(via) > _MAX_SHOWN:
            via[_MAX_SHOWN:] = [f"{len(via) - _MAX_SHOWN} more"]
        detail = f" ({'; '.join(via)})" if via else ""
        shown = cycle
        if len(cycle) > 2 * _MAX_SHOWN + 1:
            # Keep the message readable; both ends show where the cycle closes.
            hidden = len(cycle) - 2 * _MAX_SHOWN
            shown = [*cycle[:_MAX_SHOWN], f"({hidden} more steps)", *cycle[-_MAX_SHOWN:]]
        if len(set(cycle)) == 1:
            return Problem(
                cycle[0],
                "cycle",
                f"step '{cycle[0]}' depends on itself{detail}: remove '{cycle[0]}' from its "
                "own depends_on and any reference to its own output",
            )
        return Problem(
            cycle[0],
            "cycle",
            f"the steps form a cycle {' -> '.join(shown)}, each depending on the next"
            f"{detail}: remove one of these dependencies or references so the steps "
            "can run in order",
        )


def _strong_components(nodes: list[str], deps: Mapping[str, list[str]]) -> list[set[str]]:
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


def _references_by_step(arguments: Any) -> dict[str, tuple[str, StepRef]]:
    """The first reference to each step in `arguments`, with the JSON path it is at."""
    found: dict[str, tuple[str, StepRef]] = {}
    for path, text in _walk_strings(arguments):
        if "${" not in text:
            continue
        try:
            parts = parse_template(text)
        except StepReferenceError:
            continue
        for part in parts:
            if isinstance(part, StepRef) and part.step not in found:
                found[part.step] = (path, part)
    return found


_WORD_BREAK = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z])(?=[A-Z])")


def _words(name: str) -> set[str]:
    return {w.lower() for w in _WORD_BREAK.split(name) if w}


def _close_matches(name: str, candidates: Sequence[str], n: int = 3) -> list[str]:
    """The candidates most like `name`, best first.

    Spelling alone (difflib) ranks `convert_time` above `get_current_time` for
    `get_time`; shared words rank them the way a person would.
    """
    words = _words(name)
    lowered = name.lower()
    scored: list[tuple[float, str]] = []
    for candidate in candidates:
        spelling = difflib.SequenceMatcher(None, lowered, candidate.lower()).ratio()
        theirs = _words(candidate)
        shared = len(words & theirs) / len(words | theirs) if words or theirs else 0.0
        if spelling >= 0.6 or shared >= 0.5:
            scored.append((spelling + shared, candidate))
    scored.sort(key=lambda pair: (-pair[0], pair[1]))
    return [candidate for _, candidate in scored[:n]]


def _or_list(names: Sequence[str]) -> str:
    quoted = [repr(n) for n in names]
    if len(quoted) == 1:
        return quoted[0]
    return f"{', '.join(quoted[:-1])} or {quoted[-1]}"


# --------------------------------------------------------------------------- tools


class _ToolChecker:
    """Checks each step's tool and arguments, remembering per-tool work for the plan."""

    def __init__(self, catalog: Catalog | None, policy: ToolPolicy | None) -> None:
        self.catalog = catalog
        self.policy = policy
        self._tool_problems: dict[tuple[str, str], tuple[str, str] | None] = {}
        self._validators: dict[tuple[str, str], _Validators | None] = {}
        self._outputs: dict[tuple[str, str], ToolInfo | None] = {}
        self._names: list[str] | None = None

    def check(self, step: Step) -> list[Problem]:
        key = (step.server, step.tool)
        if key not in self._tool_problems:
            self._tool_problems[key] = self._tool_problem(step.server, step.tool)
        found = self._tool_problems[key]
        if found is not None:
            return [Problem(step.id, found[0], found[1])]
        if self.catalog is None:
            return []
        if key not in self._validators:
            info = self.catalog.get(step.server, step.tool)
            self._validators[key] = None if info is None else _compiled(info.input_schema)
        validators = self._validators[key]
        if validators is None:
            return []
        return [
            Problem(step.id, "invalid_arguments", message)
            for message in _argument_errors(
                f"{step.server}.{step.tool}", step.arguments, validators
            )
        ]

    def reference_problems(self, step: Step, producers: Mapping[str, Step]) -> list[Problem]:
        """References whose path the producing tool's `outputSchema` rules out."""
        if self.catalog is None:
            return []
        typed = [d for d in step.depends_on if d in producers and self._output_schema(producers[d])]
        if not typed:
            return []  # no reference here can be checked: skip the walk
        problems: list[Problem] = []
        for path, text in _walk_strings(step.arguments):
            if "${" not in text:
                continue
            try:
                parts = parse_template(text)
            except StepReferenceError:
                continue  # reported by parse_steps
            for ref in parts:
                if not isinstance(ref, StepRef) or not ref.path or ref.step not in producers:
                    continue
                info = self._output_schema(producers[ref.step])
                if info is None:
                    continue
                why = _output_path_problem(ref, info)
                if why is not None:
                    message = f"the reference '{ref}' in arguments{path} {why}"
                    problems.append(Problem(step.id, "invalid_reference", message))
        return problems

    def _output_schema(self, producer: Step) -> ToolInfo | None:
        """The producer's tool, when it declares an `outputSchema`."""
        assert self.catalog is not None
        key = (producer.server, producer.tool)
        if key not in self._outputs:
            info = self.catalog.get(*key)
            self._outputs[key] = info if info is not None and info.output_schema else None
        return self._outputs[key]

    def _tool_problem(self, server: str, tool: str) -> tuple[str, str] | None:
        name = f"{server}.{tool}"
        if self.catalog is not None and self.catalog.get(server, tool) is None:
            return ("unknown_tool", self._unknown_tool_message(server, tool))
        if self.policy is not None:
            reason = self.policy.explain(server, tool)
            if reason is not None:
                close = self._close_names(name)
                instead = (
                    f"use an allowed tool such as {_or_list(close)}"
                    if close
                    else "use an allowed tool"
                )
                return (
                    "tool_not_allowed",
                    f"the tool {name!r} is not allowed ({reason}): {instead}",
                )
        return None

    def _unknown_tool_message(self, server: str, tool: str) -> str:
        assert self.catalog is not None
        catalog = self.catalog
        name = f"{server}.{tool}"
        exact = _alias_match(catalog, server, tool)
        if exact is not None and self._allowed(*exact):
            guess = f"{exact[0]}.{exact[1]}"
            return (
                f"there is no tool {name!r}: did you mean {guess!r}? Write server "
                f"{exact[0]!r} and tool {exact[1]!r} as separate fields"
            )
        why_down = catalog.down.get(server)
        if why_down is not None:
            return (
                f"the server {server!r} is configured but down ({why_down}): its tools can be "
                "neither checked nor called; fix it (`taskorch config check` says how it "
                "stands) or use another server"
            )
        close = self._close_names(name)
        if server not in catalog.servers():
            servers = catalog.servers()
            known = ", ".join(repr(s) for s in servers[:_MAX_SHOWN]) or "none"
            head = f"there is no server {server!r} (servers: {known})"
        else:
            head = f"the server {server!r} has no tool {tool!r}"
            if not close:
                tools = [t.name for t in catalog.tools_of(server) if self._allowed(server, t.name)]
                listed = ", ".join(repr(t) for t in tools[:_MAX_SHOWN]) or "none allowed"
                return f"{head}: use one of its tools ({listed})"
        if close:
            return f"{head}: did you mean {_or_list(close)}?"
        return f"{head}: use a tool from the catalog"

    def _close_names(self, name: str) -> list[str]:
        if self.catalog is None:
            return []
        if self._names is None:
            self._names = [
                f"{t.server}.{t.name}" for t in self.catalog if self._allowed(t.server, t.name)
            ]
        return _close_matches(name, self._names)

    def _allowed(self, server: str, tool: str) -> bool:
        return self.policy is None or self.policy.allows(server, tool)


def _alias_match(catalog: Catalog, server: str, tool: str) -> tuple[str, str] | None:
    """The tool meant when a model wrote an alias or `server.tool` in one field."""
    for guess in (tool, server, f"{server}__{tool}"):
        info = catalog.by_alias(guess)
        if info is not None:
            return info.key
    prefix = f"{server}."
    if tool.startswith(prefix) and catalog.get(server, tool[len(prefix) :]) is not None:
        return (server, tool[len(prefix) :])
    return None


# --------------------------------------------------------------------------- output paths

# Keywords that can let an object hold keys its `properties` do not list, or that
# make a node's shape depend on more than itself: a path through them is left to run time.
_OPEN_KEYWORDS = frozenset(
    {
        "$ref",
        "$dynamicRef",
        "allOf",
        "anyOf",
        "oneOf",
        "if",
        "dependentSchemas",
        "patternProperties",
        "unevaluatedProperties",
    }
)
_SCALAR_TYPES = {
    "string": "a string",
    "number": "a number",
    "integer": "an integer",
    "boolean": "a boolean",
    "null": "null",
}


def _output_path_problem(ref: StepRef, info: ToolInfo) -> str | None:
    """Why the tool's `outputSchema` rules `ref`'s path out, or `None` when it may exist.

    A key an object schema does not list is ruled out when the schema lists its
    keys and says nothing of others (or forbids them): reading an undeclared key
    is a mistake far more often than a tool's undeclared extra. Anything the
    schema leaves open (composition, `$ref`, pattern properties) is left to run time.
    """
    schema: Any = info.output_schema
    tool = f"{info.server}.{info.name}"
    walked: str = ref.step
    for depth, seg in enumerate(ref.path):
        if not isinstance(schema, dict) or not _OPEN_KEYWORDS.isdisjoint(schema):
            return None
        props = schema.get("properties")
        props = props if isinstance(props, dict) else {}
        if depth == 0 and seg == "content" and "content" not in props:
            return None  # `${s.content...}` may address the tool's content blocks
        declared = schema.get("type")
        types = {declared} if isinstance(declared, str) else set(declared or ())
        if props or types == {"object"}:
            if seg in props:
                schema = props[seg]
            else:
                extra = schema.get("additionalProperties")
                if isinstance(extra, dict) and extra:
                    schema = extra
                elif extra is False or (extra is None and props):
                    return _undeclared_key(ref, tool, walked, seg, list(props))
                else:
                    return None
        elif types == {"array"}:
            if not seg.isdigit():
                return (
                    f"reads '{seg}', but in the output of '{tool}' '{walked}' is an array: "
                    f"'{seg}' is not an index in it; write a number such as '{walked}.0'"
                )
            schema = schema.get("items")
        elif types and types <= set(_SCALAR_TYPES):
            what = " or ".join(_SCALAR_TYPES[t] for t in sorted(types))
            return (
                f"reads '{seg}', but in the output of '{tool}' '{walked}' is {what}, which has "
                f"no '{seg}': reference '${{{walked}}}' itself"
            )
        else:
            return None
        walked = f"{walked}.{seg}"
    return None


def _undeclared_key(ref: StepRef, tool: str, walked: str, seg: str, keys: list[str]) -> str:
    head = (
        f"reads '{seg}', but in the output of '{tool}' (its outputSchema) '{walked}' has "
        f"only {_and_list(keys[: _MAX_SHOWN * 2]) or 'no keys'}"
    )
    close = _close_matches(seg, keys, n=1)
    if not close:
        return f"{head}: read one of those"
    fixed = StepRef(ref.step, tuple(close[0] if p is seg else p for p in ref.path))
    return f"{head}: did you mean '{fixed}'?"


# --------------------------------------------------------------------------- arguments


class _Whole:
    """Stands for a value that is exactly one reference: any JSON value at run time."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return repr(self.text)


class _Templated(str):
    """A string with references inside: certainly a string, its content unknown."""

    __slots__ = ()


class _PartialDict(dict[str, Any]):
    """An object holding, at some depth, a value only run time knows."""


class _PartialList(list[Any]):
    """An array holding, at some depth, a value only run time knows."""


_UNKNOWN = (_Whole, _Templated, _PartialDict, _PartialList)

# Keywords an unknown part of the instance could turn from pass to fail or back.
_UNSURE_KEYWORDS = frozenset({"not", "if", "enum", "const", "contains", "disallow"})
# Keywords about a string's content rather than its type.
_CONTENT_KEYWORDS = frozenset(
    {
        "pattern",
        "minLength",
        "maxLength",
        "format",
        "contentEncoding",
        "contentMediaType",
        "contentSchema",
    }
)

_KeywordFn = Callable[[Validator, Any, Any, Any], Iterator[ValidationError] | None]


def _lenient(keyword: str, check: _KeywordFn, any_of: _KeywordFn | None) -> _KeywordFn:
    def run(
        validator: Validator, value: Any, instance: Any, schema: Any
    ) -> Iterator[ValidationError]:
        if isinstance(instance, _UNKNOWN):
            if isinstance(instance, _Whole):
                return
            if keyword == "oneOf":
                # Placeholders pass every branch, so "more than one" proves nothing;
                # "none" still does.
                if any_of is not None:
                    yield from any_of(validator, value, instance, schema) or ()
                return
            if keyword in _UNSURE_KEYWORDS:
                return
            if keyword in _CONTENT_KEYWORDS and isinstance(instance, _Templated):
                return
        yield from check(validator, value, instance, schema) or ()

    return run


@functools.cache
def _lenient_class(base: type[Validator]) -> type[Validator]:
    keywords: dict[str, _KeywordFn] = dict(base.VALIDATORS)
    any_of = keywords.get("anyOf")
    wrapped = {k: _lenient(k, fn, any_of) for k, fn in keywords.items()}
    extended: type[Validator] = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
        base, validators=wrapped
    )
    return extended


@dataclass(frozen=True, slots=True)
class _Validators:
    plain: Validator
    """For arguments with no references: the fast path."""
    lenient: Validator
    """For arguments with references replaced by placeholders."""
    properties: tuple[str, ...]
    """Top-level property names, to list in messages."""
    fast: _Fast | None
    """A quick acceptor for common schemas, or `None` when the schema is beyond it."""


def _refuse_remote(uri: str) -> Resource[Any]:
    # A tool's schema must never make taskorch fetch a URL (or even resolve a
    # name): a remote `$ref` is simply unresolvable, and the arguments unchecked.
    raise NoSuchResource(ref=uri)  # type: ignore[call-arg]


_LOCAL_ONLY: Registry[Any] = Registry(retrieve=_refuse_remote)  # type: ignore[call-arg]


def _compiled(schema: Mapping[str, Any]) -> _Validators | None:
    try:
        key = json.dumps(schema, sort_keys=True, separators=(",", ":"), default=repr)
    except ValueError:
        return None
    return _compile_cached(key)


@functools.lru_cache(maxsize=1024)
def _compile_cached(key: str) -> _Validators | None:
    schema = json.loads(key)
    base: type[Validator] = jsonschema.validators.validator_for(
        schema, default=jsonschema.Draft202012Validator
    )
    try:
        base.check_schema(schema)
    except SchemaError as exc:
        # The downstream server's fault, not the plan's: run time will tell.
        logger.warning("a tool's inputSchema is not valid, arguments not checked: %s", exc.message)
        return None
    props = schema.get("properties") if isinstance(schema, dict) else None
    return _Validators(
        plain=base(schema, registry=_LOCAL_ONLY),
        lenient=_lenient_class(base)(schema, registry=_LOCAL_ONLY),
        properties=tuple(props) if isinstance(props, dict) else (),
        fast=_Fast.compile(schema, root=True),
    )


def _checkable(value: Any) -> Any:
    """A copy of `value` as schema checks should see it (see the module docstring).

    Returns `value` itself when nothing in it needs replacing.
    """
    if isinstance(value, str):
        if "$" not in value:
            return value
        parts = parse_template(value)
        if all(isinstance(p, str) for p in parts):
            # Only `$$` escapes: the tool receives the unescaped text.
            return "".join(p for p in parts if isinstance(p, str))
        if len(parts) == 1:
            return _Whole(value)
        return _Templated(value)
    if isinstance(value, dict):
        out = {k: _checkable(v) for k, v in value.items()}
        if all(out[k] is v for k, v in value.items()):
            return value
        if any(isinstance(v, _UNKNOWN) for v in out.values()):
            return _PartialDict(out)
        return out
    if isinstance(value, list | tuple):
        items = [_checkable(v) for v in value]
        if all(a is b for a, b in zip(items, value, strict=True)) and isinstance(value, list):
            return value
        if any(isinstance(v, _UNKNOWN) for v in items):
            return _PartialList(items)
        return items
    return value


_ANNOTATION_KEYWORDS = frozenset(
    {
        "$comment",
        "$defs",
        "definitions",
        "default",
        "deprecated",
        "description",
        "examples",
        "format",
        "readOnly",
        "title",
        "writeOnly",
    }
)
# Drafts in which every keyword `_Fast` knows means what `_Fast` does.
_FAST_DIALECTS = frozenset(
    f"{scheme}://json-schema.org/{path}{tail}"
    for scheme in ("http", "https")
    for path in (
        "draft/2020-12/schema",
        "draft/2019-09/schema",
        "draft-07/schema",
        "draft-06/schema",
    )
    for tail in ("", "#")
)
_JSON_TYPES = frozenset({"null", "boolean", "integer", "number", "string", "array", "object"})
_Bound = int | float | None


class _Fast:
    """A quick, conservative acceptor for the schemas most tools declare.

    jsonschema spends tens of microseconds on even a small object; a plan of
    10,000 steps cannot afford that for every step. `accepts` only ever says
    yes when jsonschema (with the reference rules of this module) would find
    no error; when it says no, or the schema uses a keyword it does not know,
    the full validator runs and writes the messages. So it can be wrong only
    in the safe direction, and a property test holds it to that.
    """

    __slots__ = (
        "additional",
        "any",
        "enums",
        "items",
        "max_items",
        "max_length",
        "max_props",
        "maximum",
        "min_items",
        "min_length",
        "min_props",
        "minimum",
        "pattern",
        "props",
        "required",
        "strict_max",
        "strict_min",
        "types",
    )

    def __init__(self) -> None:
        self.any = False
        self.types: frozenset[str] | None = None
        self.enums: tuple[tuple[Any, ...], ...] = ()
        """Each `enum` and `const`: the value must be among every one."""
        self.props: dict[str, _Fast] = {}
        self.required: tuple[str, ...] = ()
        self.additional: _Fast | bool = True
        self.min_props: int | None = None
        self.max_props: int | None = None
        self.items: _Fast | None = None
        self.min_items: int | None = None
        self.max_items: int | None = None
        self.minimum: _Bound = None
        self.maximum: _Bound = None
        self.strict_min: _Bound = None
        self.strict_max: _Bound = None
        self.min_length: int | None = None
        self.max_length: int | None = None
        self.pattern: re.Pattern[str] | None = None

    @classmethod
    def compile(cls, schema: Any, *, root: bool = False) -> _Fast | None:
        """Build an acceptor, or `None` when the schema uses anything else."""
        if schema is True or schema == {}:
            node = cls()
            node.any = True
            return node
        if not isinstance(schema, dict):
            return None
        node = cls()
        for key, value in schema.items():
            if key in _ANNOTATION_KEYWORDS:
                continue
            if key == "$schema" and root and value in _FAST_DIALECTS:
                continue
            if not node._take(key, value):
                return None
        return node

    def _take(self, key: str, value: Any) -> bool:  # noqa: C901 - one branch per keyword
        """Record one keyword; `False` when it is not one this class handles."""
        if key == "type":
            names = [value] if isinstance(value, str) else value
            if not isinstance(names, list) or not set(names) <= _JSON_TYPES:
                return False
            self.types = frozenset(names)
        elif key == "enum":
            if not isinstance(value, list):
                return False
            self.enums = (*self.enums, tuple(value))
        elif key == "const":
            self.enums = (*self.enums, (value,))
        elif key == "properties":
            if not isinstance(value, dict):
                return False
            for name, sub in value.items():
                compiled = _Fast.compile(sub)
                if compiled is None:
                    return False
                self.props[name] = compiled
        elif key == "required":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                return False
            self.required = tuple(value)
        elif key == "additionalProperties":
            if isinstance(value, bool):
                self.additional = value
            else:
                compiled = _Fast.compile(value)
                if compiled is None:
                    return False
                self.additional = compiled
        elif key == "items":
            compiled = _Fast.compile(value) if isinstance(value, dict | bool) else None
            if compiled is None:
                return False
            self.items = compiled
        elif key == "pattern":
            if not isinstance(value, str):
                return False
            try:
                self.pattern = re.compile(value)
            except re.error:
                return False
        elif key in _COUNTS:
            if isinstance(value, bool) or not isinstance(value, int):
                return False
            setattr(self, _COUNTS[key], value)
        elif key in _BOUNDS:
            if isinstance(value, bool) or not isinstance(value, int | float):
                return False
            setattr(self, _BOUNDS[key], value)
        else:
            return False
        return True

    def accepts(self, value: Any, *, literal: bool = False) -> bool:
        """Whether `value` certainly fits (`False` means: ask jsonschema).

        With `literal`, strings are data (resolved arguments): `${...}` is text.
        """
        if self.any:
            return True
        kind = type(value)
        if kind is str:
            if "$" in value and not literal:
                try:
                    parts = parse_template(value)
                except StepReferenceError:
                    return False
                if len(parts) == 1 and isinstance(parts[0], StepRef):
                    return True  # any value at run time
                if any(isinstance(p, StepRef) for p in parts):
                    # Certainly a string, of unknown content.
                    return not self.enums and (self.types is None or "string" in self.types)
                value = "".join(p for p in parts if isinstance(p, str))
            return self._accepts_string(value)
        if kind is dict:
            return (
                self._fits_type("object")
                and not self.enums
                and self._accepts_object(value, literal)
            )
        if kind is list:
            return (
                self._fits_type("array") and not self.enums and self._accepts_array(value, literal)
            )
        if kind is bool or value is None:
            name = "null" if value is None else "boolean"
            return self._fits_type(name) and self._in_enums(value)
        if kind is int or kind is float:
            if kind is int:
                fits = self._fits_type("integer") or self._fits_type("number")
            else:
                # jsonschema counts 1.0 as an integer; leave such cases to it.
                fits = self._fits_type("number")
            return fits and self._in_enums(value) and self._accepts_number(value)
        return False

    def _in_enums(self, value: str | float | bool | None) -> bool:
        return all(_in_enum(value, options) for options in self.enums)

    def _fits_type(self, name: str) -> bool:
        return self.types is None or name in self.types

    def _accepts_string(self, value: str) -> bool:
        if not self._fits_type("string"):
            return False
        if not self._in_enums(value):
            return False
        if self.min_length is not None and len(value) < self.min_length:
            return False
        if self.max_length is not None and len(value) > self.max_length:
            return False
        return self.pattern is None or self.pattern.search(value) is not None

    def _accepts_number(self, value: float) -> bool:
        if self.minimum is not None and value < self.minimum:
            return False
        if self.maximum is not None and value > self.maximum:
            return False
        if self.strict_min is not None and value <= self.strict_min:
            return False
        return self.strict_max is None or value < self.strict_max

    def _accepts_object(self, value: dict[Any, Any], literal: bool) -> bool:
        if self.min_props is not None and len(value) < self.min_props:
            return False
        if self.max_props is not None and len(value) > self.max_props:
            return False
        for name in self.required:
            if name not in value:
                return False
        props = self.props
        additional = self.additional
        for name, item in value.items():
            sub = props.get(name)
            if sub is not None:
                if not sub.accepts(item, literal=literal):
                    return False
            elif additional is False:
                return False
            elif additional is not True and not additional.accepts(item, literal=literal):
                return False
        return True

    def _accepts_array(self, value: list[Any], literal: bool) -> bool:
        if self.min_items is not None and len(value) < self.min_items:
            return False
        if self.max_items is not None and len(value) > self.max_items:
            return False
        items = self.items
        return items is None or all(items.accepts(v, literal=literal) for v in value)


_COUNTS = {
    "minLength": "min_length",
    "maxLength": "max_length",
    "minItems": "min_items",
    "maxItems": "max_items",
    "minProperties": "min_props",
    "maxProperties": "max_props",
}
_BOUNDS = {
    "minimum": "minimum",
    "maximum": "maximum",
    "exclusiveMinimum": "strict_min",
    "exclusiveMaximum": "strict_max",
}


def _in_enum(value: str | float | bool | None, options: tuple[Any, ...]) -> bool:
    """Whether a scalar is among the options, with JSON's rules: `true` is not `1`."""
    kind = type(value)
    return any(type(o) is kind and o == value for o in options)


def _argument_errors(
    name: str, arguments: Mapping[str, Any], validators: _Validators, *, literal: bool = False
) -> list[str]:
    try:
        if validators.fast is not None and validators.fast.accepts(arguments, literal=literal):
            return []
        instance = arguments if literal else _checkable(arguments)
        checker = validators.lenient if isinstance(instance, _UNKNOWN) else validators.plain
        errors = list(checker.iter_errors(instance))
    except StepReferenceError as exc:
        return [f"the arguments hold a malformed reference: {exc}"]
    except RecursionError:
        return [f"the arguments are nested too deeply to check against {name!r}: flatten them"]
    except Unresolvable as exc:
        logger.warning("cannot resolve a $ref in the inputSchema of %s: %s", name, exc)
        return []
    errors.sort(key=lambda e: (list(map(str, e.absolute_path)), str(e.validator)))
    # One `required` error comes per missing key, each naming them all: keep one.
    return list(dict.fromkeys(_schema_message(name, e, validators.properties) for e in errors))


def _schema_message(tool: str, error: ValidationError, properties: tuple[str, ...]) -> str:
    where = "arguments" + error.json_path.removeprefix("$")
    keyword = error.validator
    at_root = not error.absolute_path
    if keyword == "required" and isinstance(error.instance, dict):
        required = error.validator_value if isinstance(error.validator_value, list) else []
        missing = [k for k in required if k not in error.instance]
        names = _and_list(missing) or "a required key"
        if at_root:
            return f"{tool!r} requires the argument(s) {names}, which the step lacks: add them"
        return f"{where} lacks the key(s) {names}, which {tool!r} requires there: add them"
    if keyword == "additionalProperties" and at_root and isinstance(error.instance, dict):
        extra = _extra_keys(error)
        if extra:
            hints = []
            for key in extra:
                close = _close_matches(key, properties, n=1)
                if close:
                    hints.append(f"{key!r} -> {close[0]!r}")
            rename = f" (did you mean {', '.join(hints)}?)" if hints else ""
            accepted = _and_list(properties[: _MAX_SHOWN * 2]) or "none"
            return (
                f"{tool!r} takes no argument(s) {_and_list(extra)}{rename}: remove them; "
                f"its arguments are {accepted}"
            )
    message = error.message
    if len(message) > 2 * _MAX_MESSAGE_VALUE:
        message = message[: 2 * _MAX_MESSAGE_VALUE - 3] + "..."
    return f"{where} does not fit the input schema of {tool!r}: {message}; change it to match"


def _extra_keys(error: ValidationError) -> list[str]:
    """The keys `additionalProperties` refused, when the schema says plainly which."""
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    if "patternProperties" in schema:
        return []
    props = schema.get("properties")
    known = props if isinstance(props, Mapping) else {}
    instance = error.instance
    return [k for k in instance if k not in known] if isinstance(instance, Mapping) else []


def _and_list(names: Sequence[str]) -> str:
    return ", ".join(repr(n) for n in names)
