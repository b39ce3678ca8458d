"""rocprof v1 ``results.csv`` (``--stats`` / ``--hip-trace`` kernel table)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ... import schema
from ...trace import Trace
from .._io import Input
from ._common import (
    _finish,
    _frame,
    _grid_block,
    _int_array,
    _missing_columns,
    _num,
    _read_csv,
    _short_names,
    _strings,
    _sysinfo_devices,
    _times,
    clean_kernel_names,
)

# ============================================================================ rocprof v1
_V1_REQUIRED = ("KernelName", "BeginNs", "EndNs")


def _v1_normalise(df: pd.DataFrame) -> pd.DataFrame:
    """Accept ROCm 6.0's upper-case GRD/WGR/LDS spellings."""
    canon = {"kernelname": "KernelName", "beginns": "BeginNs", "endns": "EndNs",
             "gpu-id": "gpu-id", "queue-id": "queue-id", "grd": "grd", "wgr": "wgr",
             "pid": "pid", "tid": "tid", "index": "Index"}
    return df.rename(columns={c: canon[c.lower()] for c in df.columns if c.lower() in canon})


def _v1_kernels(df: pd.DataFrame, path: Path, warnings: list[str],
                correlation: bool = False) -> pd.DataFrame:
    df = _v1_normalise(df)
    _missing_columns(path, df.columns, _V1_REQUIRED, "rocprof v1 kernel table")
    name = clean_kernel_names(df["KernelName"])
    start, dur, bad = _times(df["BeginNs"], df["EndNs"])
    if bad:
        warnings.append(f"{bad} kernels without BeginNs/EndNs got time 0")
    one = pd.Series(1.0, index=df.index)
    grid, block = _grid_block(_num(df, "grd"), one, one, _num(df, "wgr"), one, one)
    return _frame(
        schema.KIND_KERNEL, len(df), name=_strings(name),
        short_name=_short_names(name), start_ns=start, dur_ns=dur,
        device=_int_array(_num(df, "gpu-id")), stream=_int_array(_num(df, "queue-id")),
        pid=_int_array(_num(df, "pid")), tid=_int_array(_num(df, "tid")),
        correlation=_int_array(_num(df, "Index")) if correlation else None,
        grid=grid, block=block)


def _parse_v1_csv(src: Input) -> Trace:
    path = src.path
    df = _read_csv(src)
    warnings: list[str] = []
    kernels = _v1_kernels(df, path, warnings)
    devices = _sysinfo_devices(path, warnings)
    return _finish([kernels], "rocprof-v1", path, devices, warnings)
