"""rocprof v1 ``results.db`` (SQLite: KERN, OPS, COPY, HIP, HSA tables)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pandas as pd

from ... import schema
from ...errors import TraceFormatError
from ...trace import Trace
from .. import _coerce, nsys_sqlite as _sql
from ._common import (
    _finish,
    _frame,
    _int_array,
    _memcpy_name,
    _num,
    _short_names,
    _strings,
    _sysinfo_devices,
    _times,
    clean_kernel_names,
)
from .v1_csv import _v1_kernels


def _v1_ops(df: pd.DataFrame, kind: str, warnings: list[str], table: str) -> pd.DataFrame:
    """Rows of the v1 --hip-trace OPS/COPY tables (BeginNs, EndNs, dev-id, queue-id, Name,
    pid, tid, stream-id, Index = the HIP call's Index)."""
    name = df["Name"].astype("string") if "Name" in df else pd.Series("", index=df.index)
    start, dur, bad = _times(df["BeginNs"], df["EndNs"])
    if bad:
        warnings.append(f"{bad} {table} rows without BeginNs/EndNs got time 0")
    stream = _num(df, "stream-id") if "stream-id" in df else _num(df, "queue-id")
    cols: dict[str, Any] = dict(
        start_ns=start, dur_ns=dur, device=_int_array(_num(df, "dev-id")),
        stream=_int_array(stream), pid=_int_array(_num(df, "pid")),
        tid=_int_array(_num(df, "tid")), correlation=_int_array(_num(df, "Index")))
    if kind == schema.KIND_KERNEL:
        clean = clean_kernel_names(name)
        cols.update(name=_strings(clean), short_name=_short_names(clean))
    else:
        cols.update(name=_strings(_memcpy_name(name)))
    return _frame(kind, len(df), **cols)


def _parse_v1_db(con: sqlite3.Connection, tables: set[str], path: Path) -> Trace:
    warnings: list[str] = []
    frames: list[pd.DataFrame | None] = []

    def read(table: str) -> pd.DataFrame | None:
        if table not in tables or "BeginNs" not in _sql.columns(con, table):
            return None
        return _coerce.decode_blobs(pd.read_sql_query(f'SELECT * FROM "{table}"', con))

    kern = read("KERN")
    if kern is not None and len(kern):
        frames.append(_v1_kernels(kern, path, warnings))
    ops = read("OPS")
    if ops is not None and len(ops):
        # With --hip-trace the kernels are in OPS (KERN may be empty); copies stay in COPY.
        is_copy = ops["Name"].astype(str).str.match(r"^Copy[A-Z]|^MEMORY_COPY") if "Name" in ops \
            else pd.Series(False, index=ops.index)
        if kern is not None and len(kern):
            warnings.append("both KERN and OPS hold rows; kernels were taken from KERN")
        else:
            frames.append(_v1_ops(ops[~is_copy], schema.KIND_KERNEL, warnings, "OPS"))
        if is_copy.any():
            frames.append(_v1_ops(ops[is_copy], schema.KIND_MEMCPY, warnings, "OPS"))
    copy = read("COPY")
    if copy is not None and len(copy):
        frames.append(_v1_ops(copy, schema.KIND_MEMCPY, warnings, "COPY"))
    for table in ("HIP", "HSA"):
        api = read(table)
        if api is not None and len(api):
            start, dur, _ = _times(api["BeginNs"], api["EndNs"])
            frames.append(_frame(
                schema.KIND_RUNTIME, len(api),
                name=_strings(api.get("Name", pd.Series("", index=api.index))),
                start_ns=start, dur_ns=dur, pid=_int_array(_num(api, "pid")),
                tid=_int_array(_num(api, "tid")),
                correlation=_int_array(_num(api, "Index")) if table == "HIP" else None))
    if "KERN" not in tables and "OPS" not in tables:
        raise TraceFormatError("rocprof v1 database has no KERN or OPS table", str(path))
    devices = _sysinfo_devices(path, warnings)
    return _finish(frames, "rocprof-v1", path, devices, warnings)
