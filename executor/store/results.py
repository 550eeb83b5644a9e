"""A step's result, stored once: a skeleton, and each distinct long string apart.

`skeleton` is the result's JSON with every long string (at least `_PART_MIN`
characters) emptied; `parts` says where each one goes, and `result_parts` holds
each distinct one once, so a tool that repeats its text in its structured
content costs one copy. The functions that touch the database run on the
store's worker thread.
"""

from __future__ import annotations

import copy
import json
import math
import re
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from executor.calls import ToolResult
from executor.records import StepState
from executor.store.codecs import dumps

__all__ = [
    "DELETE_RESULT",
    "ResultRows",
    "assemble",
    "read_result",
    "result_rows",
    "write_result",
]

_PART_MIN: Final = 1024
"""Strings of at least this many characters are stored apart, each distinct one once."""


@dataclass(frozen=True, slots=True)
class ResultRows:
    """A result ready to store: its skeleton, where its long strings go, and those strings."""

    key: tuple[str, int, str]
    """(plan_id, version, step_id)."""
    skeleton: str
    """The result's JSON, its long strings emptied."""
    parts: str
    """JSON `[[path, part], ...]`: where each long string goes."""
    blobs: list[str | bytes]
    """Each distinct long string, by part number (bytes when UTF-8 cannot say it)."""


def result_rows(state: StepState) -> ResultRows | None:
    """Split a state's result into its skeleton and its long strings; `None` without one."""
    if state.result is None:
        return None
    result = state.result
    # A copy of the containers only: the long strings are shared, not duplicated.
    value = copy.deepcopy(
        {
            "content": result.content,
            "structured_content": result.structured_content,
            "is_error": result.is_error,
        }
    )
    split = _split_long_strings(value)
    if split is None:
        # Not plain JSON (bytes, datetimes, models...): encode it as pydantic would.
        value = result.model_dump(mode="json")
        split = _split_long_strings(value)
        assert split is not None
    places, blobs = split
    return ResultRows(
        key=(state.plan_id, state.version, state.step_id),
        skeleton=dumps(value),
        parts=dumps(places),
        blobs=blobs,
    )


def _split_long_strings(
    value: dict[str, Any],
) -> tuple[list[tuple[list[str | int], int]], list[str | bytes]] | None:
    """Empty every long string of `value` in place; `None` when it is not plain JSON.

    Returns:
        Where each string was (path, part number) and each distinct string, as the
        string itself (stored as TEXT: sqlite3 reads an ASCII string's own buffer, so
        a large part is not copied here first) or, when it holds lone surrogates
        that UTF-8 cannot say, as bytes (a BLOB, "surrogatepass").
    """
    places: list[tuple[list[str | int], int]] = []
    index: dict[str, int] = {}
    blobs: list[str | bytes] = []
    stack: list[tuple[Any, list[str | int]]] = [(value, [])]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            if not all(isinstance(k, str) for k in node):
                return None
            items: Iterable[tuple[Any, Any]] = node.items()
        else:
            items = enumerate(node)
        for key, item in items:
            if isinstance(item, str):
                if len(item) < _PART_MIN:
                    continue
                part = index.get(item)
                if part is None:
                    part = index[item] = len(blobs)
                    blobs.append(
                        item if _utf8_safe(item) else item.encode("utf-8", "surrogatepass")
                    )
                places.append(([*path, key], part))
                node[key] = ""
            elif isinstance(item, dict | list):
                stack.append((item, [*path, key]))
            elif not _plain_scalar(item):
                return None
    return places, blobs


_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def _utf8_safe(text: str) -> bool:
    """Whether UTF-8 can say `text` (no lone surrogates), checked without a copy."""
    return text.isascii() or _SURROGATE.search(text) is None


def _plain_scalar(item: Any) -> bool:
    if item is None or isinstance(item, bool | int):
        return True
    return isinstance(item, float) and math.isfinite(item)


DELETE_RESULT: Final = "DELETE FROM step_results WHERE plan_id = ? AND version = ? AND step_id = ?"


def write_result(conn: sqlite3.Connection, rows: ResultRows) -> None:
    """Store a step's result in place of its previous one (worker thread)."""
    # The step's previous result (and its parts, by cascade) gives way to this one.
    conn.execute(DELETE_RESULT, rows.key)
    conn.execute(
        "INSERT INTO step_results (plan_id, version, step_id, skeleton, parts)"
        " VALUES (?, ?, ?, ?, ?)",
        (*rows.key, rows.skeleton, rows.parts),
    )
    conn.executemany(
        "INSERT INTO result_parts (plan_id, version, step_id, part, data) VALUES (?, ?, ?, ?, ?)",
        ((*rows.key, i, blob) for i, blob in enumerate(rows.blobs)),
    )


def read_result(conn: sqlite3.Connection, key: tuple[str, int, str]) -> ToolResult | None:
    """Rebuild a stored result (worker thread); `None` when the step has none."""
    where = " WHERE plan_id = ? AND version = ? AND step_id = ?"
    row = conn.execute("SELECT skeleton, parts FROM step_results" + where, key).fetchone()
    if row is None:
        # Rows written before results had their own table keep them with the state.
        old = conn.execute("SELECT result FROM step_states" + where, key).fetchone()
        if old is None or old[0] is None:
            return None
        return ToolResult.model_validate_json(old[0])
    strings = {
        int(part): data if isinstance(data, str) else bytes(data).decode("utf-8", "surrogatepass")
        for part, data in conn.execute("SELECT part, data FROM result_parts" + where, key)
    }
    return assemble(row[0], row[1], strings)


def assemble(skeleton: str, parts: str, strings: Mapping[int, str]) -> ToolResult:
    """Rebuild a result from its skeleton, where its long strings go, and those strings."""
    value = json.loads(skeleton)
    for path, part in json.loads(parts):
        node = value
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = strings[part]
    return ToolResult.model_construct(
        content=value["content"],
        structured_content=value["structured_content"],
        is_error=value["is_error"],
    )
