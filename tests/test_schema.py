import pandas as pd
import pytest

from profdiag import schema


def test_empty_table_is_typed():
    df = schema.empty_events()
    assert len(df) == 0
    assert list(df.columns) == list(schema.COLUMNS)
    assert schema.validate(df) == []
    assert str(df["start_ns"].dtype) == "int64"
    assert str(df["device"].dtype) == "Int64"


def test_from_columns_fills_missing_with_na():
    df = schema.from_columns({"name": ["k"], "kind": ["kernel"], "start_ns": [5], "dur_ns": [2]})
    assert schema.validate(df) == []
    assert df.loc[0, "device"] is pd.NA
    assert df.loc[0, "kind"] == "kernel"


def test_validate_reports_every_problem_at_once():
    df = schema.from_columns({"name": ["a", "b"], "kind": ["kernel", None],
                              "start_ns": [0, 1], "dur_ns": [-1, 3]})
    df = df.drop(columns=["bytes"]).assign(extra=1)
    df["stream"] = df["stream"].astype("float64")
    problems = schema.validate(df)
    text = " | ".join(problems)
    assert "missing column 'bytes'" in text
    assert "'stream' has dtype float64" in text
    assert "unexpected columns ['extra']" in text
    assert "negative dur_ns" in text
    assert "no kind" in text


def test_missing_columns_are_the_same_as_built_element_by_element():
    # from_columns builds absent columns whole (masks); they must equal the slow way
    import pandas as pd

    n = 5
    fast = schema.from_columns({"start_ns": list(range(n))})
    for col, (dtype, _) in schema.COLUMNS.items():
        if col == "start_ns":
            continue
        if dtype == "int64":
            slow = pd.array([0] * n, dtype="int64")
        elif dtype == "category":
            slow = pd.Categorical([None] * n, categories=list(schema.ALL_KINDS))
        else:
            slow = pd.array([pd.NA] * n, dtype=dtype)
        assert pd.Series(fast[col].array).equals(pd.Series(slow)), col
        assert str(fast[col].dtype) == dtype


# One trace of each parser family: the compact table holds the same values as the canonical one.
_COMPACT_INPUTS = [
    "fixtures/torch/own_tiny_decode_ctx512_B1_steps8.json.gz",
    "fixtures/engines/vllm_decode_full_graph_execution.json.gz",
    "fixtures/nsys/seed_microbench.sqlite",
    "fixtures/nsys/saxpy-mpi-cuda_nsys_perlmutter0.sqlite.gz",
    "fixtures/rocprof/v3_json",
    "fixtures/rocprof/rocpd",
]


def _first_file(rel: str):
    from pathlib import Path

    p = Path(__file__).resolve().parents[1] / rel
    return p if p.is_file() else sorted(q for q in p.iterdir() if q.is_file()
                                        and q.suffix != ".md")[0]


@pytest.mark.parametrize("rel", _COMPACT_INPUTS)
def test_compact_load_holds_the_canonical_values(rel):
    import profdiag

    path = _first_file(rel)
    canonical = profdiag.load(path).events
    compact = profdiag.load(path, compact=True).events
    assert schema.is_compact(compact) and not schema.is_compact(canonical)
    assert schema.validate(compact) == []
    for col in schema.STRING_COLUMNS:
        cats = compact[col].cat.categories
        assert str(cats.dtype) == "string"
        assert cats.is_monotonic_increasing and cats.is_unique
        # every row: the same value (or both missing)
        a, b = canonical[col], compact[col].astype("string")
        assert (a.isna() == b.isna()).all()
        assert (a.dropna() == b.dropna()).all()
    assert schema.expand(compact).equals(canonical)
    # the compact column's memory is its codes plus the distinct values
    assert compact["name"].memory_usage(deep=True) < canonical["name"].memory_usage(deep=True)


def test_compact_strings_sorts_categories_and_keeps_missing():
    col = pd.array(["b", None, "a", "b", "c"], dtype="string")
    c = schema.compact_strings(col)
    assert list(c.categories) == ["a", "b", "c"]  # lexical, so groupby orders as strings do
    assert c.codes.tolist() == [1, -1, 0, 1, 2]
    # already compact: returned as is; an unsorted Categorical is re-sorted
    assert schema.compact_strings(c) is c
    unsorted = pd.Categorical(["z", "y"], categories=["z", "y"])
    assert list(schema.compact_strings(unsorted).categories) == ["y", "z"]
