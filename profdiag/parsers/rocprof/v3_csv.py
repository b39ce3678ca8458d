"""rocprofv3 CSV files (``<pid>_kernel_trace.csv`` ...), one file or a folder of runs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ... import schema
from ...errors import TraceFormatError
from ...trace import DeviceInfo, Trace
from .._io import Input
from ._common import (
    _csv_flavour,
    _finish,
    _frame,
    _grid_block,
    _int_array,
    _memcpy_name,
    _missing_columns,
    _num,
    _read_csv,
    _short_names,
    _strings,
    _times,
    clean_kernel_names,
)

# rocprofv3 CSV files of one run: <prefix><kind>.csv, prefix usually "<pid>_".
V3_KINDS = ("kernel_trace", "memory_copy_trace", "hip_api_trace", "hsa_api_trace",
            "rccl_api_trace", "marker_api_trace", "agent_info")
_V3_FILE_RE = re.compile(r"^(?P<prefix>.*?)(?P<kind>" + "|".join(V3_KINDS) + r")\.csv$")


# ============================================================================ rocprofv3 CSV
def _v3_files(folder: Path) -> dict[str, Path]:
    """rocprofv3 CSVs under ``folder`` (recursively), keyed 'dir/prefix|kind'."""
    out: dict[str, Path] = {}
    for p in sorted(folder.rglob("*.csv")):
        m = _V3_FILE_RE.match(p.name)
        if m and p.is_file():
            out[f"{p.parent}/{m.group('prefix')}|{m.group('kind')}"] = p
    if not any(not k.endswith("|agent_info") for k in out):
        return {}
    return out


def _v3_siblings(path: Path) -> dict[str, Path]:
    """A single CSV plus the agent_info.csv of the same run (same prefix) when present."""
    m = _V3_FILE_RE.match(path.name)
    prefix = m.group("prefix") if m else ""
    kind = m.group("kind") if m else "single"
    files = {f"{path.parent}/{prefix}|{kind}": path}
    info = path.with_name(f"{prefix}agent_info.csv")
    if m and info.is_file():
        files[f"{path.parent}/{prefix}|agent_info"] = info
    return files


def _agent_map(info: pd.DataFrame | None) -> tuple[dict[int, int], list[DeviceInfo]]:
    """agent_info.csv -> {absolute agent id: GPU ordinal}, DeviceInfo per GPU."""
    if info is None or "Agent_Type" not in info.columns:
        return {}, []
    ids = _num(info, "Node_Id") if "Node_Id" in info.columns else pd.Series(
        range(len(info)), index=info.index, dtype="float64")
    gpus = info[info["Agent_Type"].astype(str).str.upper() == "GPU"].copy()
    gpus["_id"] = ids[gpus.index]
    gpus = gpus.sort_values("_id")
    mapping: dict[int, int] = {}
    devices: list[DeviceInfo] = []
    for ordinal, (_, row) in enumerate(gpus.iterrows()):
        if pd.notna(row["_id"]):
            mapping[int(row["_id"])] = ordinal
        cu = pd.to_numeric(row.get("Cu_Count"), errors="coerce")
        devices.append(DeviceInfo(
            index=ordinal, name=str(row.get("Product_Name") or row.get("Name") or ""),
            sm_count=int(cu) if pd.notna(cu) else None,
            compute_capability=str(row.get("Name")) if pd.notna(row.get("Name")) else None,
            vendor="amd"))
    return mapping, devices


def _agent_numbers(values: pd.Series) -> pd.Series:
    """'Agent 4' or 4 -> 4.0."""
    return pd.to_numeric(values.astype("string").str.extract(r"(-?\d+)\s*$")[0],
                         errors="coerce")


def _to_device(agents: pd.Series, mapping: dict[int, int], warnings: list[str],
               what: str) -> Any:
    if mapping:
        return _int_array(agents.map(lambda v: mapping.get(int(v)) if pd.notna(v) else np.nan))
    warnings.append(f"no agent_info.csv: {what} devices numbered by order of the agent ids seen")
    seen = sorted(int(v) for v in agents.dropna().unique())
    dense = {v: i for i, v in enumerate(seen)}
    return _int_array(agents.map(lambda v: dense.get(int(v)) if pd.notna(v) else np.nan))


_V3_KERNEL_REQUIRED = ("Kernel_Name", "Start_Timestamp", "End_Timestamp")
_V3_COPY_REQUIRED = ("Direction", "Start_Timestamp", "End_Timestamp")
_V3_API_REQUIRED = ("Function", "Start_Timestamp", "End_Timestamp")


def _parse_v3_csv(path: Path, files: dict[str, Path], src: Input | None = None) -> Trace:
    """The rocprofv3 CSVs ``files`` (keyed 'dir/prefix|kind'); ``src`` is the run's Input
    when one of them is the file given."""
    warnings: list[str] = []
    frames: list[pd.DataFrame | None] = []
    devices: list[DeviceInfo] = []
    runs: dict[str, dict[str, Path]] = {}
    for key, p in files.items():
        run, kind = key.rsplit("|", 1)
        runs.setdefault(run, {})[kind] = p
    for _run, parts in sorted(runs.items()):
        info = _read_csv(parts["agent_info"]) if "agent_info" in parts else None
        mapping, run_devices = _agent_map(info)
        if not devices:
            devices = run_devices
        for kind, p in sorted(parts.items()):
            if kind == "agent_info":
                continue
            df = _read_csv(src if src is not None and p == src.path else p)
            flavour = _csv_flavour(list(df.columns))
            if kind == "single":
                kind = {"kernel_trace": "kernel_trace", "memory_copy_trace": "memory_copy_trace",
                        "api_trace": "hip_api_trace"}.get(flavour or "", "")
            if kind == "kernel_trace":
                frames.append(_v3_csv_kernels(df, p, mapping, warnings))
            elif kind == "memory_copy_trace":
                frames.append(_v3_csv_copies(df, p, mapping, warnings))
            elif kind.endswith("api_trace"):
                frames.append(_v3_csv_api(df, p, kind))
            else:
                raise TraceFormatError("not a rocprofv3 trace CSV (expected kernel_trace, "
                                       "memory_copy_trace or *_api_trace columns)", str(p))
    return _finish(frames, "rocprofv3", path, devices, warnings)


def _v3_csv_kernels(df: pd.DataFrame, path: Path, mapping: dict[int, int],
                    warnings: list[str]) -> pd.DataFrame:
    _missing_columns(path, df.columns, _V3_KERNEL_REQUIRED, "rocprofv3 kernel trace")
    name = clean_kernel_names(df["Kernel_Name"])
    start, dur, _ = _times(df["Start_Timestamp"], df["End_Timestamp"])
    agent_col = next((c for c in ("Agent_Id", "GPU_ID", "Agent") if c in df.columns), None)
    device = (_to_device(_agent_numbers(df[agent_col]), mapping, warnings, "kernel")
              if agent_col else None)
    if "Grid_Size_X" in df.columns:
        grid, block = _grid_block(_num(df, "Grid_Size_X"), _num(df, "Grid_Size_Y"),
                                  _num(df, "Grid_Size_Z"), _num(df, "Workgroup_Size_X"),
                                  _num(df, "Workgroup_Size_Y"), _num(df, "Workgroup_Size_Z"))
    else:  # rocprofv2 / counter CSVs: 1-D totals
        one = pd.Series(1.0, index=df.index)
        grid, block = _grid_block(_num(df, "Grid_Size"), one, one, _num(df, "Workgroup_Size"),
                                  one, one)
    stream = _num(df, "Stream_Id") if "Stream_Id" in df.columns else _num(df, "Queue_Id")
    return _frame(schema.KIND_KERNEL, len(df), name=_strings(name),
                  short_name=_short_names(name), start_ns=start, dur_ns=dur, device=device,
                  stream=_int_array(stream),
                  pid=_int_array(_num(df, "Process_Id") if "Process_Id" in df.columns
                                 else _num(df, "PID")),
                  tid=_int_array(_num(df, "Thread_Id") if "Thread_Id" in df.columns
                                 else _num(df, "TID")),
                  correlation=_int_array(_num(df, "Correlation_Id")),
                  grid=grid, block=block)


def _v3_csv_copies(df: pd.DataFrame, path: Path, mapping: dict[int, int],
                   warnings: list[str]) -> pd.DataFrame:
    _missing_columns(path, df.columns, _V3_COPY_REQUIRED, "rocprofv3 memory copy trace")
    start, dur, _ = _times(df["Start_Timestamp"], df["End_Timestamp"])
    src = _agent_numbers(df["Source_Agent_Id"]) if "Source_Agent_Id" in df else None
    dst = _agent_numbers(df["Destination_Agent_Id"]) if "Destination_Agent_Id" in df else None
    device = None
    if src is not None and dst is not None:
        to_host = df["Direction"].astype(str).str.contains("TO_HOST")
        device = _to_device(src.where(to_host, dst), mapping, warnings, "copy")
    bytes_col = next((c for c in ("Bytes", "Size", "Copy_Bytes") if c in df.columns), None)
    if bytes_col is None:
        warnings.append("rocprofv3 memory copy CSV has no byte counts: copy sizes unknown")
    return _frame(schema.KIND_MEMCPY, len(df),
                  name=_strings(_memcpy_name(df["Direction"])),
                  start_ns=start, dur_ns=dur, device=device,
                  stream=_int_array(_num(df, "Stream_Id")),
                  correlation=_int_array(_num(df, "Correlation_Id")),
                  bytes=_int_array(_num(df, bytes_col)) if bytes_col else None)


def _v3_csv_api(df: pd.DataFrame, path: Path, kind: str) -> pd.DataFrame | None:
    _missing_columns(path, df.columns, _V3_API_REQUIRED, f"rocprofv3 {kind}")
    start, dur, _ = _times(df["Start_Timestamp"], df["End_Timestamp"])
    marker = kind == "marker_api_trace"
    out = _frame(schema.KIND_ANNOTATION if marker else schema.KIND_RUNTIME, len(df),
                 name=_strings(df["Function"]), start_ns=start, dur_ns=dur,
                 pid=_int_array(_num(df, "Process_Id")), tid=_int_array(_num(df, "Thread_Id")),
                 correlation=None if marker else _int_array(_num(df, "Correlation_Id")))
    if marker:  # roctxMark rows are instants (start == end): not ranges
        out = out[out["dur_ns"] > 0]
    return out
