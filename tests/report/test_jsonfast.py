"""dumps_indent1 is json.dumps(indent=1), byte for byte: generated documents and real ones."""
from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer.report.jsonfast import dumps_indent1

scalars = (st.none() | st.booleans() | st.integers(min_value=-(1 << 70), max_value=1 << 70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12))
keys = st.text(max_size=6) | st.sampled_from(["%s", "%(x)s", "a%", "é", "\n"])
docs = st.recursive(scalars, lambda inner: st.lists(inner, max_size=12) | st.dictionaries(keys, inner, max_size=6),
                    max_leaves=60)


def _rows(n: int, keyset: list[str], values) -> list[dict]:
    return [{k: values(i, j) for j, k in enumerate(keyset)} for i in range(n)]


@settings(max_examples=300, deadline=None)
@given(docs)
def test_generated_documents(doc):
    assert dumps_indent1(doc) == json.dumps(doc, indent=1)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.fixed_dictionaries({"a": scalars, "b%": scalars, "c": st.lists(scalars, max_size=3),
                                       "d": st.dictionaries(keys, scalars, max_size=3)}),
                min_size=8, max_size=40))
def test_row_lists_take_the_column_path_and_match(rows):
    doc = {"x": 1, "rows": rows, "nested": [{"rows": rows}]}
    assert dumps_indent1(doc) == json.dumps(doc, indent=1)


def test_column_types_and_mixed_rows():
    rows = _rows(20, ["i", "f", "s", "n", "b", "mix"],
                 lambda i, j: [i, i / 3, f"s{i}\u00e9\"", None, i % 2 == 0, [i, math.nan][i % 2]][j])
    rows.append({"i": 1})                                    # a row with other keys: the generic path
    for doc in (rows[:-1], rows, {"k": rows, 7: 2, 2.5: 3, None: 4, True: 5}, (1, 2, [(3,)] * 9)):
        assert dumps_indent1(doc) == json.dumps(doc, indent=1)


def test_unserialisable_values_and_keys_raise_like_json():
    for bad in ({"a": object()}, [{"a": 1, "b": {1, 2}}] * 10, {(1, 2): 3}):
        with pytest.raises(TypeError):
            json.dumps(bad, indent=1)
        with pytest.raises(TypeError):
            dumps_indent1(bad)


@pytest.mark.parametrize("rel", ["bundles/src-6.1-x86_64-cma-race-revert", "captures/debian-6.1-arm64-cma-churn"])
def test_real_analyze_documents(analyzed, rel):
    from analyzer.report.export import json_doc
    doc = json_doc(analyzed(rel))
    assert len(doc["block_history"]) > 100
    assert dumps_indent1(doc) == json.dumps(doc, indent=1)
