"""The tool catalog: lookups and LLM-safe aliases."""

from __future__ import annotations

import random
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from executor.catalog import ALIAS_MAX, Catalog, ToolAnnotations, ToolInfo, make_alias

ALIAS = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def tool(server: str, name: str) -> ToolInfo:
    return ToolInfo(server=server, name=name)


def test_lookups() -> None:
    catalog = Catalog([tool("time", "now"), tool("fs", "read.file"), tool("fs", "a_write")])
    assert len(catalog) == 3
    assert ("fs", "read.file") in catalog
    assert ("fs", "nope") not in catalog
    info = catalog.get("fs", "read.file")
    assert info is not None
    assert info.alias == "fs__read_file"
    assert catalog.by_alias("fs__read_file") == info
    assert catalog.get("time", "nope") is None
    assert catalog.by_alias("nope") is None
    assert catalog.servers() == ["fs", "time"]
    assert [t.name for t in catalog.tools_of("fs")] == ["a_write", "read.file"]
    assert catalog.tools_of("none") == []
    assert {t.key for t in catalog} == {("time", "now"), ("fs", "read.file"), ("fs", "a_write")}


def test_colliding_names_get_distinct_aliases() -> None:
    catalog = Catalog([tool("a.b", "c"), tool("a b", "c"), tool("a_b", "c")])
    aliases = [t.alias for t in catalog]
    assert len(set(aliases)) == 3
    assert "a_b__c" in aliases
    assert all(ALIAS.match(a) for a in aliases)


def test_long_names_are_shortened_with_a_digest() -> None:
    long = "x" * 100
    alias = make_alias("server", long, set())
    assert len(alias) == ALIAS_MAX
    assert ALIAS.match(alias)
    # Two long names sharing the first 64 characters still differ.
    other = make_alias("server", long + "y", {alias})
    assert other != alias
    assert ALIAS.match(other)


def test_unusable_characters_only() -> None:
    assert make_alias("!!!", "???", set()) == "tool"
    assert ALIAS.match(make_alias("é", "ü", {"tool"}))


def test_annotations_defaults_follow_mcp() -> None:
    hints = ToolAnnotations()
    assert hints.destructive and hints.open_world
    assert not hints.safe_to_repeat
    assert ToolAnnotations(read_only=True).safe_to_repeat
    assert ToolAnnotations(idempotent=True).safe_to_repeat


names = st.text(min_size=1, max_size=90)
# Names that collide once unsafe characters become '_'.
colliding = st.lists(st.sampled_from(["a.b", "a b", "a/b", "a_b", "a__b", "a:b"]), min_size=1)


@settings(derandomize=True, max_examples=200, deadline=None)
@given(
    pairs=st.lists(st.tuples(names | st.sampled_from(["a.b", "a b"]), names), max_size=30)
    | st.lists(st.tuples(colliding.map(lambda c: c[0]), st.sampled_from(["c", "c.d", "c d"]))),
    seed=st.integers(0, 2**32),
)
def test_aliases_are_safe_unique_and_order_independent(
    pairs: list[tuple[str, str]], seed: int
) -> None:
    catalog = Catalog(tool(s, t) for s, t in pairs)
    aliases = [t.alias for t in catalog]
    assert all(ALIAS.match(a) for a in aliases), aliases
    assert len(aliases) == len(set(aliases)) == len(set(pairs))
    for info in catalog:
        assert catalog.by_alias(info.alias) == info
        assert catalog.get(info.server, info.name) == info
    shuffled = list(pairs)
    random.Random(seed).shuffle(shuffled)
    again = Catalog(tool(s, t) for s, t in shuffled)
    assert {t.key: t.alias for t in again} == {t.key: t.alias for t in catalog}


@settings(derandomize=True)
@given(taken=st.sets(st.from_regex(r"[a-z]{1,3}__[a-z]{1,3}", fullmatch=True), max_size=50))
def test_make_alias_avoids_taken(taken: set[str]) -> None:
    for server, name in [("a", "b"), ("ab", "c"), ("x", "yz")]:
        alias = make_alias(server, name, taken)
        assert alias not in taken
        assert ALIAS.match(alias)
