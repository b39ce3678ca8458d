"""Typed coercion of untrusted columns: every parser's values pass through here.

A profiler file can hold anything in any column: ``inf``, ``1e400``, 2**70, text or a blob
where an integer id is expected, a number where a name is expected. Integer columns are
checked once (finite, integral, within int64) and a bad value is a TraceFormatError (exit 3)
naming the file, the table or column and the row; names are made strings (a blob is
decoded, replacing invalid UTF-8). Lenient helpers (``int_or_none``) serve metadata, where a
bad value is dropped instead.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from ..errors import TraceFormatError

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class BadTraceError(TraceFormatError):
    """A value of the wrong type or range in a trace: names the file, column and row."""


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def int_column(values: pd.Series, path: Any, where: str) -> pd.Series:
    """``values`` as float-free nullable Int64, or BadTraceError at the first bad row.

    NULL stays missing; an integer, an integral float within int64 or a text holding one is
    accepted; anything else (inf, NaN text, 1e400, 2**70, 'abc', a blob, 1.5) is an error.
    """
    if values.dtype.kind in "iub":
        return values.astype("Int64")
    num = pd.to_numeric(values, errors="coerce")
    present = values.notna().to_numpy()
    numf = num.to_numpy(dtype="float64", na_value=np.nan)
    ok = ~present | (np.isfinite(numf) & (numf == np.floor(numf))
                     & (numf >= -9.223372036854775e18) & (numf <= 9.223372036854775e18))
    if not ok.all():
        row = int(np.flatnonzero(~ok)[0])
        raise BadTraceError(f"{where} row {row + 1}: {_show(values.iloc[row])} is not an "
                            "integer in range", str(path))
    big = present & (np.abs(np.nan_to_num(numf)) > 2**53)
    if big.any():
        # integers above 2**53 survive the float view only approximately: redo those exactly
        out = pd.array([None if not present[i] else int(values.iloc[i])
                        if isinstance(values.iloc[i], (int, np.integer))
                        else int(numf[i]) for i in range(len(values))], dtype="Int64")
        return pd.Series(out, index=values.index)
    return pd.Series(pd.array(numf, dtype="Int64"), index=values.index)


def int_columns(df: pd.DataFrame, columns: Iterable[str], path: Any, table: str) -> pd.DataFrame:
    """int_column for each of ``columns`` present in ``df`` (in place; returns df)."""
    for col in columns:
        if col in df.columns and len(df):
            df[col] = int_column(df[col], path, f"{table}.{col}")
    return df


def text(value: Any) -> str | None:
    """A name as text: None stays None, a blob is decoded (invalid UTF-8 replaced)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace") \
            if _has_surrogate(value) else value
    return str(value)


def _has_surrogate(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def text_columns(df: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    """text() over each of ``columns`` present (object columns only: fast for the rest)."""
    for col in columns:
        if col in df.columns and df[col].dtype == object and len(df):
            df[col] = df[col].map(text)
    return df


def int_or_none(value: Any) -> int | None:
    """A metadata integer, or None when the value is not one (lenient)."""
    if value is None or isinstance(value, bool):
        return None if value is None else int(value)
    if isinstance(value, (int, np.integer)):
        v = int(value)
        return v if INT64_MIN <= v <= INT64_MAX else None
    try:
        f = float(value.decode() if isinstance(value, (bytes, bytearray)) else value)
    except (TypeError, ValueError, UnicodeDecodeError):
        return None
    if not math.isfinite(f) or f != math.floor(f) or not INT64_MIN <= f <= INT64_MAX:
        return None
    return int(f)


def finite_numbers(values: pd.Series) -> pd.Series:
    """``values`` as float64 with non-numbers, non-finite values and values beyond int64
    (``inf``, ``1e400``, 2**70, text, blobs) as NaN: the lenient step for columns whose bad
    rows a parser skips or leaves unknown."""
    num = pd.to_numeric(values, errors="coerce")
    if num.dtype.kind in "iu":
        return num.astype("float64")
    num = num.astype("float64")
    return num.where(np.isfinite(num) & (num.abs() < 9.2e18))


def decode_blobs(df: pd.DataFrame) -> pd.DataFrame:
    """Blob (bytes) values of object columns as text (invalid UTF-8 replaced), in place."""
    for col in df.columns:
        if df[col].dtype == object and len(df) and df[col].map(
                lambda v: isinstance(v, (bytes, bytearray, memoryview))).any():
            df[col] = df[col].map(text)
    return df
