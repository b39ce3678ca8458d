"""rocprof v1 ``results.json`` (Chrome trace with fixed pids per activity)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

from ... import schema
from ...errors import TraceFormatError
from ...trace import DeviceInfo, Trace
from ._common import (
    _finish,
    _frame,
    _grid_block,
    _int_array,
    _memcpy_name,
    _num,
    _short_names,
    _strings,
    _sysinfo_devices,
    _times,
    clean_kernel_names,
)


def _is_v1_json_head(head: bytes) -> bool:
    """rocprof v1 writes '{ "traceEvents":[{}' then process_name events for its fixed pids."""
    compact = re.sub(rb"\s+", b"", head[:200])
    return compact.startswith(b'{"traceEvents":[{}') and (
        b'"GPU' in head or b'"COPY"' in head or b'"CPU HIP API"' in head
        or b'"Markers and Ranges"' in head)


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
        raw_args = ev.get("args")
        args: dict[str, Any] = raw_args if isinstance(raw_args, dict) else {}
        begin, end = args.get("BeginNs"), args.get("EndNs")
        if begin is None or end is None:  # fall back on the µs strings
            ts: Any = ev.get("ts")
            dur: Any = ev.get("dur", 0)
            try:
                begin = int(float(ts)) * 1000
                end = begin + int(float(dur)) * 1000
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
            cols.update(name=_strings(clean), short_name=_short_names(clean),
                        grid=grid, block=block)
        elif kind == schema.KIND_MEMCPY:
            cols.update(name=_strings(_memcpy_name(df["name"])))
        else:
            cols.update(name=_strings(df["name"].astype("string")))
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
    devices: list[DeviceInfo] = []
    for _, a in sorted(agents.items()):
        if a.get("DeviceType") != "GPU":
            continue
        cu = re.match(r"\d+", a.get("ComputeUnit", ""))
        arch = a.get("Name", "")
        devices.append(DeviceInfo(index=len(devices), name=a.get("MarketingName") or arch,
                                  sm_count=int(cu.group(0)) if cu else None,
                                  compute_capability=arch or None, vendor="amd"))
    return devices
