"""String columns, compact or not: work on the distinct values, map to the rows by code.

The diagnosis reads the *compact* event table (``schema.compact``: every string column a
Categorical of its sorted distinct values, missing = code -1). A per-row ``.str`` or
``astype(str)`` there builds one string per row; these helpers do the string work once per
distinct value and take the answer through the codes. They accept a plain ``string``
column too (factorized first), so a step gives the same answer for either form.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd


def codes_values(col: pd.Series | pd.Index | Any) -> tuple[np.ndarray, np.ndarray]:
    """Each row's code (-1: missing) and the distinct values (an object array of str).

    For a Categorical the codes and categories as they are (no pass over the rows' text);
    otherwise ``pd.factorize`` (values in order of first appearance).
    """
    dtype = getattr(col, "dtype", None)
    if isinstance(dtype, pd.CategoricalDtype):
        arr = col.array if isinstance(col, (pd.Series, pd.Index)) else col
        return (np.asarray(arr.codes),
                np.asarray(arr.categories, dtype=object))
    codes, uniques = pd.factorize(col, use_na_sentinel=True)
    values = np.asarray(uniques, dtype=object)
    return np.asarray(codes), values


def per_value(col: pd.Series, fn: Callable[[str], Any], missing: Any = None,
              dtype: Any = object) -> np.ndarray:
    """``fn`` of each row's value, computed once per distinct value; ``missing`` where NA."""
    codes, values = codes_values(col)
    table = np.empty(len(values) + 1, dtype=dtype)
    table[-1] = missing
    if len(values) <= 64:
        for i, v in enumerate(values.tolist()):
            table[i] = fn(v)
    else:  # a row subset of a table with many names: only the values its rows hold
        used = np.flatnonzero(np.bincount(codes + 1, minlength=len(values) + 1)[1:])
        for i, v in zip(used.tolist(), values[used].tolist()):
            table[i] = fn(v)
    return table[codes]


def search(col: pd.Series, pattern: re.Pattern[str] | str, flags: int = 0) -> np.ndarray:
    """``re.search`` of ``pattern`` in each row's value (False where missing), as a bool array."""
    rx = re.compile(pattern, flags) if isinstance(pattern, str) else pattern
    return per_value(col, lambda v: rx.search(v) is not None, False, bool)


def match(col: pd.Series, pattern: re.Pattern[str] | str, flags: int = 0) -> np.ndarray:
    """``re.match`` (anchored at the start) of each row's value; False where missing."""
    rx = re.compile(pattern, flags) if isinstance(pattern, str) else pattern
    return per_value(col, lambda v: rx.match(v) is not None, False, bool)


def isin(col: pd.Series, values: Iterable[str]) -> np.ndarray:
    """Each row's value is one of ``values`` (False where missing), as a bool array."""
    wanted = set(values)
    return per_value(col, lambda v: v in wanted, False, bool)


def to_text(col: pd.Series) -> pd.Series:
    """The column in the canonical ``string`` dtype (a compact column expanded)."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        return col.astype("string")
    return col


def as_str_objects(col: pd.Series, rows: np.ndarray | None = None) -> np.ndarray:
    """Each row's value as ``astype(str)`` gives it (NaN where missing), an object array
    with one str object per distinct value (not one per row); of the positions ``rows``
    only, when given."""
    codes, values = codes_values(col)
    table = np.append(np.asarray([str(v) for v in values.tolist()], dtype=object), np.nan)
    return table[codes if rows is None else codes[rows]]


def sum_by_value(col: pd.Series, weights: np.ndarray, missing: str | None = None) -> pd.Series:
    """``weights`` summed per distinct value of ``col``, indexed by the values in sorted
    order (a groupby's key order). Missing rows are left out (as a groupby leaves NA keys
    out), or summed under the text ``missing`` when given (a ``fillna(missing)`` first)."""
    codes, values = codes_values(col)
    if missing is not None and (codes < 0).any():
        at = [i for i, v in enumerate(values.tolist()) if v == missing]
        if at:
            codes = np.where(codes < 0, at[0], codes)
        else:
            values = np.append(values, np.array([missing], dtype=object))
            codes = np.where(codes < 0, len(values) - 1, codes)
    keep = codes >= 0
    sums = pd.Series(np.asarray(weights)[keep]).groupby(codes[keep]).sum()
    names = values[sums.index.to_numpy()]
    order = np.argsort(names, kind="stable")
    return pd.Series(sums.to_numpy()[order], index=pd.Index(names[order], dtype=object))


def first_pairs(keys: pd.Series, values: pd.Series) -> dict[str, str]:
    """``{str(key): str(value)}`` of the first row of each distinct key, in order of first
    appearance (``drop_duplicates(key)``; a missing key or value reads "nan", as ``str`` of
    ``astype(str)``'s NaN does)."""
    kc, kv = codes_values(keys)
    vc, vv = codes_values(values)
    uniq, first = np.unique(kc, return_index=True)
    first.sort()
    ktext = [str(v) for v in kv.tolist()] + ["nan"]
    vtext = [str(v) for v in vv.tolist()] + ["nan"]
    return {ktext[kc[i]]: vtext[vc[i]] for i in first.tolist()}


def objects(col: pd.Series | Any, missing: Any = pd.NA) -> np.ndarray:
    """Each row's value as an object array (one str object per distinct value), ``missing``
    (pd.NA: what iterating a ``string`` column gives) where the value is missing."""
    codes, values = codes_values(col)
    return np.append(values, np.array([missing], dtype=object))[codes]


def combo_codes(frame: pd.DataFrame, cols: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
    """Each row's code into the distinct combinations of its values in ``cols`` (numbered
    in order of first appearance; a missing value is a value of its own), and the first row
    of each combination -- from the columns' codes, no Python object per row."""
    combined = np.zeros(len(frame), dtype=np.int64)
    for c in cols:
        codes, values = codes_values(frame[c])
        m = len(values) + 1
        combined = combined * m + np.where(codes < 0, m - 1, codes)
        combined = np.asarray(pd.factorize(combined)[0], dtype=np.int64)
    first = np.unique(combined, return_index=True)[1]  # codes 0..k-1 in order of appearance
    return combined, first


def per_combo(frame: pd.DataFrame, cols: Iterable[str], fn: Callable[..., Any],
              missing: Any = pd.NA) -> np.ndarray:
    """``fn(*values)`` of each row's values in ``cols``, computed once per distinct
    combination of them (by code); a missing value is passed as ``missing``."""
    cols = list(cols)
    combined, first = combo_codes(frame, cols)
    tables, per_col = [], []
    for c in cols:
        codes, values = codes_values(frame[c])
        tables.append(np.append(values, np.array([missing], dtype=object)))
        per_col.append(codes)
    out = np.empty(len(first), dtype=object)
    for j, i in enumerate(first.tolist()):
        out[j] = fn(*(t[pc[i]] for t, pc in zip(tables, per_col)))
    return out[combined]


def value_at(col: pd.Series, pos: int, missing: Any = pd.NA) -> Any:
    """The value of row ``pos`` (positional), ``missing`` (pd.NA, as a ``string`` column
    gives it) when it has none."""
    value = col.iloc[pos]
    return missing if value is None or value is pd.NA or value != value else value


@lru_cache(maxsize=1)
def _text_dtype() -> Any:
    """The dtype pandas gives a column of str objects (``str``, Arrow-backed, since pandas 3)."""
    return pd.Series(np.array(["x"], dtype=object)).dtype


def text_array(values: np.ndarray) -> Any:
    """An object array of str (few distinct ones, missing as None/NaN) as the column pandas
    makes of it, built from its distinct values: one Arrow string per distinct value taken
    to the rows, not a conversion of every row's object. ``values`` as given where pandas
    would not make an Arrow ``str`` column of it (objects other than str, nothing but
    missing values, a pandas that keeps object columns)."""
    dtype = _text_dtype()
    if not (isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow"):
        return values
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    distinct = list(uniques)
    if not distinct or not all(type(u) is str for u in distinct):
        return values
    import pyarrow as pa

    arr = pa.array(distinct, type=pa.large_string()).take(pa.array(codes, mask=codes < 0))
    return pd.array(arr, dtype=dtype)
