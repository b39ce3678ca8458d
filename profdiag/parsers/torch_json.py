"""PyTorch profiler (Kineto) Chrome-trace JSON, plain or gzipped, CUDA or ROCm.

One pass over the events fills plain Python lists per column (no DataFrame per event),
then pandas joins each kernel to the CPU op that launched it (External id, falling back to
the runtime call's correlation). Truncated files (a killed profiler) are salvaged by cutting
at the last complete event, with a warning.

``user_annotation`` events become annotations; of the ``python_function`` events (with_stack)
only the model runner's ``...: execute_model`` calls are kept, as annotations, because they
delimit vLLM V1's steps when it writes no step annotation (see rules/engines.toml).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

from .. import schema
from ..errors import TraceFormatError
from ..trace import DeviceInfo, Trace, TraceMeta
from . import _kineto_fast as _fast
from ._io import Input

FORMAT = "torch"

_KIND_BY_CAT = _fast.KIND_BY_CAT
_GPU = {schema.KIND_KERNEL, schema.KIND_MEMCPY, schema.KIND_MEMSET, schema.KIND_GPU_ANNOTATION}
_ROCPROF_V1_HEAD = re.compile(rb'\{\s*"traceEvents"\s*:\s*\[\s*\{\s*\}')
_TEMPLATE_RE = re.compile(r"^(?:void\s+)?([^<(]+)")
# Salvage: try at most this many cut points, newest first, before giving up.
_SALVAGE_TRIES = 400


def sniff(source: Path | Input, head: bytes | None = None) -> bool:
    """A JSON object holding "traceEvents", or a JSON array of Chrome trace events."""
    if head is None:
        with Input.using(source) as src:
            head = src.head()
    text = head.lstrip()
    if text.startswith(b"{"):
        if _ROCPROF_V1_HEAD.match(text[:64]) and (b'"GPU' in head or b'"COPY"' in head
                                                  or b'"CPU HIP API"' in head):
            return False  # rocprof v1's chrome JSON (leading empty event): the rocprof parser's
        return b'"traceEvents"' in head or b'"deviceProperties"' in head or (
            b'"schemaVersion"' in head and b'"ph"' in head
        )
    if text.startswith(b"["):
        return b'"ph"' in head and b'"ts"' in head
    return False


def _read_bytes(src: Input) -> tuple[bytes, list[str]]:
    """Whole decompressed content (bounded, see profdiag.io.InflateBudget); a truncated
    gzip stream yields what could be read."""
    warnings: list[str] = []
    data = src.read_bytes(on_truncated=lambda: warnings.append(
        "gzip stream is truncated; read what could be inflated"))
    return data, warnings


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


def _load_json(src: Input) -> tuple[Any, list[str], bool]:
    """(document, warnings, salvaged)."""
    path = src.path
    data, warnings = _read_bytes(src)
    if data[:3] == b"\xef\xbb\xbf":
        data = data[3:]  # a UTF-8 byte order mark
    if not data.strip():
        raise TraceFormatError("empty file", str(path))
    try:
        return orjson.loads(data), warnings, False
    except orjson.JSONDecodeError as exc:
        first_error = str(exc).splitlines()[0]
    repaired, notes = _repair_literals(data)
    if notes:
        try:
            return orjson.loads(repaired), warnings + notes, False
        except orjson.JSONDecodeError:
            data, warnings = repaired, warnings + notes  # salvage the repaired text below
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


# JavaScript literals Python's json writes (NaN, Infinity) and lone UTF-16 surrogate escapes
# (a name cut mid-character): JSON has neither, so one would reject the whole trace.
_NONFINITE = re.compile(rb"(?<=[:\[,])(\s*)(-?Infinity|NaN)(?=\s*[,\]\}])")
_SURROGATE = re.compile(rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
                        rb"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}")


def _repair_literals(data: bytes) -> tuple[bytes, list[str]]:
    """NaN/Infinity values as null and lone surrogate escapes as U+FFFD, with a warning
    each; (data, []) when there is nothing to repair."""
    notes = []
    data, n = _NONFINITE.subn(rb"\1null", data)
    if n:
        notes.append(f"{n} NaN/Infinity literal{'s' if n != 1 else ''} (not JSON) read as null")
    data, m = _SURROGATE.subn(rb"\\ufffd", data)
    if m:
        notes.append(f"{m} lone UTF-16 surrogate escape{'s' if m != 1 else ''} replaced by U+FFFD")
    return data, notes


def _has_bad_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


_to_int = _fast.to_int
_to_ns = _fast.to_ns
_dims3 = _fast.dims3


def short_name(name: str) -> str:
    """Kernel base name: 'void at::native::foo<...>(...)' -> 'at::native::foo'."""
    m = _TEMPLATE_RE.match(name)
    return m.group(1).strip() if m else name


def parse(path: Path | Input, progress: Callable[[int], None] | None = None) -> Trace:
    """Parse a Kineto trace into the canonical table; raise TraceFormatError if it is not one.

    ``progress`` (default: the active profdiag.progress reporter, if any) is called with the
    number of file bytes consumed as the file is read.
    """
    if progress is None:
        from ..progress import current_callback

        progress = current_callback()
    with Input.using(path) as src:
        path = src.path
        try:
            result = _fast.stream(src, progress)
            extractor, top, warnings, salvaged = (
                result.extractor, result.top, result.warnings, result.salvaged)
        except _fast.StreamUnsupported:
            extractor, top, warnings, salvaged = _parse_document(src)
    cols = extractor.cols
    if cols.bad:
        warnings.append(f"{cols.bad} events without a usable ts/dur were skipped")
    if cols.negative:
        warnings.append(f"{cols.negative} events with a negative duration were clamped to 0")
    frame = _frame(extractor)
    collectives = extractor.collectives
    del extractor
    frame = _link_ops(frame, warnings)
    meta = _meta(path, top, frame, warnings, salvaged)
    meta.collectives = collectives
    return Trace(frame, meta)


def _parse_document(src: Input) -> tuple[_fast.Extractor, dict[str, Any], list[str], bool]:
    """Whole-document path for layouts the streamer does not handle (and hostile input)."""
    path = src.path
    doc, warnings, salvaged = _load_json(src)
    if isinstance(doc, list):
        events, top = doc, {}
    elif isinstance(doc, dict) and isinstance(doc.get("traceEvents"), list):
        events, top = doc["traceEvents"], doc
    elif isinstance(doc, dict) and "traceEvents" in doc:
        raise TraceFormatError("'traceEvents' is not a list", str(path))
    else:
        raise TraceFormatError("JSON without a 'traceEvents' list: not a PyTorch profiler trace",
                               str(path))
    extractor = _fast.Extractor()
    extractor.add_objects(events)
    return extractor, top, warnings, salvaged


def _int64(parts: list[np.ndarray]) -> pd.arrays.IntegerArray:
    values = np.concatenate(parts) if parts else np.empty(0, np.int64)
    mask = values == _fast.MISS
    if mask.any():
        values = np.where(mask, 0, values)
    return pd.arrays.IntegerArray(values, mask)


def _arrow_strings(values: list[str], codes: np.ndarray) -> Any:
    """The pyarrow-backed "string" array of values[codes] (-1: <NA>), or None when pandas'
    "string" dtype is not pyarrow's here (pandas 2, or no pyarrow)."""
    if pd.StringDtype().storage != "pyarrow":
        return None
    try:
        import pyarrow as pa
    except ImportError:  # pragma: no cover - pandas' pyarrow storage needs pyarrow
        return None
    typ = pa.large_string()
    taken = (pa.array(values, type=typ).take(pa.array(codes, mask=codes < 0)) if values
             else pa.nulls(len(codes), typ))
    out = pd.arrays.ArrowStringArray(pa.chunked_array([taken], type=typ))
    # the stubs type the two dtypes apart; at run time they are equal when pandas' default
    # "string" storage is pyarrow (the dtype the column must have)
    built: Any = out.dtype
    return out if built == pd.StringDtype() else None


def _strings(table: _fast.Strings) -> Any:
    """Codes + distinct values -> the "string" column pandas builds from the values, without
    validating every element (a trace has a few thousand distinct names and shapes)."""
    codes = table.concat()
    out = _arrow_strings(table.values, codes)
    if out is None:
        out = pd.array(np.array(table.values + [None], dtype=object)[codes], dtype="string")
    return out


def _frame(extractor: _fast.Extractor) -> pd.DataFrame:
    """Columns -> the canonical DataFrame (same dtypes as schema.from_columns)."""
    cols = extractor.cols
    n = len(cols)
    data: dict[str, Any] = {}
    for col, (dtype, _) in schema.COLUMNS.items():
        if col == "name":
            data[col] = _strings(cols.name)
        elif col == "kind":
            kinds: Any = np.concatenate(cols.kind) if cols.kind else np.empty(0, np.int8)
            cols.kind = []
            data[col] = pd.Categorical.from_codes(kinds, categories=list(schema.ALL_KINDS))  # type: ignore[call-overload]
        elif col == "start_ns":
            data[col] = np.concatenate(cols.start) if cols.start else np.empty(0, np.int64)
            cols.start = []
        elif col == "dur_ns":
            data[col] = np.concatenate(cols.dur) if cols.dur else np.empty(0, np.int64)
            cols.dur = []
        elif col in cols.ints:
            data[col] = _int64(cols.ints[col])
            cols.ints[col] = []  # the pieces are freed as each column is joined
        elif col in cols.text:
            data[col] = _strings(cols.text[col])
        elif dtype == "boolean":
            data[col] = pd.arrays.BooleanArray(np.zeros(n, bool), np.ones(n, bool))
        elif dtype == "string":  # short_name, op_name: filled by _link_ops
            missing = _fast.Strings()
            missing.parts.append(np.full(n, -1, np.int32))
            data[col] = _strings(missing)
        else:
            empty: Any = np.full(n, None, dtype=object)
            data[col] = pd.array(empty, dtype=dtype)
    # the arrays are new and owned by the frame: no copy of each column (pandas copies the
    # arrays of a dict by default)
    return pd.DataFrame(data, copy=False)


def _link_ops(events: pd.DataFrame, warnings: list[str]) -> pd.DataFrame:
    """Fill op_name/input_dims on GPU rows from the CPU op that launched them; mark graphs."""
    kinds = events["kind"]
    gpu = kinds.isin(schema.GPU_KINDS)
    if not gpu.any():
        return events
    # base names of the unique GPU names only: kernel names repeat thousands of times
    codes, uniques = pd.factorize(events["name"].where(gpu))
    base = np.array([short_name(u) for u in uniques] + [None], dtype=object)
    events["short_name"] = pd.array(base[codes], dtype="string")
    ops = events.loc[(kinds == schema.KIND_CPU_OP) & events["external_id"].notna(),
                     ["external_id", "name", "input_dims", "input_types", "input_concrete"]]
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
        events.loc[gpu, "input_concrete"] = ext.map(ops["input_concrete"]).astype("string")
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
        dev_id = _to_int(p.get("id"))
        devices.append(DeviceInfo(
            index=dev_id if dev_id is not None else i,
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
    if isinstance(dist, dict) and _to_int(dist.get("world_size")) is not None:
        options["world_size"] = _to_int(dist.get("world_size"))
    return TraceMeta(
        format=FORMAT,
        path=str(path),
        devices=devices,
        warnings=warnings,
        options=options,
        base_time_ns=_to_int(top.get("baseTimeNanoseconds")),
        salvaged=salvaged,
        distributed=dict(dist) if isinstance(dist, dict) else None,
    )
