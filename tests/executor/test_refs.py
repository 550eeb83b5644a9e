"""The `${step.path}` reference syntax: parsing, finding and resolving."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from executor.errors import StepReferenceError
from executor.ids import StepId
from executor.refs import StepRef, find_references, parse_template, resolve_references


def ref(step: str, path: tuple[str, ...] = ()) -> StepRef:
    return StepRef(StepId(step), path)


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("plain", ["plain"]),
        ("", [""]),
        ("${s1}", [ref("s1")]),
        ("${s1.a.b.0}", [ref("s1", ("a", "b", "0"))]),
        ("${_x-y}", [ref("_x-y")]),
        ("hi ${s1.name}!", ["hi ", ref("s1", ("name",)), "!"]),
        ("${a}${b}", [ref("a"), ref("b")]),
        ("cost $$5", ["cost $5"]),
        ("$${a}", ["${a}"]),
        ("$$$${a}", ["$${a}"]),
        ("$$${a}", ["$", ref("a")]),
        ("5$ and $x and $", ["5$ and $x and $"]),
        ("a $} b", ["a $} b"]),
        ("x${a}y$$z", ["x", ref("a"), "y$z"]),
    ],
)
def test_parse_template(text: str, parts: list[str | StepRef]) -> None:
    assert parse_template(text) == parts


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("${", "unclosed reference"),
        ("abc ${s1.x", "unclosed reference"),
        ("${}", "malformed reference '${}'"),
        ("${1abc}", "malformed reference '${1abc}'"),
        ("${a..b}", "malformed reference"),
        ("${a.}", "malformed reference"),
        ("${a b}", "malformed reference"),
        ("${a.b c}", "malformed reference"),
        ("${a[0]}", "malformed reference"),
        ("${" + "x" * 65 + "}", "malformed reference"),
    ],
)
def test_parse_template_rejects_malformed_references(text: str, fragment: str) -> None:
    with pytest.raises(StepReferenceError, match=fragment.replace("$", r"\$").replace("{", r"\{")):
        parse_template(text)


def test_malformed_reference_message_says_what_to_write() -> None:
    with pytest.raises(StepReferenceError) as info:
        parse_template("${not valid}")
    assert "${step_id.key.0}" in str(info.value)
    with pytest.raises(StepReferenceError) as info:
        parse_template("price ${")
    assert "'$$'" in str(info.value)


def test_step_ref_str() -> None:
    assert str(ref("s1")) == "${s1}"
    assert str(ref("s1", ("a", "0"))) == "${s1.a.0}"


def test_find_references_in_document_order() -> None:
    value = {
        "a": "${s1}",
        "b": ["x ${s2.k} ${s3}", {"c": "${s4.0}"}],
        "d": ("${s5}",),
        "e": 3,
        "f": None,
        "g": "$${not_a_ref}",
    }
    assert find_references(value) == [
        ref("s1"),
        ref("s2", ("k",)),
        ref("s3"),
        ref("s4", ("0",)),
        ref("s5"),
    ]


def test_find_references_raises_on_malformed() -> None:
    with pytest.raises(StepReferenceError):
        find_references({"a": ["${bad ref}"]})


def test_find_references_handles_deep_nesting() -> None:
    value: Any = "${deep}"
    for _ in range(5000):
        value = [value]
    assert find_references(value) == [ref("deep")]


OUTPUTS: dict[str, Any] = {
    "s1": {"name": "Ada", "n": 3, "items": [{"id": 7}, {"id": 8}], "nothing": None, "ok": True},
    "s2": "plain text",
    "s3": [1, 2, 3],
    "s4": None,
}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("${s1.n}", 3),
        ("${s1.items}", [{"id": 7}, {"id": 8}]),
        ("${s1.items.1.id}", 8),
        ("${s1.nothing}", None),
        ("${s1.ok}", True),
        ("${s4}", None),
        ("${s3.0}", 1),
        ("${s2}", "plain text"),
        ("name=${s1.name}", "name=Ada"),
        ("n=${s1.n}", "n=3"),
        ("items=${s1.items}", 'items=[{"id":7},{"id":8}]'),
        ("none=${s4}", "none=null"),
        ("ok=${s1.ok}", "ok=true"),
        ("$$${s1.n}", "$3"),
        ("$${s1.n}", "${s1.n}"),
        ("no refs", "no refs"),
        (
            {"a": ["${s1.n}", {"b": "x${s2}"}], "c": 1.5, "d": None},
            {"a": [3, {"b": "xplain text"}], "c": 1.5, "d": None},
        ),
        (("${s3.2}",), [3]),
    ],
)
def test_resolve_references(value: Any, expected: Any) -> None:
    assert resolve_references(value, OUTPUTS) == expected


def test_resolve_keeps_the_type_of_whole_references() -> None:
    resolved = resolve_references({"n": "${s1.n}", "f": "${s1.ok}"}, OUTPUTS)
    assert type(resolved["n"]) is int
    assert type(resolved["f"]) is bool


def test_resolve_does_not_modify_its_input() -> None:
    value = {"a": ["${s1.n}"]}
    resolve_references(value, OUTPUTS)
    assert value == {"a": ["${s1.n}"]}


def test_interpolation_keeps_non_ascii() -> None:
    assert resolve_references("x ${a}", {"a": {"k": "é"}}) == 'x {"k":"é"}'


@pytest.mark.parametrize(
    ("value", "fragments"),
    [
        ("${s9}", ["${s9}", "step 's9' has no output"]),
        ("${s1.missing}", ["'s1' has no key 'missing'", "'name'", "'items'"]),
        ("${s1.items.5}", ["'s1.items' is an array of length 2", "'5' is not an index"]),
        ("${s1.items.x}", ["'s1.items' is an array", "'x' is not an index"]),
        ("${s1.n.k}", ["'s1.n' is a int", "'k' cannot be read"]),
        ("${s4.k}", ["'s4' is a null"]),
        ("${s2.k}", ["'s2' is a str"]),
        ("text ${s1.items.0.nope}", ["'s1.items.0' has no key 'nope'", "'id'"]),
    ],
)
def test_resolve_errors_name_the_path_and_what_exists(value: Any, fragments: list[str]) -> None:
    with pytest.raises(StepReferenceError) as info:
        resolve_references({"arg": value}, OUTPUTS)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_resolve_error_on_empty_object_says_none() -> None:
    with pytest.raises(StepReferenceError, match="keys there: none"):
        resolve_references("${a.b}", {"a": {}})


def test_resolve_raises_on_malformed() -> None:
    with pytest.raises(StepReferenceError, match="malformed"):
        resolve_references({"a": "${x y}"}, OUTPUTS)


@settings(derandomize=True)
@given(st.text())
def test_escaping_every_dollar_gives_back_the_text(text: str) -> None:
    assert resolve_references(text.replace("$", "$$"), {}) == text
    assert find_references(text.replace("$", "$$")) == []


@settings(derandomize=True)
@given(st.text(st.characters(exclude_characters="$")))
def test_text_without_dollar_is_one_literal(text: str) -> None:
    assert parse_template(text) == [text]


@settings(derandomize=True)
@given(
    st.dictionaries(
        st.from_regex(r"[a-z_][a-z0-9_]{0,5}", fullmatch=True),
        st.none() | st.booleans() | st.integers() | st.text() | st.lists(st.integers()),
        min_size=1,
    )
)
def test_whole_reference_returns_the_value_itself(outputs: dict[str, Any]) -> None:
    for step, value in outputs.items():
        assert resolve_references("${" + step + "}", outputs) == value
