"""PyTorch profiler (Kineto) Chrome-trace JSON, plain or gzipped, CUDA or ROCm.

One pass over the events fills plain Python lists per column (no DataFrame per event),
then pandas joins each kernel to the CPU op that launched it (External id, falling back to
the runtime call's correlation). Truncated files (a killed profiler) are salvaged by cutting
at the last complete event, with a warning.
"""

from __future__ import annotations

import gzip
import re
import zlib
from pathlib import Path
from typing import Any

import orjson
import pandas as pd

from .. import schema
from ..errors import TraceFormatError
from ..trace import DeviceInfo, Trace, TraceMeta

FORMAT = "torch"

# Kineto `cat` values (modern and 2021-era spellings) -> canonical kind.
_KIND_BY_CAT: dict[str, str] = {
    "kernel": schema.KIND_KERNEL,
    "Kernel": schema.KIND_KERNEL,
    "gpu_memcpy": schema.KIND_MEMCPY,
    "Memcpy": schema.KIND_MEMCPY,
    "gpu_memset": schema.KIND_MEMSET,
    "Memset": schema.KIND_MEMSET,
    "cuda_runtime": schema.KIND_RUNTIME,
    "cuda_driver": schema.KIND_RUNTIME,
    "Runtime": schema.KIND_RUNTIME,
    "Driver": schema.KIND_RUNTIME,
    "hip_runtime": schema.KIND_RUNTIME,
    "cuda_sync": schema.KIND_SYNC,
    "cpu_op": schema.KIND_CPU_OP,
    "Operator": schema.KIND_CPU_OP,
    "user_annotation": schema.KIND_ANNOTATION,
    "gpu_user_annotation": schema.KIND_GPU_ANNOTATION,
}
_GPU = {schema.KIND_KERNEL, schema.KIND_MEMCPY, schema.KIND_MEMSET, schema.KIND_GPU_ANNOTATION}
_INT_RE = re.compile(rb"-?\d+")
_TEMPLATE_RE = re.compile(r"^(?:void\s+)?([^<(]+)")
# Salvage: try at most this many cut points, newest first, before giving up.
_SALVAGE_TRIES = 400


def sniff(path: Path, head: bytes) -> bool:
    """A JSON object holding "traceEvents", or a JSON array of Chrome trace events."""
    text = head.lstrip()
    if text.startswith(b"{"):
        return b'"traceEvents"' in head or b'"deviceProperties"' in head or (
            b'"schemaVersion"' in head and b'"ph"' in head
        )
    if text.startswith(b"["):
        return b'"ph"' in head and b'"ts"' in head
    return False


def _read_bytes(path: Path) -> tuple[bytes, list[str]]:
    """Whole decompressed content; a truncated gzip stream yields what could be read."""
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw, []
    try:
        return gzip.decompress(raw), []
    except (EOFError, OSError, zlib.error):
        # Truncated or corrupt gzip: inflate as far as the stream allows.
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            data = d.decompress(raw)
        except zlib.error as exc:
            raise TraceFormatError(f"corrupt gzip stream ({exc})", str(path)) from None
        if not data:
            raise TraceFormatError("corrupt gzip stream (nothing could be inflated)", str(path))
        return data, ["gzip stream is truncated; read what could be inflated"]


def _salvage(data: bytes) -> Any | None:
    """Close a truncated traceEvents array after its last complete event, or None."""
    start = data.find(b'"traceEvents"')
    if start < 0:
        return None
    pos = len(data)
    for _ in range(_SALVAGE_TRIES):
        pos = data.rfind(b"}", start, pos)
        if pos < 0:
            return None
        try:
            return orjson.loads(data[: pos + 1] + b"]}")
        except orjson.JSONDecodeError:
            continue
    return None


def _load_json(path: Path) -> tuple[Any, list[str], bool]:
    """(document, warnings, salvaged)."""
    data, warnings = _read_bytes(path)
    if not data.strip():
        raise TraceFormatError("empty file", str(path))
    try:
        return orjson.loads(data), warnings, False
    except orjson.JSONDecodeError as exc:
        first_error = str(exc).splitlines()[0]
    if b"\xff" in data or _has_bad_utf8(data):
        # Kineto before 2025 could write raw bytes in names: replace them and retry.
        data = data.decode("utf-8", errors="replace").encode("utf-8")
        try:
            doc = orjson.loads(data)
            return doc, warnings + ["invalid UTF-8 in the trace was replaced"], False
        except orjson.JSONDecodeError:
            pass
    doc = _salvage(data)
    if doc is None:
        head = data.lstrip()[:1]
        if head not in (b"{", b"["):
            raise TraceFormatError("not JSON", str(path))
        raise TraceFormatError(f"invalid JSON that could not be salvaged ({first_error})", str(path))
    return doc, warnings + [
        "trace is truncated (profiler killed?); salvaged the events before the cut"
    ], True


def _has_bad_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def _to_int(value: Any) -> int | None:
    """Kineto ids and pids are ints, but 2021 files and ROCm write strings ("stream 7")."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**63 else None
    if isinstance(value, float):
        return int(value) if value == value and abs(value) < 9.2e18 else None
    if isinstance(value, str):
        m = _INT_RE.search(value.encode())
        if m:
            v = int(m.group())
            return v if -(2**63) <= v < 2**63 else None
    return None


def _to_ns(value: Any) -> int | None:
    """µs (int, float or string) -> integer ns."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        f = float(value)
    elif isinstance(value, str):
        try:
            f = float(value)
        except ValueError:
            return None
    else:
        return None
    if f != f or abs(f) > 9.2e15:  # NaN or past int64 ns
        return None
    return round(f * 1000.0)


def _dims3(value: Any) -> str | None:
    if isinstance(value, list) and value:
        return ",".join(str(v) for v in value)
    return None


def short_name(name: str) -> str:
    """Kernel base name: 'void at::native::foo<...>(...)' -> 'at::native::foo'."""
    m = _TEMPLATE_RE.match(name)
    return m.group(1).strip() if m else name


def parse(path: Path) -> Trace:
    """Parse a Kineto trace into the canonical table; raise TraceFormatError if it is not one."""
    doc, warnings, salvaged = _load_json(path)
    if isinstance(doc, list):
        events, top = doc, {}
    elif isinstance(doc, dict) and isinstance(doc.get("traceEvents"), list):
        events, top = doc["traceEvents"], doc
    elif isinstance(doc, dict) and "traceEvents" in doc:
        raise TraceFormatError("'traceEvents' is not a list", str(path))
    else:
        raise TraceFormatError("JSON without a 'traceEvents' list: not a PyTorch profiler trace",
                               str(path))

    cols: dict[str, list[Any]] = {c: [] for c in (
        "name", "kind", "start_ns", "dur_ns", "device", "stream", "pid", "tid",
        "correlation", "external_id", "bytes", "input_dims", "input_types", "grid", "block")}
    (c_name, c_kind, c_start, c_dur, c_dev, c_stream, c_pid, c_tid, c_corr, c_ext, c_bytes,
     c_dims, c_types, c_grid, c_block) = cols.values()
    bad = 0
    negative = 0
    dumps = orjson.dumps
    for ev in events:
        if not isinstance(ev, dict) or ev.get("ph") != "X":
            continue
        kind = _KIND_BY_CAT.get(ev.get("cat"))  # type: ignore[arg-type]
        if kind is None:
            continue
        start = _to_ns(ev.get("ts"))
        dur = _to_ns(ev.get("dur", 0))
        if start is None or dur is None:
            bad += 1
            continue
        if dur < 0:
            negative += 1
            dur = 0
        args = ev.get("args")
        if not isinstance(args, dict):
            args = {}
        name = ev.get("name")
        c_name.append(name if isinstance(name, str) else str(name))
        c_kind.append(kind)
        c_start.append(start)
        c_dur.append(dur)
        ext = args.get("External id", args.get("external id"))
        c_ext.append(_to_int(ext))
        c_corr.append(_to_int(args.get("correlation")))
        if kind in _GPU:
            dev = args.get("device", args.get("Device", ev.get("pid")))
            c_dev.append(_to_int(dev))
            c_stream.append(_to_int(args.get("stream", ev.get("tid"))))
            c_pid.append(None)
            c_tid.append(None)
            c_bytes.append(_to_int(args.get("bytes")))
            c_grid.append(_dims3(args.get("grid")))
            c_block.append(_dims3(args.get("block")))
            c_dims.append(None)
            c_types.append(None)
        else:
            c_dev.append(None)
            c_stream.append(None)
            c_pid.append(_to_int(ev.get("pid")))
            c_tid.append(_to_int(ev.get("tid")))
            c_bytes.append(None)
            c_grid.append(None)
            c_block.append(None)
            dims = args.get("Input Dims", args.get("Input dims"))
            c_dims.append(dumps(dims).decode() if dims is not None else None)
            types = args.get("Input type")
            c_types.append(dumps(types).decode() if types is not None else None)
    if bad:
        warnings.append(f"{bad} events without a usable ts/dur were skipped")
    if negative:
        warnings.append(f"{negative} events with a negative duration were clamped to 0")

    frame = schema.from_columns(cols)
    frame = _link_ops(frame, warnings)
    meta = _meta(path, top, frame, warnings, salvaged)
    return Trace(frame, meta)


def _link_ops(events: pd.DataFrame, warnings: list[str]) -> pd.DataFrame:
    """Fill op_name/input_dims on GPU rows from the CPU op that launched them; mark graphs."""
    kinds = events["kind"]
    gpu = kinds.isin(schema.GPU_KINDS)
    if not gpu.any():
        return events
    events["short_name"] = pd.array(
        [short_name(n) if g else pd.NA for n, g in zip(events["name"], gpu)], dtype="string")
    ops = events.loc[(kinds == schema.KIND_CPU_OP) & events["external_id"].notna(),
                     ["external_id", "name", "input_dims", "input_types"]]
    ops = ops.drop_duplicates("external_id", keep="last").set_index("external_id")
    runtime = events.loc[(kinds == schema.KIND_RUNTIME) & events["correlation"].notna(),
                         ["correlation", "external_id", "name"]]
    runtime = runtime.drop_duplicates("correlation").set_index("correlation")

    ext = events.loc[gpu, "external_id"].copy()
    # Kernels missing an External id inherit their launch call's.
    missing = ext.isna()
    if missing.any() and not runtime.empty:
        via_rt = events.loc[gpu, "correlation"][missing].map(runtime["external_id"])
        ext[missing] = via_rt
        events.loc[gpu, "external_id"] = ext
    if not ops.empty:
        events.loc[gpu, "op_name"] = ext.map(ops["name"]).astype("string")
        events.loc[gpu, "input_dims"] = ext.map(ops["input_dims"]).astype("string")
        events.loc[gpu, "input_types"] = ext.map(ops["input_types"]).astype("string")
    graph = pd.Series(False, index=events.index[gpu])
    if not runtime.empty:
        launch = events.loc[gpu, "correlation"].map(runtime["name"])
        graph = launch.fillna("").astype(str).str.contains("GraphLaunch", regex=False)
        orphans = int((launch.isna() & events.loc[gpu, "external_id"].isna()).sum())
        if orphans:
            warnings.append(f"{orphans} GPU events have no launch call in the trace "
                            "(launched before the profiling window)")
    events.loc[gpu, "graph_launch"] = graph.astype("boolean").to_numpy()
    return events


def _meta(path: Path, top: dict[str, Any], events: pd.DataFrame, warnings: list[str],
          salvaged: bool) -> TraceMeta:
    vendor = "amd" if any(k in top for k in ("roctracer_version", "hip_runtime_version")) else (
        "nvidia" if any(k in top for k in ("cuda_runtime_version", "cupti_version")) else "")
    devices = []
    props = top.get("deviceProperties", top.get("computeProperties"))
    for i, p in enumerate(props if isinstance(props, list) else []):
        if not isinstance(p, dict):
            continue
        cc = None
        if "computeMajor" in p:
            cc = f"{p.get('computeMajor')}.{p.get('computeMinor', 0)}"
        devices.append(DeviceInfo(
            index=_to_int(p.get("id")) if _to_int(p.get("id")) is not None else i,
            name=str(p.get("name") or ""),
            sm_count=_to_int(p.get("numSms")),
            memory_bytes=_to_int(p.get("totalGlobalMem")),
            compute_capability=cc,
            vendor=vendor or ("nvidia" if "NVIDIA" in str(p.get("name")) else ""),
        ))
    options: dict[str, Any] = {}
    for key in ("record_shapes", "with_stack", "with_flops", "profile_memory", "with_modules"):
        if key in top:
            v = top[key]
            options[key] = bool(int(v)) if isinstance(v, (int, str)) and str(v).isdigit() else bool(v)
    if "record_shapes" not in options:
        options["record_shapes"] = bool(events["input_dims"].notna().any())
    for key in ("cuda_runtime_version", "cuda_driver_version", "hip_runtime_version",
                "roctracer_version", "schemaVersion"):
        if key in top:
            options[key] = top[key]
    dist = top.get("distributedInfo")
    if isinstance(dist, dict) and "rank" in dist:
        options["rank"] = _to_int(dist.get("rank"))
    return TraceMeta(
        format=FORMAT,
        path=str(path),
        devices=devices,
        warnings=warnings,
        options=options,
        base_time_ns=_to_int(top.get("baseTimeNanoseconds")),
        salvaged=salvaged,
    )
