"""The canonical event table every parser produces.

One row per event. Times are integer nanoseconds on the trace's own clock (``start_ns``
relative to the earliest event of the trace is *not* enforced: parsers keep the trace's
origin and record it in TraceMeta). Missing integers are pandas ``<NA>`` (nullable Int64).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

# Event kinds, defined in .kinds (which imports nothing); GPU-side kinds occupy a device,
# host-side kinds do not. Re-exported: schema.KIND_KERNEL is their usual name.
from .kinds import (
    ALL_KINDS as ALL_KINDS,
    GPU_KINDS as GPU_KINDS,
    KIND_ANNOTATION as KIND_ANNOTATION,
    KIND_CPU_OP as KIND_CPU_OP,
    KIND_GPU_ANNOTATION as KIND_GPU_ANNOTATION,
    KIND_KERNEL as KIND_KERNEL,
    KIND_MEMCPY as KIND_MEMCPY,
    KIND_MEMSET as KIND_MEMSET,
    KIND_PYTHON as KIND_PYTHON,
    KIND_RUNTIME as KIND_RUNTIME,
    KIND_SYNC as KIND_SYNC,
)

# the dtype of the kind column
KIND_DTYPE = pd.CategoricalDtype(list(ALL_KINDS))

# column -> (dtype, description). Order is the canonical column order.
COLUMNS: dict[str, tuple[str, str]] = {
    "name": ("string", "event name; for kernels the demangled name"),
    "short_name": ("string", "kernel base name (nsys shortName, template args stripped)"),
    "kind": ("category", "one of ALL_KINDS"),
    "start_ns": ("int64", "start time, ns"),
    "dur_ns": ("int64", "duration, ns (>= 0)"),
    "device": ("Int64", "GPU index for GPU events, <NA> for host events"),
    "stream": ("Int64", "GPU stream / queue, <NA> for host events"),
    "pid": ("Int64", "host process id (<NA> when the trace gives none)"),
    "tid": ("Int64", "host thread id (<NA> when the trace gives none)"),
    "correlation": ("Int64", "launch correlation id linking a runtime call to its GPU work"),
    "external_id": ("Int64", "framework op id linking a cpu_op to its runtime calls/kernels"),
    "bytes": ("Int64", "bytes moved (memcpy/memset), <NA> otherwise"),
    "op_name": ("string", "for GPU events: the framework op that launched it (aten::mm)"),
    "input_dims": ("string", "for cpu_op (and GPU events via op): JSON of Input Dims"),
    "input_types": ("string", "for cpu_op (and GPU events via op): JSON of Input type"),
    "input_concrete": ("string", "for cpu_op (and GPU events via op): JSON of Concrete Inputs "
                       "(scalar arguments, e.g. SDPA's is_causal)"),
    "grid": ("string", "launch grid 'x,y,z' in blocks, <NA> when unknown"),
    "block": ("string", "launch block 'x,y,z', <NA> when unknown"),
    "graph_launch": ("boolean", "GPU work replayed from a CUDA/HIP graph"),
}

_NA_FOR = {"string": pd.NA, "Int64": pd.NA, "boolean": pd.NA}

# The string columns; in a *compact* table (``compact``) each is a Categorical instead.
STRING_COLUMNS = tuple(c for c, (dtype, _) in COLUMNS.items() if dtype == "string")


def empty_events() -> pd.DataFrame:
    """Return a typed, zero-row canonical event table."""
    return from_columns({})


def from_columns(columns: dict[str, Any], n: int | None = None,
                 compact: bool = False) -> pd.DataFrame:
    """Build a canonical table from column lists/arrays; absent columns are filled with NA.

    Every present column must have the same length ``n``. The table takes the given
    arrays over where they already have the column's dtype (no copy): pass fresh ones.
    ``compact``: a string column given as a sorted Categorical (``compact_strings``' form)
    is taken as is, and an absent one is an all-missing Categorical (a compact table's).
    """
    if n is None:
        n = len(next(iter(columns.values()))) if columns else 0
    data: dict[str, Any] = {}
    for col, (dtype, _) in COLUMNS.items():
        values = columns.get(col)
        if compact and dtype == "string":
            data[col] = _missing_compact(n) if values is None else compact_strings(values)
        elif values is None:
            data[col] = _missing(dtype, n)  # built whole, not element by element
        elif dtype == "category":
            data[col] = pd.Categorical(values, categories=list(ALL_KINDS))
        else:
            data[col] = pd.array(values, dtype=dtype, copy=False)
    return pd.DataFrame(data, copy=False)


def _missing(dtype: str, n: int) -> Any:
    """An all-missing column of ``dtype`` (zeros for plain int64)."""
    if dtype == "int64":
        return np.zeros(n, dtype=np.int64)
    if dtype == "Int64":
        return pd.arrays.IntegerArray(np.zeros(n, dtype=np.int64), np.ones(n, dtype=bool))
    if dtype == "boolean":
        return pd.arrays.BooleanArray(np.zeros(n, dtype=bool), np.ones(n, dtype=bool))
    if dtype == "category":
        return pd.Categorical.from_codes(np.full(n, -1, dtype=np.int8), dtype=KIND_DTYPE)
    return pd.Series(pd.NA, index=pd.RangeIndex(n), dtype=dtype).array


def code_dtype(n_categories: int) -> type[np.signedinteger[Any]]:
    """The integer type pandas keeps a Categorical's codes in for ``n_categories`` values."""
    for t in (np.int8, np.int16, np.int32):
        if n_categories < np.iinfo(t).max:
            return t
    return np.int64


def string_categories(values: Any) -> pd.CategoricalDtype:
    """The dtype of a compact string column whose categories are ``values`` (distinct, in
    lexical order)."""
    return pd.CategoricalDtype(pd.Index(values, dtype="string"), ordered=False)


def _missing_compact(n: int) -> pd.Categorical:
    return pd.Categorical.from_codes(np.full(n, -1, dtype=np.int8),
                                     dtype=string_categories([]), validate=False)


def compact_strings(values: Any) -> pd.Categorical:
    """A string column as a Categorical of its distinct values (``string`` dtype), sorted.

    The compact form of a canonical string column: 4 bytes or less per row instead of the
    row's characters, so a row filter or take copies codes, not names. Categories are in
    lexical order, so sorting or grouping by the column orders rows as the strings would;
    a missing value is code -1.
    """
    if isinstance(values, pd.Series):
        values = values.array
    if isinstance(values, pd.Categorical):
        if is_compact_dtype(values.dtype):
            return values
        values = values.astype("string")
    return pd.Categorical(pd.array(values, dtype="string", copy=False))


def coded_categorical(codes: np.ndarray, values: Sequence[str | None]) -> pd.Categorical:
    """``compact_strings`` of the column whose row i is ``values[codes[i]]`` (missing where
    that is None or the code is -1), built from the distinct values only: the categories
    are the distinct strings some row holds (``values`` may repeat a string: two ids of one
    text, names equal once transformed), sorted, and the codes remapped by one lookup per
    value -- no Python or Arrow string per row."""
    used = np.zeros(len(values) + 1, dtype=bool)
    used[codes] = True  # code -1 marks the extra last slot
    present = sorted({v for v, u in zip(values, used[:-1].tolist()) if u and v is not None})
    at = {v: i for i, v in enumerate(present)}
    lookup = np.array([-1 if v is None else at.get(v, -1) for v in values] + [-1],
                      dtype=code_dtype(len(present)))
    return pd.Categorical.from_codes(lookup[codes], dtype=string_categories(present),
                                     validate=False)


def is_compact_dtype(dtype: Any) -> bool:
    """The dtype of a compact string column: an unordered Categorical of sorted ``string``
    categories (what ``compact_strings`` builds)."""
    return (isinstance(dtype, pd.CategoricalDtype) and dtype.categories.dtype == "string"
            and not dtype.ordered and dtype.categories.is_monotonic_increasing)


def compact(events: pd.DataFrame) -> pd.DataFrame:
    """The table with every string column as a sorted Categorical (see ``compact_strings``).

    What ``profdiag.load(..., compact=True)`` returns and the diagnosis reads: the same rows
    and values in less memory. ``expand`` gives the canonical table back (``equals`` it).
    """
    data = {c: (compact_strings(events[c]) if c in STRING_COLUMNS and c in events.columns
                else events[c]) for c in events.columns}
    return pd.DataFrame(data, index=events.index, copy=False)


def expand(events: pd.DataFrame) -> pd.DataFrame:
    """A compact table's string columns back to the canonical ``string`` dtype."""
    data = {c: (events[c].astype("string") if c in STRING_COLUMNS and
                isinstance(events[c].dtype, pd.CategoricalDtype) else events[c])
            for c in events.columns}
    return pd.DataFrame(data, index=events.index, copy=False)


def is_compact(events: pd.DataFrame) -> bool:
    """True when the table's string columns are Categoricals (``compact``)."""
    return "name" in events.columns and isinstance(events["name"].dtype, pd.CategoricalDtype)


def validate(events: pd.DataFrame) -> list[str]:
    """Return every problem with ``events`` as a list of strings (empty when valid)."""
    problems: list[str] = []
    for col, (dtype, _) in COLUMNS.items():
        if col not in events.columns:
            problems.append(f"missing column {col!r}")
            continue
        actual = str(events[col].dtype)
        if dtype == "string" and _compact_column(events[col].array):
            continue  # the compact form of a string column
        if actual != dtype:
            problems.append(f"column {col!r} has dtype {actual}, expected {dtype}")
    extra = [c for c in events.columns if c not in COLUMNS]
    if extra:
        problems.append(f"unexpected columns {extra}")
    if "dur_ns" in events.columns and len(events) and (events["dur_ns"] < 0).any():
        problems.append(f"{int((events['dur_ns'] < 0).sum())} events with negative dur_ns")
    if "kind" in events.columns and events["kind"].isna().any():
        problems.append(f"{int(events['kind'].isna().sum())} events with no kind")
    return problems


def _compact_column(a: Any) -> bool:
    """A compact string column: a Categorical of ``string`` categories."""
    return isinstance(a, pd.Categorical) and a.categories.dtype == "string"


def _stackable(parts: list[pd.DataFrame]) -> bool:
    """Canonical frames whose columns have one array type each (and the kinds' categories);
    a string column may be compact (a Categorical of strings) in every frame instead."""
    for f in parts:
        if list(f.columns) != list(COLUMNS):
            return False
    for col, (dtype, _) in COLUMNS.items():
        first = parts[0][col].array
        if dtype == "string" and _compact_column(first):
            if not all(_compact_column(f[col].array) for f in parts):
                return False
            continue
        for f in parts:
            a = f[col].array
            if str(a.dtype) != dtype or type(a) is not type(first):
                return False
            if dtype == "category" and list(a.categories) != list(ALL_KINDS):
                return False
    return True


# rows per step of _Placement's scatter (bounds the intp copy numpy makes of an index slice)
_SCATTER_ROWS = 1 << 20


class _Placement:
    """Where each row of the stacked parts goes in start order (stable): ``at[i]`` is the
    position of the parts' i-th row. A column is then written straight into its place, part
    by part (``scatter``): one output array, no stacked copy to take from."""

    def __init__(self, parts: list[pd.DataFrame], keep_order: bool, consume: bool) -> None:
        start = np.concatenate([f["start_ns"].to_numpy(dtype=np.int64) for f in parts])
        if consume:  # the parts' start times are in ``start`` now: dropped before the sort
            for f in parts:
                del f["start_ns"]
            _trim_heap()
        order = np.argsort(start, kind="stable")
        # the stacked start_ns column
        self.start: np.ndarray | None = start[order]
        del start
        n = len(order)
        self.n = n
        self.lengths = [len(f) for f in parts]
        self.at = np.empty(n, dtype=np.int32 if n < 2**31 else np.int64)
        for lo in range(0, n, _SCATTER_ROWS):
            hi = min(lo + _SCATTER_ROWS, n)
            self.at[order[lo:hi]] = np.arange(lo, hi, dtype=self.at.dtype)
        # the take order, for the columns stacked by take (canonical string columns)
        self.order = order if keep_order else None

    def scatter(self, arrays: list[np.ndarray], dtype: Any) -> np.ndarray:
        """The parts' ``arrays`` (one per part) as one array in start order."""
        out = np.empty(self.n, dtype=dtype)
        lo = 0
        for a, length in zip(arrays, self.lengths):
            for s in range(0, length, _SCATTER_ROWS):
                e = min(s + _SCATTER_ROWS, length)
                out[self.at[lo + s:lo + e]] = a[s:e]
            lo += length
        return out


def _stack_categoricals(arrays: list[pd.Categorical], place: _Placement) -> pd.Categorical:
    """Compact string columns stacked in start order: the categories are the sorted union of
    the parts' (distinct values only), each part's codes recoded by one lookup per
    category, so no string is made per row."""
    cats = arrays[0].categories
    if all(a.categories.equals(cats) for a in arrays[1:]):
        codes = place.scatter([a.codes for a in arrays], arrays[0].codes.dtype)
        return pd.Categorical.from_codes(codes, dtype=arrays[0].dtype, validate=False)
    union = cats.append([a.categories for a in arrays[1:]]).unique().sort_values()
    dtype = code_dtype(len(union))
    # the lookup's last entry maps code -1 (missing) to -1
    recoded = [np.append(union.get_indexer(a.categories), -1).astype(dtype)[a.codes]
               for a in arrays]
    return pd.Categorical.from_codes(place.scatter(recoded, dtype),
                                     dtype=string_categories(union), validate=False)


def _masked(a: Any) -> bool:
    return isinstance(a, (pd.arrays.IntegerArray, pd.arrays.BooleanArray))


def concat(frames: list[pd.DataFrame | None] | tuple[pd.DataFrame | None, ...],
           consume: bool = False) -> pd.DataFrame:
    """Canonical tables stacked and sorted by start time; a typed empty table when none has rows.

    Canonical frames are stacked column by column straight into start order (one copy of
    the events, not pd.concat's then sort_values' copies: numpy-backed columns are written
    into their places part by part, Arrow text taken in start order); with ``consume`` each
    column is dropped from the given frames once stacked, so the stacked table replaces
    them column by column instead of doubling the memory (the caller must not use them
    afterwards). Compact frames (``compact``) stack the same way, their string columns by
    codes: the result's categories are the sorted union of the frames'
    (``_stack_categoricals``).
    """
    parts = [f for f in frames if f is not None and len(f)]
    if not parts:
        return empty_events()
    if not _stackable(parts):
        events = pd.concat(parts, ignore_index=True)
        events = events.sort_values("start_ns", kind="stable").reset_index(drop=True)
        if all(is_compact(f) for f in parts):
            events = compact(events)  # pd.concat made differing categories objects
        return events
    by_take = [c for c, (dtype, _) in COLUMNS.items()
               if dtype == "string" and not _compact_column(parts[0][c].array)]
    place = _Placement(parts, keep_order=bool(by_take), consume=consume)
    data: dict[str, Any] = {}
    for col, (dtype, _) in COLUMNS.items():
        if col == "start_ns":
            data[col], place.start = place.start, None
            continue
        arrays = [f[col].array for f in parts]
        if dtype in ("int64",):
            data[col] = place.scatter([np.asarray(a) for a in arrays], np.int64)
        elif dtype == "category":
            codes = place.scatter([a.codes for a in arrays], arrays[0].codes.dtype)
            data[col] = pd.Categorical.from_codes(codes, dtype=KIND_DTYPE, validate=False)
        elif dtype == "string" and _compact_column(arrays[0]):
            data[col] = _stack_categoricals(arrays, place)
        elif _masked(arrays[0]) and all(np.asarray(a.isna()).all() for a in arrays):
            # missing in every part (an nsys export's external_id): built whole, its zero
            # values never written (pages the system need not hold)
            data[col] = _missing(dtype, place.n)
        elif _masked(arrays[0]):
            values = place.scatter([a._data for a in arrays], arrays[0]._data.dtype)
            mask = place.scatter([a._mask for a in arrays], np.bool_)
            data[col] = type(arrays[0])(values, mask)
        else:
            assert place.order is not None
            data[col] = type(arrays[0])._concat_same_type(arrays).take(place.order)
        del arrays
        if consume:
            for f in parts:
                del f[col]
            _trim_heap()
    return pd.DataFrame(data, copy=False)


_MALLOC_TRIM: Any = None


def _trim_heap() -> None:
    """Return the C heap's free pages to the system (glibc's ``malloc_trim``; a no-op where
    there is none). The parts' columns a consuming ``concat`` drops were allocated from the
    heap (glibc serves arrays of up to the largest one freed so far from it), while the
    stacked columns, larger, are mapped apart: without this the dropped columns' pages stay
    resident under the new ones and the peak holds both (+200 MB at 3.3M rows)."""
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        import ctypes

        try:
            _MALLOC_TRIM = ctypes.CDLL(None).malloc_trim
        except (AttributeError, OSError):
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)
