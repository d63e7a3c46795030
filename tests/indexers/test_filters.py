"""The filter dialect: SQL and Python agree, missing fields never match, malformed filters say what is
wrong."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qwen3_rag.indexers.filters import MAX_CONDITIONS, MAX_DEPTH, FilterError, matches, to_sql

scalars = st.one_of(
    st.integers(-3, 3),
    st.sampled_from(["a", "b", "c"]),
    st.booleans(),
    st.floats(-3, 3, allow_nan=False, width=32),
)
fields = st.sampled_from(["x", "y", "z.w"])
metadata = st.dictionaries(fields, st.one_of(scalars, st.none(), st.lists(scalars, max_size=2)), max_size=3)
ops = st.sampled_from(["$eq", "$ne", "$gt", "$gte", "$lt", "$lte"])
leaf = st.one_of(
    st.builds(lambda f, v: {f: v}, fields, scalars),
    st.builds(lambda f, o, v: {f: {o: v}}, fields, ops, scalars),
    st.builds(
        lambda f, o, vs: {f: {o: vs}},
        fields,
        st.sampled_from(["$in", "$nin"]),
        st.lists(scalars, min_size=1, max_size=3),
    ),
)
filters = st.recursive(
    leaf,
    lambda inner: st.one_of(
        st.builds(lambda fs: {"$and": fs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda fs: {"$or": fs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda f: {"$not": f}, inner),
    ),
    max_leaves=5,
)


def sql_matches(flt: dict[str, Any], md: dict[str, Any], ensure_ascii: bool = False) -> bool:
    """The filter run as the store runs it: over a documents table's JSON column, aliased ``d``."""
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE documents (fmeta TEXT NOT NULL)")
    conn.execute("INSERT INTO documents VALUES (?)", (json.dumps(md, ensure_ascii=ensure_ascii, sort_keys=True),))
    sql, params = to_sql(flt, column="d.fmeta")
    return bool(conn.execute(f"SELECT COUNT(*) FROM documents d WHERE {sql}", params).fetchone()[0])


@settings(max_examples=300, deadline=None)
@given(flt=filters, md=metadata)
def test_sql_and_python_agree(flt: dict[str, Any], md: dict[str, Any]) -> None:
    assert sql_matches(flt, md) == matches(flt, md)


@pytest.mark.parametrize(
    ("flt", "md", "expected"),
    [
        ({"year": {"$gte": 2020}}, {"year": 2021}, True),
        ({"year": {"$gte": 2020}}, {}, False),
        ({"year": {"$ne": 2020}}, {}, False),  # a missing field never matches a comparison
        ({"year": {"$nin": [2020]}}, {}, False),
        ({"$not": {"year": 2020}}, {}, True),  # but a negated filter does
        ({"year": {"$gt": 2020}}, {"year": "2021"}, False),  # no comparison across types
        ({"flag": True}, {"flag": 1}, False),
        ({"flag": True}, {"flag": True}, True),
        ({"lang": {"$in": ["en", "de"]}}, {"lang": "de"}, True),
        ({"$or": [{"a": 1}, {"b": 2}], "c": "x"}, {"b": 2, "c": "x"}, True),
        ({"year": {"gte": 2020, "lt": 2022}}, {"year": 2022}, False),
        ({"dotted.name": 1}, {"dotted.name": 1}, True),
        # bare and / or / not are field names; only $and / $or / $not are operators
        ({"or": "x", "not": {"$ne": 1}}, {"or": "x", "not": 2}, True),
        ({"or": "x"}, {"or": "y"}, False),
        ({"and": {"gte": 3}}, {"and": 2}, False),
    ],
)
def test_semantics(flt: dict[str, Any], md: dict[str, Any], expected: bool) -> None:
    assert matches(flt, md) is expected
    assert sql_matches(flt, md) is expected


@pytest.mark.parametrize(
    ("flt", "message"),
    [
        ({"year": {"$between": [1, 2]}}, "unknown operator '\\$between'"),
        ({"$gt": 3}, "needs a field"),
        ({"$or": {"a": 1}}, "needs a non-empty list"),
        ({"a": {"$in": 3}}, "needs a non-empty list"),
        ({"a": {"$eq": [1, 2]}}, "expected a string, number or boolean"),
        ({"a": None}, "expected a string, number or boolean"),
        ({"a": {}}, "empty condition"),
        ([1, 2], "must be a dict"),
        ({"or": [{"a": 1}, {"a": 2}]}, "for the logical operator write '\\$or'"),
        ({"not": {"a": 1}}, "for the logical operator write '\\$not'"),
    ],
)
def test_malformed_filters_raise(flt: Any, message: str) -> None:
    with pytest.raises(FilterError, match=message):
        to_sql(flt)
    with pytest.raises(FilterError):
        matches(flt, {"a": 1})


# -- hostile filters: odd keys and values, big inputs, deep nesting

ODD_TEXT = ['a"b', '"', "a\\b", "a.b", "a[0]", "$", "", "' OR 1=1 --", "x') OR ('1'='1", "é", "北京", "🙂", "\n",
            "a\tb", "[]", "{}", "null", "true", "1"]
# "$gt", "$or" and the like are operators, which a filter refuses as field names (test_malformed_filters_raise)
OPERATOR_KEYS = {f"${op}" for op in ("eq", "ne", "gt", "gte", "lt", "lte", "in", "nin", "and", "or", "not")}
odd_keys = st.one_of(st.sampled_from(ODD_TEXT + ["x", "doc_id", "$x", "and"]),
                     st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=4)
                     ).filter(lambda key: key not in OPERATOR_KEYS)
odd_scalars = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([0, 1, -1, 2**53, 2**53 + 1, 2**63 - 1, -(2**63), 0.0, -0.0, 0.5, 1.0, 2.0**53, 1e300]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.sampled_from(ODD_TEXT),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=5),
)
md_values = st.recursive(st.one_of(odd_scalars, st.none()),
                         lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                 st.dictionaries(st.sampled_from(ODD_TEXT), inner, max_size=2)),
                         max_leaves=4)


@st.composite
def filter_and_metadata(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    keys = draw(st.lists(odd_keys, min_size=1, max_size=4, unique=True))
    field = st.sampled_from(keys)
    # a value the metadata holds is a likely filter value too
    md = draw(st.dictionaries(field, md_values, max_size=len(keys)))
    held = [v for v in md.values() if v is not None and isinstance(v, (str, int, float))]
    value = st.one_of(odd_scalars, st.sampled_from(held)) if held else odd_scalars
    leaf = st.one_of(
        st.builds(lambda f, v: {f: v}, field, value),
        st.builds(lambda f, o, v: {f: {o: v}}, field, st.sampled_from(["$eq", "$ne", "$gt", "$gte", "$lt", "lte"]),
                  value),
        st.builds(lambda f, o, vs: {f: {o: vs}}, field, st.sampled_from(["$in", "nin"]),
                  st.lists(value, min_size=1, max_size=4)),
    )
    flt = draw(st.recursive(leaf, lambda inner: st.one_of(
        st.builds(lambda fs: {"$and": fs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda fs: {"$or": fs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda f: {"$not": f}, inner),
        st.builds(lambda a, b: {**a, **b}, inner, inner),  # several keys in one dict
    ), max_leaves=6))
    return flt, md


@settings(max_examples=600, deadline=None)
@given(case=filter_and_metadata(), ensure_ascii=st.booleans())
def test_sql_and_python_agree_on_hostile_input(case: tuple[dict[str, Any], dict[str, Any]], ensure_ascii: bool) -> None:
    flt, md = case
    assert sql_matches(flt, md, ensure_ascii) == matches(flt, md)


@pytest.mark.parametrize("key", ['a"b', '"', "a\\b", "é", "a\nb", "' OR 1=1 --", "a[0]", "a.b"])
def test_any_field_name_matches_itself(key: str) -> None:
    for ensure_ascii in (False, True):
        assert sql_matches({key: 1}, {key: 1}, ensure_ascii) is True
        assert sql_matches({key: 1}, {key: 2, "x": 1}, ensure_ascii) is False
    assert matches({key: 1}, {key: 1}) is True


def test_an_injection_is_only_a_value() -> None:
    flt = {"lang": "en' OR 1=1 --"}
    assert sql_matches(flt, {"lang": "de"}) is False
    assert sql_matches(flt, {"lang": "en' OR 1=1 --"}) is True


def test_long_lists_of_values_and_alternatives() -> None:
    many = list(range(5000))
    assert sql_matches({"x": {"$in": many}}, {"x": 4999}) is True
    assert sql_matches({"x": {"$nin": many}}, {"x": 4999}) is False
    assert sql_matches({"x": {"$in": [*many, "a", True]}}, {"x": True}) is True
    alternatives = {"$or": [{"x": i} for i in range(MAX_CONDITIONS)]}
    assert sql_matches(alternatives, {"x": MAX_CONDITIONS - 1}) is matches(alternatives, {"x": MAX_CONDITIONS - 1})
    with pytest.raises(FilterError, match=f"more than {MAX_CONDITIONS} field conditions"):
        to_sql({"$or": [{"x": i} for i in range(MAX_CONDITIONS + 1)]})


def _nested(op: str, depth: int) -> dict[str, Any]:
    flt: dict[str, Any] = {"x": 1}
    for _ in range(depth):
        flt = {op: flt} if op == "$not" else {op: [flt, {"y": {"$ne": 2}}]}
    return flt


@pytest.mark.parametrize("op", ["$not", "$and", "$or"])
def test_nesting_is_bounded_with_a_clear_error(op: str) -> None:
    deepest = _nested(op, MAX_DEPTH)
    assert sql_matches(deepest, {"x": 1}) is matches(deepest, {"x": 1})
    for depth in (MAX_DEPTH + 1, 28, 5000):  # 28 overflowed SQLite's parser; 5000 Python's recursion
        with pytest.raises(FilterError, match=f"more than {MAX_DEPTH} deep"):
            to_sql(_nested(op, depth))
        with pytest.raises(FilterError, match=f"more than {MAX_DEPTH} deep"):
            matches(_nested(op, depth), {})


@pytest.mark.parametrize(
    ("flt", "message"),
    [
        ({"n": 2**63}, "outside the 64-bit integers"),
        ({"n": {"$in": [1, -(2**63) - 1]}}, "outside the 64-bit integers"),
        ({"n": float("nan")}, "not a finite number"),
        ({"n": {"$lt": float("inf")}}, "not a finite number"),
        ({"year": {"x": 1}}, "is an object, which a filter cannot compare"),
        ({"s": "a\x00b"}, "NUL character"),
        ({"a\x00": 1}, "NUL character"),
        ({"s": "caf\udce9"}, "lone surrogate"),
        ({"s": {"$in": [[1, 2]]}}, "expected a string, number or boolean"),
    ],
)
def test_values_metadata_cannot_hold_are_refused(flt: dict[str, Any], message: str) -> None:
    with pytest.raises(FilterError, match=message):
        to_sql(flt)
    with pytest.raises(FilterError, match=message):
        matches(flt, {})
