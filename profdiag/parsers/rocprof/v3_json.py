"""rocprofv3 JSON (``--output-format json``: ``rocprofiler-sdk-tool`` runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ... import schema
from ...trace import DeviceInfo, Trace
from .. import _coerce
from ._common import (
    _finish,
    _frame,
    _grid_block,
    _int_array,
    _memcpy_name,
    _num,
    _short_names,
    _strings,
    _times,
    clean_kernel_names,
)


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
    frames: list[pd.DataFrame | None] = []
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
        kid = _coerce.int_or_none(di.get("kernel_id"))
        rows.append((
            symbols.get(kid, "") if kid is not None else "",
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
    return _frame(schema.KIND_KERNEL, len(df), name=_strings(name),
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
                  name=_strings(_memcpy_name(df["dir"])),
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
    return _frame(kind, len(df), name=_strings(df["name"]), start_ns=start,
                  dur_ns=dur, pid=_int_array(pd.Series(pid, index=df.index)),
                  tid=_int_array(df["tid"]),
                  correlation=_int_array(df["corr"]) if kind == schema.KIND_RUNTIME else None)
