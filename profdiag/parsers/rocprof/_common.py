"""Helpers every rocprof flavour shares: kernel-name cleaning, typed columns, grids,
frames, the CSV header flavour and the rocminfo dump beside v1 outputs."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ... import schema
from ...errors import TraceFormatError
from ...trace import DeviceInfo, Trace, TraceMeta
from .. import _coerce
from .._io import Input
from ..torch_json import short_name as _short_name

_KD_SUFFIX_RE = re.compile(r"(\s*\[clone \.kd\]|\s*\(\.kd\)|\.kd)$")
_DIRECTION = {"HOST_TO_HOST": "HtoH", "HOST_TO_DEVICE": "HtoD", "DEVICE_TO_HOST": "DtoH",
              "DEVICE_TO_DEVICE": "DtoD", "PEER_TO_PEER": "PtoP"}


def _first_line(head: bytes) -> list[str]:
    try:
        line = head.split(b"\n", 1)[0].decode("utf-8-sig").strip()
    except UnicodeDecodeError:
        return []
    try:
        return next(csv.reader([line]))
    except (StopIteration, csv.Error):
        return []


def _csv_flavour(header: list[str]) -> str | None:
    cols = set(header)
    low = {c.lower() for c in header}
    if "kernelname" in low and low & {"beginns", "endns", "gpu-id", "queue-id", "grd"}:
        return "v1"
    if "Kernel_Name" in cols and cols & {"Start_Timestamp", "End_Timestamp", "Dispatch_Id",
                                         "Kind", "Correlation_Id"}:
        return "kernel_trace"
    if {"Direction", "Start_Timestamp"} <= cols:
        return "memory_copy_trace"
    if {"Domain", "Function", "Start_Timestamp"} <= cols:
        return "api_trace"
    return None


# ---------------------------------------------------------------------------- shared helpers
def clean_kernel_names(names: pd.Series) -> pd.Series:
    """Strip CSV quoting left in v1 .db names and the code-object suffixes."""
    s = names.astype("string").str.strip()
    quoted = s.str.startswith('"') & s.str.endswith('"') & (s.str.len() >= 2)
    s = s.where(~quoted.fillna(False), s.str.slice(1, -1))
    return s.str.replace(_KD_SUFFIX_RE, "", regex=True)


def _strings(values: Any) -> Any:
    """A pandas "string" array of ``values`` (a Series, a list, an array)."""
    return pd.array(values, dtype="string")


def _short_names(names: pd.Series) -> Any:
    uniq = {n: _short_name(n) for n in names.dropna().unique()}
    return _strings(names.map(uniq))


def _num(df: pd.DataFrame, col: str | None) -> pd.Series:
    """A numeric column through the coercion step: inf, 1e400, 2**70, text -> NaN."""
    if col is None or col not in df.columns:
        return pd.Series(np.nan, index=df.index, dtype="float64")
    return _coerce.finite_numbers(df[col])


def _int_array(values: pd.Series) -> Any:
    """Nullable int64: unknown (inf, text, missing) values become NA."""
    rounded: Any = _coerce.finite_numbers(values).round()
    return pd.array(rounded, dtype="Int64")


def _dims(x: pd.Series, y: pd.Series, z: pd.Series) -> Any:
    """'x,y,z' strings, NA where any dimension is unknown."""
    x, y, z = (_coerce.finite_numbers(v) for v in (x, y, z))
    ok = x.notna() & y.notna() & z.notna()
    out = pd.Series(pd.NA, index=x.index, dtype="string")
    if ok.any():
        out[ok] = (x[ok].astype("int64").astype(str) + "," + y[ok].astype("int64").astype(str)
                   + "," + z[ok].astype("int64").astype(str))
    return _strings(out)


def _blocks(grid: pd.Series, wg: pd.Series) -> pd.Series:
    """Work-items -> workgroups (ceil), NA when either is unknown or the workgroup is 0."""
    g = _coerce.finite_numbers(grid)
    w = _coerce.finite_numbers(wg).where(lambda v: v > 0)
    return np.ceil(g / w)


def _grid_block(gx: pd.Series, gy: pd.Series, gz: pd.Series,
                wx: pd.Series, wy: pd.Series, wz: pd.Series) -> tuple[Any, Any]:
    return (_dims(_blocks(gx, wx), _blocks(gy, wy), _blocks(gz, wz)), _dims(wx, wy, wz))


def _times(start: pd.Series, end: pd.Series) -> tuple[Any, Any, int]:
    s = _coerce.finite_numbers(start)
    e = _coerce.finite_numbers(end)
    bad = int((s.isna() | e.isna()).sum())
    dur = (e - s).clip(lower=0)
    return s.fillna(0).astype("int64").to_numpy(), dur.fillna(0).astype("int64").to_numpy(), bad


def _frame(kind: str, n: int, **cols: Any) -> pd.DataFrame:
    cols["kind"] = [kind] * n
    if "graph_launch" not in cols and kind in schema.GPU_KINDS:
        cols["graph_launch"] = pd.array([False] * n, dtype="boolean")
    return schema.from_columns(cols, n=n)


def _finish(frames: Iterable[pd.DataFrame | None], fmt: str, path: Path,
            devices: list[DeviceInfo], warnings: list[str],
            options: dict[str, Any] | None = None, base_time_ns: int | None = None) -> Trace:
    events = schema.concat(list(frames))
    meta = TraceMeta(format=fmt, path=str(path), devices=devices, warnings=warnings,
                     options=options or {}, base_time_ns=base_time_ns)
    return Trace(events, meta)


def _memcpy_name(direction: pd.Series) -> pd.Series:
    """'MEMORY_COPY_HOST_TO_DEVICE' / 'CopyHostToDevice' -> 'Memcpy HtoD'."""
    def one(v: Any) -> str:
        text = str(v) if v is not None and not pd.isna(v) else ""
        key = text.upper().replace("MEMORY_COPY_", "")
        if key not in _DIRECTION:
            key = re.sub(r"(?<!^)(?=[A-Z])", "_", text.replace("Copy", "", 1)).upper()
        short = _DIRECTION.get(key)
        return f"Memcpy {short}" if short else (f"Memcpy {text}" if text else "Memcpy")
    uniq = {v: one(v) for v in pd.unique(direction)}
    return direction.map(uniq)


def _missing_columns(path: Path, header: Iterable[str], required: Iterable[str],
                     what: str) -> None:
    have = set(header)
    gone = [c for c in required if c not in have]
    if gone:
        raise TraceFormatError(f"{what} is missing column(s) {', '.join(gone)}", str(path))


def _read_bytes(src: Input) -> bytes:
    """The whole content (bounded); a gzip stream that stops early is refused."""
    def truncated() -> None:
        raise TraceFormatError("corrupt or truncated gzip stream", str(src.path))

    return src.read_bytes(on_truncated=truncated)


def _read_csv(source: Path | Input) -> pd.DataFrame:
    """A CSV file as strings; gzipped content is inflated by the input layer (bounded),
    never by pandas (its compression inference is off)."""
    with Input.using(source) as src:
        data: Any = io.BytesIO(_read_bytes(src)) if src.compressed else src.path
        try:
            return pd.read_csv(data, dtype=str, keep_default_na=False, na_values=[""],
                               skipinitialspace=False, compression=None)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise TraceFormatError(f"unreadable CSV ({' '.join(str(exc).split())})",
                                   str(src.path)) from None


def _sysinfo_devices(path: Path, warnings: list[str]) -> list[DeviceInfo]:
    """GPU agents from the rocminfo dump rocprof v1 writes beside its outputs."""
    stem = path.name.split(".")[0]
    info = path.with_name(f"{stem}.sysinfo.txt")
    if not info.is_file():
        warnings.append("no rocminfo dump (results.sysinfo.txt) beside the file: GPU model unknown")
        return []
    text = info.read_text(errors="replace")
    devices: list[DeviceInfo] = []
    for block in re.split(r"\n(?=Agent \d+\s*\n)", text):
        if not re.search(r"^\s*Device Type:\s*GPU\s*$", block, re.M):
            continue
        name = re.search(r"^\s*Marketing Name:\s*(.+?)\s*$", block, re.M)
        arch = re.search(r"^\s{2}Name:\s*(gfx\w+)", block, re.M)
        cus = re.search(r"^\s*Compute Unit:\s*(\d+)", block, re.M)
        devices.append(DeviceInfo(
            index=len(devices), name=(name.group(1) if name else arch.group(1) if arch else ""),
            sm_count=int(cus.group(1)) if cus else None,
            compute_capability=arch.group(1) if arch else None, vendor="amd"))
    return devices
