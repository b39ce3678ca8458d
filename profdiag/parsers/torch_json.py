"""PyTorch profiler (Kineto) Chrome-trace JSON, plain or gzipped, CUDA or ROCm.

The streamer (``_kineto_fast``) turns the events into numpy columns, strings as int32 codes
into tables of distinct values; each kernel is then joined to the CPU op that launched it
(External id, falling back to the runtime call's correlation) on those codes and int64
arrays, and the table is built last: ``string`` columns, or with ``compact=True`` the sorted
Categoricals of ``schema.compact`` straight from the codes. Truncated files (a killed
profiler) are salvaged by cutting at the last complete event, with a warning.

``user_annotation`` events become annotations; of the ``python_function`` events (with_stack)
only the model runner's ``...: execute_model`` calls are kept, as annotations, because they
delimit vLLM V1's steps when it writes no step annotation (see rules/engines.toml).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

from .. import schema
from ..errors import TraceFormatError
from ..trace import DeviceInfo, Trace, TraceMeta
from . import _kineto_fast as _fast, _prefetch
from ._io import Input

FORMAT = "torch"
PARSES_COMPACT = True  # parse(..., compact=True) builds the compact table itself

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


def parse(path: Path | Input, progress: Callable[[int], None] | None = None,
          compact: bool = False) -> Trace:
    """Parse a Kineto trace into the canonical table; raise TraceFormatError if it is not one.

    ``compact``: the string columns as sorted Categoricals (``schema.compact``'s table),
    built from the string tables' codes without a string per row.

    ``progress`` (default: the active profdiag.progress reporter, if any) is called with the
    number of file bytes consumed as the file is read.
    """
    if progress is None:
        from ..progress import current_callback

        progress = current_callback()
    with Input.using(path) as src:
        path = src.path
        try:
            # the columns a forked child streamed while this process imported (_prefetch)
            result = _prefetch.take(path, progress) or _fast.stream(src, progress)
            extractor, top, warnings, salvaged = (
                result.extractor, result.top, result.warnings, result.salvaged)
        except _fast.StreamUnsupported:
            extractor, top, warnings, salvaged = _parse_document(src)
    cols = extractor.cols
    if cols.bad:
        warnings.append(f"{cols.bad} events without a usable ts/dur were skipped")
    if cols.negative:
        warnings.append(f"{cols.negative} events with a negative duration were clamped to 0")
    collectives = extractor.collectives
    frame = _table(extractor, warnings, compact)
    del extractor
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


def _int64(values: np.ndarray) -> pd.arrays.IntegerArray:
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


def _strings(values: list[str], codes: np.ndarray) -> Any:
    """Codes + distinct values -> the "string" column pandas builds from the values, without
    validating every element (a trace has a few thousand distinct names and shapes)."""
    out = _arrow_strings(values, codes)
    if out is None:
        out = pd.array(np.array(values + [None], dtype=object)[codes], dtype="string")
    return out


def _compact_strings(values: list[str], codes: np.ndarray) -> pd.Categorical:
    """Codes + distinct values -> the column ``schema.compact_strings`` makes of the strings
    values[codes], without building them (``schema.coded_categorical``)."""
    return schema.coded_categorical(codes, values)


@dataclass
class _Flat:
    """The extractor's columns joined: int64 with MISS for <NA>, strings as (values, codes)."""

    kind: np.ndarray
    start: np.ndarray
    dur: np.ndarray
    ints: dict[str, np.ndarray]
    text: dict[str, tuple[list[str], np.ndarray]]
    graph: np.ndarray | None = None  # graph_launch of the GPU rows (None: all <NA>)
    gpu: np.ndarray | None = None


def _join(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
    return np.concatenate(parts) if parts else np.empty(0, dtype)


def _flat(extractor: _fast.Extractor) -> _Flat:
    """Join the extractor's pieces column by column (each piece freed once joined)."""
    cols = extractor.cols
    kind, start, dur = (_join(cols.kind, np.int8), _join(cols.start, np.int64),
                        _join(cols.dur, np.int64))
    cols.kind, cols.start, cols.dur = [], [], []
    ints = {}
    for key in list(cols.ints):
        ints[key] = _join(cols.ints[key], np.int64)
        cols.ints[key] = []
    text = {"name": (cols.name.values, cols.name.concat())}
    for key, table in cols.text.items():
        text[key] = (table.values, table.concat())
    return _Flat(kind, start, dur, ints, text)


def _first_rows(keys: np.ndarray, rows: np.ndarray, last: bool) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct keys, the row of each key's first or last occurrence): pandas'
    drop_duplicates(keep="first"/"last").set_index(key) as two arrays."""
    order = np.argsort(keys, kind="stable")
    sk = keys[order]
    if last:
        sel = np.append(sk[1:] != sk[:-1], True) if len(sk) else np.zeros(0, bool)
    else:
        sel = np.insert(sk[1:] != sk[:-1], 0, True) if len(sk) else np.zeros(0, bool)
    return sk[sel], rows[order[sel]]


def _lookup(index: tuple[np.ndarray, np.ndarray], query: np.ndarray) -> np.ndarray:
    """The row of each query key in ``index`` (``_first_rows``), -1 where absent or <NA>."""
    keys, rows = index
    if not len(keys):
        return np.full(len(query), -1, np.int64)
    pos = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    hit = (keys[pos] == query) & (query != _fast.MISS)
    return np.where(hit, rows[pos], -1)


def _take_codes(codes: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """codes[rows], -1 where rows is -1."""
    return np.where(rows >= 0, codes[rows], -1).astype(np.int32)


_GPU_LINK = np.array([_fast.KIND_CODES.index(k) for k in schema.GPU_KINDS], np.int8)
_CPU_OP = _fast.KIND_CODES.index(schema.KIND_CPU_OP)
_RUNTIME = _fast.KIND_CODES.index(schema.KIND_RUNTIME)


def _link_ops(f: _Flat, warnings: list[str]) -> None:
    """Fill op_name/input_dims on GPU rows from the CPU op that launched them (External id,
    else the runtime call's by correlation); kernel base names; mark graph launches. All on
    codes and int64 arrays: no string is compared or built per row."""
    n = len(f.kind)
    gpu = np.isin(f.kind, _GPU_LINK)
    gpu_idx = np.flatnonzero(gpu)
    names, name_codes = f.text["name"]
    if not len(gpu_idx):
        f.text["short_name"] = ([], np.full(n, -1, np.int32))
        f.text["op_name"] = ([], np.full(n, -1, np.int32))
        return
    f.gpu = gpu
    # base names of the distinct GPU names only: kernel names repeat thousands of times
    g_names = name_codes[gpu_idx]
    distinct = np.unique(g_names)
    short_values = [short_name(names[c]) for c in distinct.tolist()]
    remap = np.full(len(names) + 1, -1, np.int32)
    remap[distinct] = np.arange(len(distinct), dtype=np.int32)
    short_codes = np.full(n, -1, np.int32)
    short_codes[gpu_idx] = remap[g_names]
    f.text["short_name"] = (short_values, short_codes)

    kind, ext, corr = f.kind, f.ints["external_id"], f.ints["correlation"]
    op_rows = np.flatnonzero((kind == _CPU_OP) & (ext != _fast.MISS))
    ops = _first_rows(ext[op_rows], op_rows, last=True)
    rt_rows = np.flatnonzero((kind == _RUNTIME) & (corr != _fast.MISS))
    runtime = _first_rows(corr[rt_rows], rt_rows, last=False)

    g_ext = ext[gpu_idx]
    g_corr = corr[gpu_idx]
    # GPU events missing an External id inherit their launch call's
    missing = g_ext == _fast.MISS
    if missing.any() and len(rt_rows):
        rt = _lookup(runtime, g_corr[missing])
        g_ext[missing] = np.where(rt >= 0, ext[np.maximum(rt, 0)], _fast.MISS)
        ext[gpu_idx] = g_ext
    op_codes = np.full(n, -1, np.int32)
    if len(op_rows):
        op = _lookup(ops, g_ext)
        op_codes[gpu_idx] = _take_codes(name_codes, op)
        for col in ("input_dims", "input_types", "input_concrete"):
            codes = f.text[col][1]
            codes[gpu_idx] = _take_codes(codes, op)
    f.text["op_name"] = (names, op_codes)
    graph = np.zeros(len(gpu_idx), bool)
    if len(rt_rows):
        launch = _lookup(runtime, g_corr)
        is_graph = np.array(["GraphLaunch" in v for v in names] + [False], bool)
        graph = is_graph[np.where(launch >= 0, name_codes[np.maximum(launch, 0)], -1)]
        orphans = int(((launch < 0) & (g_ext == _fast.MISS)).sum())
        if orphans:
            warnings.append(f"{orphans} GPU events have no launch call in the trace "
                            "(launched before the profiling window)")
    f.graph = graph


def _table(extractor: _fast.Extractor, warnings: list[str], compact: bool = False) -> pd.DataFrame:
    """The extractor's columns as the linked canonical (or compact) event table; the
    extractor's pieces are consumed."""
    flat = _flat(extractor)
    _link_ops(flat, warnings)
    return _frame(flat, compact)


def _frame(f: _Flat, compact: bool) -> pd.DataFrame:
    """Joined, linked columns -> the canonical DataFrame (same dtypes as
    schema.from_columns), or with ``compact`` its ``schema.compact`` form."""
    n = len(f.kind)
    data: dict[str, Any] = {}
    strings = _compact_strings if compact else _strings
    for col in schema.COLUMNS:
        if col == "kind":
            data[col] = pd.Categorical.from_codes(f.kind, dtype=schema.KIND_DTYPE)
        elif col == "start_ns":
            data[col] = f.start
        elif col == "dur_ns":
            data[col] = f.dur
        elif col in f.ints:
            data[col] = _int64(f.ints.pop(col))
        elif col in f.text:
            values, codes = f.text.pop(col)
            data[col] = strings(values, codes)
        elif col == "graph_launch":
            mask = np.ones(n, bool)
            flags = np.zeros(n, bool)
            if f.gpu is not None and f.graph is not None:
                mask[f.gpu] = False
                flags[f.gpu] = f.graph
            data[col] = pd.arrays.BooleanArray(flags, mask)
        else:  # pragma: no cover - every canonical column is built above
            raise AssertionError(col)
    # the arrays are new and owned by the frame: no copy of each column (pandas copies the
    # arrays of a dict by default)
    return pd.DataFrame(data, copy=False)


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
