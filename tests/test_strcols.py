"""String columns, compact or not: strcols helpers, classify's form and the diagnosis' input."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from profdiag import schema, strcols

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "fixtures/torch/own_tiny_decode_ctx512_B1_steps8.json.gz"

VALUES = ["zeta", None, "alpha", "layer_3", "zeta", "beta", None, "alpha"]


@pytest.fixture(params=["canonical", "compact"])
def col(request: pytest.FixtureRequest) -> pd.Series:
    s = pd.Series(pd.array(VALUES, dtype="string"))
    return pd.Series(schema.compact_strings(s)) if request.param == "compact" else s


def test_codes_values_round_trip(col):
    codes, values = strcols.codes_values(col)
    got = [values[c] if c >= 0 else None for c in codes]
    assert got == VALUES


def test_search_match_isin_count_missing_as_false(col):
    assert strcols.search(col, "ta").tolist() == [True, False, False, False, True, True,
                                                   False, False]
    assert strcols.match(col, re.compile("a")).tolist() == [False, False, True, False, False,
                                                            False, False, True]
    assert strcols.isin(col, ["alpha", "beta"]).tolist() == [False, False, True, False, False,
                                                             True, False, True]


def test_per_value_runs_once_per_distinct_value(col):
    seen: list[str] = []

    def length(v: str) -> int:
        seen.append(v)
        return len(v)

    out = strcols.per_value(col, length, -1, np.int64)
    assert out.tolist() == [4, -1, 5, 7, 4, 4, -1, 5]
    assert sorted(seen) == ["alpha", "beta", "layer_3", "zeta"]


def test_objects_and_str_objects_keep_the_missing_markers(col):
    assert [v if v is not pd.NA else "NA" for v in strcols.objects(col)] == [
        v if v is not None else "NA" for v in VALUES]
    as_str = strcols.as_str_objects(col)
    assert [v if isinstance(v, str) else "nan" for v in as_str] == [
        v if v is not None else "nan" for v in VALUES]


def test_sum_by_value_sorted_with_and_without_missing(col):
    w = np.array([1, 2, 3, 4, 5, 6, 7, 8])
    s = strcols.sum_by_value(col, w)
    assert list(s.index) == ["alpha", "beta", "layer_3", "zeta"]
    assert s.tolist() == [3 + 8, 6, 4, 1 + 5]
    s = strcols.sum_by_value(col, w, missing="unmarked")
    assert dict(s) == {"alpha": 11, "beta": 6, "layer_3": 4, "unmarked": 9, "zeta": 6}


def test_first_pairs_in_order_of_first_appearance(col):
    other = pd.Series(pd.array(list("abcdefgh"), dtype="string"))
    assert strcols.first_pairs(col, other) == {"zeta": "a", "nan": "b", "alpha": "c",
                                               "layer_3": "d", "beta": "f"}


def test_per_combo_once_per_combination(col):
    frame = pd.DataFrame({"a": col, "b": pd.Series(pd.array(["x", "x", "y", "y", "x", "x",
                                                              None, "y"], dtype="string"))})
    calls: list[tuple[object, object]] = []

    def join(a: object, b: object) -> str:
        calls.append((a, b))
        return f"{a}|{b}"

    out = strcols.per_combo(frame, ("a", "b"), join)
    assert out.tolist() == ["zeta|x", "<NA>|x", "alpha|y", "layer_3|y", "zeta|x", "beta|x",
                            "<NA>|<NA>", "alpha|y"]
    assert len(calls) == 6


def test_classify_takes_the_table_form():
    import profdiag
    from profdiag.classify import CLASS_COLUMNS, classify

    ev = profdiag.load(TINY).events
    plain = classify(ev)
    compact = classify(schema.compact(ev))
    for c in CLASS_COLUMNS:
        assert str(plain[c].dtype) == "string"
        cats = compact[c].cat.categories
        assert cats.dtype == "string" and cats.is_monotonic_increasing
        assert compact[c].astype("string").equals(plain[c])


def test_diagnose_compacts_a_copy_and_exports_canonical_columns():
    import profdiag

    trace = profdiag.load(TINY)
    before = trace.events.copy()
    diag = profdiag.diagnose(trace)
    # the caller's table is untouched; the diagnosis read (and holds) the compact one
    assert not schema.is_compact(trace.events) and trace.events.equals(before)
    assert schema.is_compact(diag.trace.events)
    assert isinstance(diag.events["name"].dtype, pd.CategoricalDtype)
    kernels = diag.tables()["kernels"]
    for c in ("name", "short_name", "op_name", "input_dims", "input_types", "grid", "block"):
        assert str(kernels[c].dtype) == "string", c
    for c in ("name", "short_name", "class", "category"):
        assert str(diag.hotspots[c].dtype) == "string", c
    # the same report from the compact load
    again = profdiag.diagnose(profdiag.load(TINY, compact=True))
    assert again.to_dict() == diag.to_dict()


def test_text_array_is_the_column_pandas_makes_of_the_objects():
    values = np.array(["b", "a", "b", None, "a", np.nan], dtype=object)
    got = pd.Series(strcols.text_array(values))
    want = pd.Series(values)  # what assigning the object array to a column gives
    assert got.dtype == want.dtype
    assert got.tolist()[:3] == ["b", "a", "b"] and got.isna().tolist() == [
        False, False, False, True, False, True]
    assert got.equals(want)
    # anything but str (and missing) is left as it is, for pandas to decide
    mixed = np.array(["a", 1.5], dtype=object)
    assert strcols.text_array(mixed) is mixed
    only_missing = np.array([None, None], dtype=object)
    assert strcols.text_array(only_missing) is only_missing
