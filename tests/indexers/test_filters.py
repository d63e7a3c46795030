"""The filter dialect: SQL and Python agree, missing fields never match, malformed filters say what is
wrong."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qwen3_rag.indexers.filters import FilterError, matches, to_sql

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


def sql_matches(flt: dict[str, Any], md: dict[str, Any]) -> bool:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (fmeta TEXT)")
    conn.execute("INSERT INTO t VALUES (?)", (json.dumps(md),))
    sql, params = to_sql(flt)
    return bool(conn.execute(f"SELECT COUNT(*) FROM t WHERE {sql}", params).fetchone()[0])


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
