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
    for i, v in enumerate(values.tolist()):
        table[i] = fn(v)
    table[-1] = missing
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


def as_str_objects(col: pd.Series) -> np.ndarray:
    """Each row's value as ``astype(str)`` gives it (NaN where missing), an object array
    with one str object per distinct value (not one per row)."""
    codes, values = codes_values(col)
    table = np.append(np.asarray([str(v) for v in values.tolist()], dtype=object), np.nan)
    return table[codes]
