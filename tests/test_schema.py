import pandas as pd

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
