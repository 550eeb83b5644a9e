"""Which tools the model is shown: the policy's, and above a threshold the most relevant.

Ranking is lexical, BM25 (`rank_bm25`) over each tool's server, name, title,
description and argument names, against the query (and a revision's feedback).
It needs no model and no network, is deterministic, and for tool catalogs, whose
descriptions are short and literal, does well enough that the tools a request
names are kept. The index is built once per catalog (catalogs are immutable)
and kept while the catalog lives.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Collection, Sequence
from typing import Any

from executor.catalog import Catalog, ToolInfo
from executor.policy import ToolPolicy

__all__ = [
    "SHORTLIST_SIZE",
    "SHORTLIST_THRESHOLD",
    "allowed_tools",
    "closest",
    "considered_aliases",
    "shortlist",
    "tokenize",
]

SHORTLIST_THRESHOLD = 40
"""Above this many allowed tools, only a ranked shortlist is shown."""
SHORTLIST_SIZE = 20
"""How many tools a shortlist holds (tools a revised plan used come on top)."""

_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_WORD = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset(
    "a an and are as at be by do for from get give how i in into is it its me my of on or "
    "please show tell that the then this to use what when which with you your".split()
)
_DESCRIPTION_CHARS = 600
"""Description text indexed per tool; the opening says what a tool does."""


def tokenize(text: str) -> list[str]:
    """Split text into lowercase terms for ranking.

    camelCase and snake_case are split, common words dropped, and a plural `s`
    removed, so `listFiles` matches "list the file".
    """
    words = _WORD.findall(_CAMEL.sub(r"\1 \2", text).lower())
    out: list[str] = []
    for w in words:
        if w in _STOPWORDS:
            continue
        if len(w) > 4 and w.endswith("ies"):
            w = w[:-3] + "y"
        elif len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
            w = w[:-1]
        out.append(w)
    return out


def allowed_tools(catalog: Catalog, policy: ToolPolicy) -> list[ToolInfo]:
    """The catalog's tools the policy allows, in catalog order."""
    return [t for t in catalog if policy.allows(t.server, t.name)]


def _document(tool: ToolInfo) -> list[str]:
    props = tool.input_schema.get("properties")
    names = " ".join(str(k) for k in props) if isinstance(props, dict) else ""
    # The name twice: it is the strongest single signal of what a tool does.
    text = " ".join(
        (
            tool.server,
            tool.name,
            tool.name,
            tool.title or "",
            tool.description[:_DESCRIPTION_CHARS],
            names,
        )
    )
    return tokenize(text)


class _Index:
    def __init__(self, catalog: Catalog) -> None:
        from rank_bm25 import BM25Okapi  # numpy behind it: loaded only when needed

        self.tools = list(catalog)
        self.position = {t.key: i for i, t in enumerate(self.tools)}
        self.bm25: Any = BM25Okapi([_document(t) or ["_"] for t in self.tools])
        self._last: tuple[str, list[float]] | None = None

    def scores(self, query: str) -> list[float]:
        # One request ranks twice (the shortlist, then the example's tool): keep the last.
        if self._last is not None and self._last[0] == query:
            return self._last[1]
        terms = tokenize(query)
        scores = (
            [float(s) for s in self.bm25.get_scores(terms)] if terms else [0.0] * len(self.tools)
        )
        self._last = (query, scores)
        return scores


_INDEXES: weakref.WeakKeyDictionary[Catalog, _Index] = weakref.WeakKeyDictionary()


def shortlist(
    catalog: Catalog,
    policy: ToolPolicy,
    query: str,
    *,
    size: int = SHORTLIST_SIZE,
    threshold: int = SHORTLIST_THRESHOLD,
    keep: Collection[tuple[str, str]] = (),
) -> list[ToolInfo]:
    """The tools to show the model for this query.

    Args:
        catalog: Every tool.
        policy: The agent's tool policy; refused tools are never shown.
        query: What the user asked for (plus any feedback).
        size: How many ranked tools to keep above the threshold.
        threshold: At or below this many allowed tools, all of them are shown.
        keep: `(server, tool)` pairs to show whatever their rank (a revised
            plan's tools), when the policy allows them.

    Returns:
        The tools, in catalog order.
    """
    allowed = allowed_tools(catalog, policy)
    if len(allowed) <= threshold:
        return allowed
    index = _index(catalog)
    scores = index.scores(query)
    ranked = sorted(allowed, key=lambda t: (-scores[index.position[t.key]], index.position[t.key]))
    chosen = {t.key for t in ranked[:size]}
    chosen.update(k for k in keep if k in catalog and policy.allows(*k))
    return [t for t in allowed if t.key in chosen]


def closest(catalog: Catalog, tools: Sequence[ToolInfo], query: str) -> ToolInfo:
    """The tool among `tools` (all from `catalog`) that ranks first for `query`.

    Ties, as when no term of the query matches, go to the first of `tools`.

    Raises:
        ValueError: `tools` is empty.
    """
    if not tools:
        raise ValueError("no tools to choose from")
    if len(tools) == 1:
        return tools[0]
    index = _index(catalog)
    scores = index.scores(query)
    best = max(range(len(tools)), key=lambda i: (scores[index.position[tools[i].key]], -i))
    return tools[best]


def _index(catalog: Catalog) -> _Index:
    index = _INDEXES.get(catalog)
    if index is None:
        index = _Index(catalog)
        _INDEXES[catalog] = index
    return index


def considered_aliases(tools: Sequence[ToolInfo]) -> tuple[str, ...]:
    """The aliases of the tools shown, for `PlanDraft.considered_tools`."""
    return tuple(t.alias for t in tools)
