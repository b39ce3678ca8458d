"""AMD rocprof outputs: rocprof v1 (results.csv / .json / .db), rocprofv3 (CSV files or a
folder of them, JSON) and rocpd SQLite (rocprofv3's default output since ROCm 7.0).

Every flavour maps onto the canonical table the same way: kernels "kernel", HIP/HSA/RCCL API
calls "runtime" (name = the API function), copies "memcpy", roctx ranges "annotation".
Kernel names lose rocprof's code-object suffixes (" [clone .kd]", ".kd", "(.kd)"). rocprof
grid sizes count work-items; the table stores blocks (grid / workgroup per dimension), as CUDA
does. Devices are GPU ordinals (the n-th GPU agent), not HSA agent ids, which count CPUs.
"""

from __future__ import annotations

import csv
import re
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

from .. import schema
from ..errors import TraceFormatError
from ..trace import DeviceInfo, Trace, TraceMeta
from . import _coerce, nsys_sqlite as _sql
from .torch_json import short_name as _short_name

FORMAT = "rocprof"

# rocprofv3 CSV files of one run: <prefix><kind>.csv, prefix usually "<pid>_".
V3_KINDS = ("kernel_trace", "memory_copy_trace", "hip_api_trace", "hsa_api_trace",
            "rccl_api_trace", "marker_api_trace", "agent_info")
_V3_FILE_RE = re.compile(r"^(?P<prefix>.*?)(?P<kind>" + "|".join(V3_KINDS) + r")\.csv$")
_KD_SUFFIX_RE = re.compile(r"(\s*\[clone \.kd\]|\s*\(\.kd\)|\.kd)$")
_DIRECTION = {"HOST_TO_HOST": "HtoH", "HOST_TO_DEVICE": "HtoD", "DEVICE_TO_HOST": "DtoH",
              "DEVICE_TO_DEVICE": "DtoD", "PEER_TO_PEER": "PtoP"}


# ============================================================================ sniffing
def sniff(path: Path, head: bytes) -> bool:
    if path.is_dir():
        return bool(_v3_files(path))
    if _sql.looks_like_sqlite(head):
        try:
            with _sql.open_db(path) as con:
                return _sqlite_flavour(_sql.table_names(con), con) is not None
        except (sqlite3.Error, OSError):  # a bomb or truncated gzip is reported
            return False
    text = head.lstrip()
    if text.startswith(b"{"):
        return b'"rocprofiler-sdk-tool"' in head or _is_v1_json_head(head)
    return _csv_flavour(_first_line(head)) is not None


def _is_v1_json_head(head: bytes) -> bool:
    """rocprof v1 writes '{ "traceEvents":[{}' then process_name events for its fixed pids."""
    compact = re.sub(rb"\s+", b"", head[:200])
    return compact.startswith(b'{"traceEvents":[{}') and (
        b'"GPU' in head or b'"COPY"' in head or b'"CPU HIP API"' in head
        or b'"Markers and Ranges"' in head)


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


def _sqlite_flavour(tables: set[str], con: sqlite3.Connection) -> str | None:
    if "rocpd_kernel_dispatch" in tables or "rocpd_region" in tables:
        return "rocpd"
    for t in ("KERN", "OPS"):
        if t in tables and "BeginNs" in _sql.columns(con, t):
            return "v1"
    return None


# ============================================================================ parse
def parse(path: Path) -> Trace:
    path = Path(path)
    if not path.exists():
        raise TraceFormatError("no such file or directory", str(path))
    if path.is_dir():
        files = _v3_files(path)
        if not files:
            raise TraceFormatError("directory holds no rocprofv3 *_kernel_trace.csv, "
                                   "*_memory_copy_trace.csv or *_api_trace.csv files", str(path))
        return _parse_v3_csv(path, files)
    head = _read_head(path)
    if _sql.looks_like_sqlite(head):
        return _parse_sqlite(path)
    if head.lstrip().startswith(b"{"):
        return _parse_json(path)
    flavour = _csv_flavour(_first_line(head))
    if flavour == "v1":
        return _parse_v1_csv(path)
    if flavour is not None:
        return _parse_v3_csv(path, _v3_siblings(path))
    raise TraceFormatError("not a rocprof output (expected results.csv/.json/.db, a rocprofv3 "
                           "CSV/JSON or a rocpd database)", str(path))


def _read_head(path: Path) -> bytes:
    from . import read_head
    return read_head(path)


# ---------------------------------------------------------------------------- shared helpers
def clean_kernel_names(names: pd.Series) -> pd.Series:
    """Strip CSV quoting left in v1 .db names and the code-object suffixes."""
    s = names.astype("string").str.strip()
    quoted = s.str.startswith('"') & s.str.endswith('"') & (s.str.len() >= 2)
    s = s.where(~quoted.fillna(False), s.str.slice(1, -1))
    return s.str.replace(_KD_SUFFIX_RE, "", regex=True)


def _short_names(names: pd.Series) -> Any:
    uniq = {n: _short_name(n) for n in names.dropna().unique()}
    return pd.array(names.map(uniq), dtype="string")


def _num(df: pd.DataFrame, col: str | None) -> pd.Series:
    """A numeric column through the coercion step: inf, 1e400, 2**70, text -> NaN."""
    if col is None or col not in df.columns:
        return pd.Series(np.nan, index=df.index, dtype="float64")
    return _coerce.finite_numbers(df[col])


def _int_array(values: pd.Series) -> Any:
    return pd.array(_coerce.finite_numbers(values).round(), dtype="Int64")


def _dims(x: pd.Series, y: pd.Series, z: pd.Series) -> Any:
    """'x,y,z' strings, NA where any dimension is unknown."""
    x, y, z = (_coerce.finite_numbers(v) for v in (x, y, z))
    ok = x.notna() & y.notna() & z.notna()
    out = pd.Series(pd.NA, index=x.index, dtype="string")
    if ok.any():
        out[ok] = (x[ok].astype("int64").astype(str) + "," + y[ok].astype("int64").astype(str)
                   + "," + z[ok].astype("int64").astype(str))
    return pd.array(out, dtype="string")


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


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""],
                           skipinitialspace=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise TraceFormatError(f"unreadable CSV ({' '.join(str(exc).split())})",
                               str(path)) from None


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
        schema.KIND_KERNEL, len(df), name=pd.array(name, dtype="string"),
        short_name=_short_names(name), start_ns=start, dur_ns=dur,
        device=_int_array(_num(df, "gpu-id")), stream=_int_array(_num(df, "queue-id")),
        pid=_int_array(_num(df, "pid")), tid=_int_array(_num(df, "tid")),
        correlation=_int_array(_num(df, "Index")) if correlation else None,
        grid=grid, block=block)


def _parse_v1_csv(path: Path) -> Trace:
    df = _read_csv(path)
    warnings: list[str] = []
    kernels = _v1_kernels(df, path, warnings)
    devices = _sysinfo_devices(path, warnings)
    return _finish([kernels], "rocprof-v1", path, devices, warnings)


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
        cols.update(name=pd.array(clean, dtype="string"), short_name=_short_names(clean))
    else:
        cols.update(name=pd.array(_memcpy_name(name), dtype="string"))
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
                name=pd.array(api.get("Name", pd.Series("", index=api.index)), dtype="string"),
                start_ns=start, dur_ns=dur, pid=_int_array(_num(api, "pid")),
                tid=_int_array(_num(api, "tid")),
                correlation=_int_array(_num(api, "Index")) if table == "HIP" else None))
    if "KERN" not in tables and "OPS" not in tables:
        raise TraceFormatError("rocprof v1 database has no KERN or OPS table", str(path))
    devices = _sysinfo_devices(path, warnings)
    return _finish(frames, "rocprof-v1", path, devices, warnings)


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


def _parse_v1_json(path: Path, doc: dict[str, Any]) -> Trace:
    events = doc.get("traceEvents")
    if not isinstance(events, list):
        raise TraceFormatError("JSON without a 'traceEvents' list", str(path))
    warnings: list[str] = []
    rows: dict[str, list[list[Any]]] = {schema.KIND_KERNEL: [], schema.KIND_MEMCPY: [],
                                        schema.KIND_RUNTIME: [], schema.KIND_ANNOTATION: []}
    for ev in events:
        if not isinstance(ev, dict) or ev.get("ph") != "X":
            continue
        pid = ev.get("pid")
        if not isinstance(pid, int):
            continue
        if 6 <= pid < 518:
            kind = schema.KIND_KERNEL
        elif pid == 1:
            kind = schema.KIND_MEMCPY
        elif pid in (2, 3):
            kind = schema.KIND_RUNTIME
        elif pid == 0:
            kind = schema.KIND_ANNOTATION
        else:
            continue
        args = ev.get("args") if isinstance(ev.get("args"), dict) else {}
        begin, end = args.get("BeginNs"), args.get("EndNs")
        if begin is None or end is None:  # fall back on the µs strings
            try:
                begin = int(float(ev.get("ts"))) * 1000
                end = begin + int(float(ev.get("dur", 0))) * 1000
            except (TypeError, ValueError):
                continue
        dev = args.get("gpu-id", args.get("dev-id"))
        if dev is None and kind == schema.KIND_KERNEL:
            dev = pid - 6
        rows[kind].append([
            args.get("KernelName", args.get("Name", ev.get("name"))), begin, end, dev,
            args.get("queue-id", args.get("stream-id")), args.get("pid"),
            args.get("tid", ev.get("tid")), args.get("grd"), args.get("wgr")])
    frames = []
    names = ["name", "start", "end", "dev", "stream", "pid", "tid", "grd", "wgr"]
    for kind, data in rows.items():
        if not data:
            continue
        df = pd.DataFrame(data, columns=names)
        start, dur, _ = _times(df["start"], df["end"])
        cols: dict[str, Any] = dict(start_ns=start, dur_ns=dur, pid=_int_array(_num(df, "pid")),
                                    tid=_int_array(_num(df, "tid")))
        if kind in (schema.KIND_KERNEL, schema.KIND_MEMCPY):
            cols.update(device=_int_array(_num(df, "dev")), stream=_int_array(_num(df, "stream")))
        if kind == schema.KIND_KERNEL:
            clean = clean_kernel_names(df["name"])
            one = pd.Series(1.0, index=df.index)
            grid, block = _grid_block(_num(df, "grd"), one, one, _num(df, "wgr"), one, one)
            cols.update(name=pd.array(clean, dtype="string"), short_name=_short_names(clean),
                        grid=grid, block=block)
        elif kind == schema.KIND_MEMCPY:
            cols.update(name=pd.array(_memcpy_name(df["name"]), dtype="string"))
        else:
            cols.update(name=pd.array(df["name"].astype("string"), dtype="string"))
        frames.append(_frame(kind, len(df), **cols))
    devices = _other_data_devices(doc.get("otherData"))
    if not devices:
        devices = _sysinfo_devices(path, warnings)
    warnings.append("rocprof v1 JSON links no API call to its kernel (no correlation ids)")
    return _finish(frames, "rocprof-v1", path, devices, warnings)


def _other_data_devices(other: Any) -> list[DeviceInfo]:
    """rocprof v1 JSON 'otherData': flattened rocminfo keys 'AgentN.MarketingName', ..."""
    if not isinstance(other, dict):
        return []
    agents: dict[int, dict[str, str]] = {}
    for key, value in other.items():
        m = re.match(r"^Agent(\d+)\.(MarketingName|Name|DeviceType|ComputeUnit)$", str(key))
        if m:
            agents.setdefault(int(m.group(1)), {})[m.group(2)] = str(value)
    devices = []
    for _, a in sorted(agents.items()):
        if a.get("DeviceType") != "GPU":
            continue
        cu = re.match(r"\d+", a.get("ComputeUnit", ""))
        arch = a.get("Name", "")
        devices.append(DeviceInfo(index=len(devices), name=a.get("MarketingName") or arch,
                                  sm_count=int(cu.group(0)) if cu else None,
                                  compute_capability=arch or None, vendor="amd"))
    return devices


# ============================================================================ JSON dispatch
def _parse_json(path: Path) -> Trace:
    raw = _read_bytes(path)
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise TraceFormatError(f"invalid JSON ({exc})", str(path)) from None
    if isinstance(doc, dict) and isinstance(doc.get("rocprofiler-sdk-tool"), list):
        return _parse_v3_json(path, doc["rocprofiler-sdk-tool"])
    if isinstance(doc, dict) and "traceEvents" in doc:
        return _parse_v1_json(path, doc)
    raise TraceFormatError("JSON is neither a rocprofv3 ('rocprofiler-sdk-tool') nor a "
                           "rocprof v1 ('traceEvents') output", str(path))


def _read_bytes(path: Path) -> bytes:
    from ..io import bounded_inflate

    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        def truncated() -> None:
            raise TraceFormatError("corrupt or truncated gzip stream", str(path))

        return bounded_inflate(raw, path, on_truncated=truncated)
    return raw


def _obj(value: Any) -> dict[str, Any]:
    """The typed step for rocprofv3 JSON: an object where one is expected, else empty."""
    return value if isinstance(value, dict) else {}


def _key(value: Any) -> Any:
    """A handle usable as a dict key (a list or object from a hostile file is not)."""
    return value if isinstance(value, (int, str, float, type(None))) else None


def _arr(value: Any) -> list[Any]:
    """An array where one is expected, else empty."""
    return value if isinstance(value, list) else []


def _parse_v3_json(path: Path, runs: list[Any]) -> Trace:
    warnings: list[str] = []
    frames: list[pd.DataFrame] = []
    devices: list[DeviceInfo] = []
    options: dict[str, Any] = {}
    for run in runs:
        if not isinstance(run, dict):
            continue
        meta = _obj(run.get("metadata"))
        pid = _coerce.int_or_none(meta.get("pid"))
        agents = _arr(run.get("agents"))
        gpu_of: dict[Any, int] = {}
        for a in agents:
            if not isinstance(a, dict) or a.get("type") != 2:
                continue
            handle = _obj(a.get("id")).get("handle")
            idx = a.get("gpu_index")
            idx = int(idx) if isinstance(idx, int) and idx >= 0 else len(gpu_of)
            gpu_of[_key(handle)] = idx
            if not any(d.index == idx for d in devices):
                devices.append(DeviceInfo(index=idx, name=str(a.get("product_name") or a.get("name")
                                                               or ""),
                                          sm_count=_coerce.int_or_none(a.get("cu_count")),
                                          compute_capability=_coerce.text(a.get("name")), vendor="amd"))
        symbols: dict[int, str] = {}
        for s in _arr(run.get("kernel_symbols")):
            kid = _coerce.int_or_none(s.get("kernel_id")) if isinstance(s, dict) else None
            if kid is not None:
                symbols[kid] = str(
                    s.get("formatted_kernel_name") or s.get("demangled_kernel_name")
                    or s.get("kernel_name") or "")
        strings = _obj(run.get("strings"))
        kinds = _arr(strings.get("buffer_records"))
        records = _obj(run.get("buffer_records"))
        frames.append(_v3_json_kernels(_arr(records.get("kernel_dispatch")), symbols, gpu_of,
                                       pid, warnings))
        frames.append(_v3_json_copies(_arr(records.get("memory_copy")), kinds, gpu_of, pid))
        for key in ("hip_api", "hsa_api", "rccl_api"):
            frames.append(_v3_json_api(_arr(records.get(key)), kinds, pid,
                                       schema.KIND_RUNTIME, {}))
        markers = {}
        for m in _arr(strings.get("marker_api")):
            if isinstance(m, dict) and "key" in m:
                markers[_key(m["key"])] = m.get("value")
        frames.append(_v3_json_api(_arr(records.get("marker_api")), kinds, pid,
                                   schema.KIND_ANNOTATION, markers))
        if "init_time" in meta:
            options["init_time_ns"] = meta["init_time"]
        if isinstance(meta.get("command"), list):
            options["command"] = " ".join(map(str, meta["command"]))
    devices.sort(key=lambda d: d.index)
    return _finish(frames, "rocprofv3", path, devices, warnings, options)


def _kind_op(kinds: list[Any], kind: Any, op: Any) -> str:
    try:
        return str(kinds[int(kind)]["operations"][int(op)])
    except (IndexError, KeyError, TypeError, ValueError):
        return ""


def _v3_json_kernels(recs: list[Any], symbols: dict[int, str], gpu_of: dict[Any, int],
                     pid: Any, warnings: list[str]) -> pd.DataFrame | None:
    if not recs:
        return None
    rows = []
    for r in recs:
        if not isinstance(r, dict):
            continue
        di = _obj(r.get("dispatch_info"))
        wg = _obj(di.get("workgroup_size"))
        gs = _obj(di.get("grid_size"))
        rows.append((
            symbols.get(_coerce.int_or_none(di.get("kernel_id")), ""),
            r.get("start_timestamp"), r.get("end_timestamp"),
            gpu_of.get(_key(_obj(di.get("agent_id")).get("handle"))),
            _obj(r.get("stream_id")).get("handle", _obj(di.get("queue_id")).get("handle")),
            r.get("thread_id"), _obj(r.get("correlation_id")).get("internal"),
            gs.get("x"), gs.get("y"), gs.get("z"), wg.get("x"), wg.get("y"), wg.get("z")))
    if not rows:
        return None
    df = pd.DataFrame(rows, columns=["name", "start", "end", "dev", "stream", "tid", "corr",
                                     "gx", "gy", "gz", "wx", "wy", "wz"])
    unknown = int((df["name"] == "").sum())
    if unknown:
        warnings.append(f"{unknown} kernel dispatches reference no kernel symbol")
    name = clean_kernel_names(df["name"])
    start, dur, _ = _times(df["start"], df["end"])
    grid, block = _grid_block(df["gx"], df["gy"], df["gz"], _num(df, "wx"), _num(df, "wy"),
                              _num(df, "wz"))
    return _frame(schema.KIND_KERNEL, len(df), name=pd.array(name, dtype="string"),
                  short_name=_short_names(name), start_ns=start, dur_ns=dur,
                  device=_int_array(df["dev"]), stream=_int_array(df["stream"]),
                  pid=_int_array(pd.Series(pid, index=df.index)), tid=_int_array(df["tid"]),
                  correlation=_int_array(df["corr"]), grid=grid, block=block)


def _v3_json_copies(recs: list[Any], kinds: list[Any], gpu_of: dict[Any, int],
                    pid: Any) -> pd.DataFrame | None:
    if not recs:
        return None
    rows = []
    for r in recs:
        if not isinstance(r, dict):
            continue
        src = gpu_of.get(_key(_obj(r.get("src_agent_id")).get("handle")))
        dst = gpu_of.get(_key(_obj(r.get("dst_agent_id")).get("handle")))
        rows.append((_kind_op(kinds, r.get("kind"), r.get("operation")), r.get("start_timestamp"),
                     r.get("end_timestamp"), dst if dst is not None else src,
                     r.get("thread_id"), _obj(r.get("correlation_id")).get("internal"),
                     r.get("bytes"), _obj(r.get("stream_id")).get("handle")))
    if not rows:
        return None
    df = pd.DataFrame(rows, columns=["dir", "start", "end", "dev", "tid", "corr", "bytes",
                                     "stream"])
    start, dur, _ = _times(df["start"], df["end"])
    return _frame(schema.KIND_MEMCPY, len(df),
                  name=pd.array(_memcpy_name(df["dir"]), dtype="string"),
                  start_ns=start, dur_ns=dur, device=_int_array(df["dev"]),
                  stream=_int_array(df["stream"]),
                  pid=_int_array(pd.Series(pid, index=df.index)), tid=_int_array(df["tid"]),
                  correlation=_int_array(df["corr"]), bytes=_int_array(df["bytes"]))


def _v3_json_api(recs: list[Any], kinds: list[Any], pid: Any, kind: str,
                 markers: dict[Any, Any]) -> pd.DataFrame | None:
    if not recs:
        return None
    rows = []
    for r in recs:
        if not isinstance(r, dict):
            continue
        corr = _obj(r.get("correlation_id")).get("internal")
        name = markers.get(_key(corr)) if markers else None
        rows.append((name or _kind_op(kinds, r.get("kind"), r.get("operation")),
                     r.get("start_timestamp"), r.get("end_timestamp"), r.get("thread_id"), corr))
    if not rows:
        return None
    df = pd.DataFrame(rows, columns=["name", "start", "end", "tid", "corr"])
    df["name"] = df["name"].map(_coerce.text)
    start, dur, _ = _times(df["start"], df["end"])
    return _frame(kind, len(df), name=pd.array(df["name"], dtype="string"), start_ns=start,
                  dur_ns=dur, pid=_int_array(pd.Series(pid, index=df.index)),
                  tid=_int_array(df["tid"]),
                  correlation=_int_array(df["corr"]) if kind == schema.KIND_RUNTIME else None)


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


def _parse_v3_csv(path: Path, files: dict[str, Path]) -> Trace:
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
            df = _read_csv(p)
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
    return _frame(schema.KIND_KERNEL, len(df), name=pd.array(name, dtype="string"),
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
                  name=pd.array(_memcpy_name(df["Direction"]), dtype="string"),
                  start_ns=start, dur_ns=dur, device=device,
                  stream=_int_array(_num(df, "Stream_Id")),
                  correlation=_int_array(_num(df, "Correlation_Id")),
                  bytes=_int_array(_num(df, bytes_col)) if bytes_col else None)


def _v3_csv_api(df: pd.DataFrame, path: Path, kind: str) -> pd.DataFrame | None:
    _missing_columns(path, df.columns, _V3_API_REQUIRED, f"rocprofv3 {kind}")
    start, dur, _ = _times(df["Start_Timestamp"], df["End_Timestamp"])
    marker = kind == "marker_api_trace"
    out = _frame(schema.KIND_ANNOTATION if marker else schema.KIND_RUNTIME, len(df),
                 name=pd.array(df["Function"], dtype="string"), start_ns=start, dur_ns=dur,
                 pid=_int_array(_num(df, "Process_Id")), tid=_int_array(_num(df, "Thread_Id")),
                 correlation=None if marker else _int_array(_num(df, "Correlation_Id")))
    if marker:  # roctxMark rows are instants (start == end): not ranges
        out = out[out["dur_ns"] > 0]
    return out


# ============================================================================ SQLite: rocpd / v1
def _parse_sqlite(path: Path) -> Trace:
    try:
        with _sql.open_db(path) as con:
            tables = _sql.table_names(con)
            flavour = _sqlite_flavour(tables, con)
            if flavour == "rocpd":
                return _parse_rocpd(con, tables, path)
            if flavour == "v1":
                return _parse_v1_db(con, tables, path)
            raise TraceFormatError("SQLite file is not a rocprof output (no rocpd_* tables or "
                                   "rocprof v1 KERN/OPS table)", str(path))
    except (sqlite3.DatabaseError, pd.errors.DatabaseError) as exc:
        raise _sql._db_error(exc, path) from None


def _guid_join(a: str, b: str, cols_a: set[str], cols_b: set[str]) -> str:
    return f" AND {a}.guid = {b}.guid" if "guid" in cols_a and "guid" in cols_b else ""


def _parse_rocpd(con: sqlite3.Connection, tables: set[str], path: Path) -> Trace:
    warnings: list[str] = []
    cols = {t: _sql.columns(con, t) for t in tables if t.startswith("rocpd_")}
    devices, gpu_of = _rocpd_agents(con, cols)
    frames: list[pd.DataFrame | None] = []
    ev_cols = cols.get("rocpd_event", set())
    has_event = "stack_id" in ev_cols

    kd = cols.get("rocpd_kernel_dispatch")
    if kd:
        ks = cols.get("rocpd_info_kernel_symbol", set())
        name_expr = "COALESCE(ks.display_name, ks.kernel_name)" if ks else "NULL"
        sql = f"""
            SELECT k.start AS start, k."end" AS "end", {name_expr} AS name, k.agent_id AS agent,
                   k.stream_id AS stream, k.queue_id AS queue, k.pid AS pid, k.tid AS tid,
                   k.grid_size_x AS gx, k.grid_size_y AS gy, k.grid_size_z AS gz,
                   k.workgroup_size_x AS wx, k.workgroup_size_y AS wy, k.workgroup_size_z AS wz,
                   {'e.stack_id' if has_event else 'NULL'} AS corr
            FROM rocpd_kernel_dispatch k
            {'LEFT JOIN rocpd_info_kernel_symbol ks ON ks.id = k.kernel_id'
             + _guid_join('ks', 'k', ks, kd) if ks else ''}
            {'LEFT JOIN rocpd_event e ON e.id = k.event_id'
             + _guid_join('e', 'k', ev_cols, kd) if has_event else ''}"""
        df = _coerce.decode_blobs(pd.read_sql_query(sql, con))
        if len(df):
            name = clean_kernel_names(df["name"])
            start, dur, _ = _times(df["start"], df["end"])
            grid, block = _grid_block(df["gx"], df["gy"], df["gz"], _num(df, "wx"),
                                      _num(df, "wy"), _num(df, "wz"))
            frames.append(_frame(
                schema.KIND_KERNEL, len(df), name=pd.array(name, dtype="string"),
                short_name=_short_names(name), start_ns=start, dur_ns=dur,
                device=_int_array(df["agent"].map(gpu_of)),
                stream=_int_array(df["stream"].fillna(df["queue"])),
                pid=_int_array(df["pid"]), tid=_int_array(df["tid"]),
                correlation=_int_array(df["corr"]), grid=grid, block=block))
    else:
        warnings.append("no rocpd_kernel_dispatch table: no kernels in this database")

    mc = cols.get("rocpd_memory_copy")
    if mc:
        sql = f"""
            SELECT m.start AS start, m."end" AS "end", s.string AS dir, m.size AS bytes,
                   m.src_agent_id AS src, m.dst_agent_id AS dst, m.stream_id AS stream,
                   m.pid AS pid, m.tid AS tid, {'e.stack_id' if has_event else 'NULL'} AS corr
            FROM rocpd_memory_copy m
            LEFT JOIN rocpd_string s ON s.id = m.name_id{_guid_join('s', 'm', cols.get('rocpd_string', set()), mc)}
            {'LEFT JOIN rocpd_event e ON e.id = m.event_id'
             + _guid_join('e', 'm', ev_cols, mc) if has_event else ''}"""
        df = _coerce.decode_blobs(pd.read_sql_query(sql, con))
        if len(df):
            start, dur, _ = _times(df["start"], df["end"])
            dev = df["dst"].map(gpu_of).fillna(df["src"].map(gpu_of))
            frames.append(_frame(
                schema.KIND_MEMCPY, len(df), name=pd.array(_memcpy_name(df["dir"]), dtype="string"),
                start_ns=start, dur_ns=dur, device=_int_array(dev),
                stream=_int_array(df["stream"]), pid=_int_array(df["pid"]),
                tid=_int_array(df["tid"]), correlation=_int_array(df["corr"]),
                bytes=_int_array(df["bytes"])))

    rg = cols.get("rocpd_region")
    if rg:
        cat = "c.string" if has_event and "category_id" in ev_cols else "NULL"
        sql = f"""
            SELECT r.start AS start, r."end" AS "end", s.string AS name, r.pid AS pid,
                   r.tid AS tid, {'e.stack_id' if has_event else 'NULL'} AS corr,
                   {cat} AS category
            FROM rocpd_region r
            LEFT JOIN rocpd_string s ON s.id = r.name_id{_guid_join('s', 'r', cols.get('rocpd_string', set()), rg)}
            {'LEFT JOIN rocpd_event e ON e.id = r.event_id'
             + _guid_join('e', 'r', ev_cols, rg) if has_event else ''}
            {'LEFT JOIN rocpd_string c ON c.id = e.category_id' if cat != 'NULL' else ''}"""
        df = _coerce.decode_blobs(pd.read_sql_query(sql, con))
        if len(df):
            category = df["category"].fillna("").astype(str)
            marker = category.str.startswith("MARKER")
            for kind, sel in ((schema.KIND_RUNTIME, ~marker), (schema.KIND_ANNOTATION, marker)):
                sub = df[sel]
                if kind == schema.KIND_ANNOTATION:
                    sub = sub[pd.to_numeric(sub["end"]) > pd.to_numeric(sub["start"])]
                if not len(sub):
                    continue
                start, dur, _ = _times(sub["start"], sub["end"])
                frames.append(_frame(
                    kind, len(sub), name=pd.array(sub["name"], dtype="string"),
                    start_ns=start, dur_ns=dur, pid=_int_array(sub["pid"]),
                    tid=_int_array(sub["tid"]),
                    correlation=_int_array(sub["corr"]) if kind == schema.KIND_RUNTIME else None))
    options: dict[str, Any] = {}
    if "rocpd_metadata" in cols:
        meta = dict(con.execute("SELECT tag, value FROM rocpd_metadata").fetchall())
        if "schema_version" in meta:
            options["rocpd_schema_version"] = str(meta["schema_version"])
    return _finish(frames, "rocpd", path, devices, warnings, options)


def _rocpd_agents(con: sqlite3.Connection,
                  cols: dict[str, set[str]]) -> tuple[list[DeviceInfo], dict[Any, int]]:
    ac = cols.get("rocpd_info_agent")
    if not ac or "type" not in ac:
        return [], {}
    fields = ["id", "type", "type_index", "name", "product_name", "extdata"]
    sel = ", ".join(f if f in ac else f"NULL AS {f}" for f in fields)
    rows = con.execute(f"SELECT {sel} FROM rocpd_info_agent ORDER BY id").fetchall()
    devices: list[DeviceInfo] = []
    gpu_of: dict[Any, int] = {}
    for aid, typ, tidx, name, product, ext in rows:
        if str(typ).upper() != "GPU":
            continue
        ordinal = int(tidx) if tidx is not None else len(gpu_of)
        gpu_of[aid] = ordinal
        cu = None
        try:
            cu = orjson.loads(ext or "{}").get("cu_count")
        except (orjson.JSONDecodeError, AttributeError):
            pass
        if not any(d.index == ordinal for d in devices):
            devices.append(DeviceInfo(index=ordinal, name=str(product or name or ""),
                                      sm_count=int(cu) if isinstance(cu, int) else None,
                                      compute_capability=str(name) if name else None,
                                      vendor="amd"))
    devices.sort(key=lambda d: d.index)
    return devices, gpu_of


__all__ = ["FORMAT", "sniff", "parse", "clean_kernel_names"]
