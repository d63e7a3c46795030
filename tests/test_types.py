"""check_metadata: one rule for metadata everywhere, plain JSON that stores and filters exactly."""

from __future__ import annotations

import datetime
import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qwen3_rag.types import INT64_MAX, INT64_MIN, MAX_METADATA_DEPTH, check_metadata

keys = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=8)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(INT64_MIN, INT64_MAX),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(md=st.dictionaries(keys, json_values, max_size=5))
def test_plain_json_passes_unchanged(md: dict[str, Any]) -> None:
    out = check_metadata(md, "text 0")
    assert out == md and out is not md
    assert json.loads(json.dumps(out, allow_nan=False)) == md  # stores and reads back exactly


bad_leaves = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, b"x", {1, 2}, datetime.date(2024, 1, 2), object()]),
    st.integers().filter(lambda n: not INT64_MIN <= n <= INT64_MAX),
    st.sampled_from(["caf\udce9", "a\x00"]),
)


@settings(max_examples=200, deadline=None)
@given(bad=bad_leaves, path=st.lists(st.one_of(keys, st.integers(0, 2)), max_size=4))
def test_a_bad_value_anywhere_is_refused_naming_where(bad: Any, path: list[Any]) -> None:
    value: Any = bad
    for step in reversed(path):  # bury it in lists and dicts
        value = [None] * step + [value] if isinstance(step, int) else {step: value}
    with pytest.raises(ValueError, match=r"^document 'a\.txt': metadata\['key'\]"):
        check_metadata({"key": value}, "document 'a.txt'")


@pytest.mark.parametrize(
    ("md", "message"),
    [
        ({"score": math.nan}, r"text 3: metadata\['score'\] = nan; metadata numbers must be finite"),
        ({"x": {"y": [1, math.inf]}}, r"metadata\['x'\]\['y'\]\[1\] = inf"),
        ({1: "a"}, r"has the key 1 \(int\); metadata keys must be str"),
        ({"n": 2**63}, "outside the 64-bit integers"),
        ({"b": b"raw"}, r"bytes .* decode it"),
        ({"when": datetime.datetime(2024, 1, 2, 3, 4)}, r"isoformat\(\)"),
        ({"tags": {"a"}}, r"sorted\(value\)"),
        ({"name": "caf\udce9"}, "lone surrogate"),
        ({"caf\udce9": 1}, "lone surrogate"),
        ({"s": "a\x00b"}, r"NUL character \(\\x00\) at position 1"),
        ({"a\x00": 1}, "NUL character"),
    ],
)
def test_refusals_say_what_and_how(md: dict[Any, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_metadata(md, "text 3")


def test_lossless_conversions() -> None:
    out = check_metadata({"t": (1, (2, 3)), "i": np.int64(7), "f": np.float32(0.5)}, "x")
    assert out == {"t": [1, [2, 3]], "i": 7, "f": 0.5}
    assert type(out["i"]) is int and type(out["f"]) is float


def test_nesting_is_bounded() -> None:
    deep: Any = 1
    for _ in range(MAX_METADATA_DEPTH + 1):
        deep = [deep]
    with pytest.raises(ValueError, match="nested more than"):
        check_metadata({"d": deep}, "x")
    with pytest.raises(ValueError, match="must be a dict"):
        check_metadata([("a", 1)], "x")  # type: ignore[arg-type]
