"""The trace annotated with profdiag's findings, as Chrome trace JSON for Perfetto UI.

``build(diag)`` returns the trace document: for a PyTorch profiler trace the original events
(each GPU event of the analysed device gains ``profdiag.*`` args: class, category, step,
layer, hotspot rank); for Nsight Systems and rocprof inputs, Chrome events built from the
canonical event table. Either way a "profdiag" process is added with tracks for the phases
(with verdict and category shares), the steps (with their composition), the GPU idle gaps
(named by their cause), the hotspot kernels' calls and the kernel classes per stream.

Open the file in https://ui.perfetto.dev (drag and drop; it is read in the browser, nothing is
uploaded) or chrome://tracing. Times are the trace's own clock: ``ts`` = start_ns / 1000.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # pragma: no cover
    from .diagnosis.model import Diagnosis

PROCESS_NAME = "profdiag"
# track (thread) names of the profdiag process, in display order
TRACK_PHASES = "phases"
TRACK_STEPS = "steps"
TRACK_GAPS = "GPU idle gaps"
TRACK_HOTSPOTS = "hotspots"
TRACK_CLASSES = "kernel classes"
GPU_KIND_CATS = {"kernel", "gpu_memcpy", "gpu_memset", "Kernel", "Memcpy", "Memset"}
TOP_GAPS = 10  # largest gaps listed in the summary for the HTML report


def hotspot_label(rank: int) -> str:
    """The name prefix of a hotspot's slices (unique to search: "#1:" is not in "#10:")."""
    return f"hotspot #{rank}:"


def _us(ns: Any) -> float:
    return float(ns) / 1000.0


def build(diag: Diagnosis, tables: dict[str, pd.DataFrame] | None = None) -> dict[str, Any]:
    """The annotated trace document (a dict ready for JSON)."""
    tables = tables if tables is not None else diag.tables()
    trace = diag.trace
    fmt = str(diag.source.get("format") or "")
    doc: dict[str, Any] | None = None
    note = ""
    if fmt == "torch" and not diag.source.get("salvaged"):
        doc = _load_original(str(diag.source.get("path") or ""))
        if doc is None:
            note = "original JSON unreadable as a whole; events rebuilt from the event table"
    if doc is None:
        if trace is None:
            raise ValueError("the Diagnosis holds no trace to build a Perfetto file from")
        doc = {"traceEvents": events_from_table(trace.events, trace.meta.devices)}
    events: list[dict[str, Any]] = doc["traceEvents"]
    if fmt == "torch":
        _annotate_kernels(events, tables["kernels"])
    pid = _free_pid(events)
    added = profdiag_events(diag, tables, pid)
    events.extend(added)
    # Metadata events get the trace's first timestamp (as Kineto writes them), so no
    # importer can read a missing ts as 0 and stretch the timeline back to the epoch.
    stamps = [e["ts"] for e in events if isinstance(e.get("ts"), (int, float))]
    first = min(stamps) if stamps else 0.0
    for e in events:
        if e.get("ph") == "M" and "ts" not in e:
            e["ts"] = first
    doc["profdiag"] = {"pid": pid, "source": diag.source.get("path"),
                       "mode": diag.mode.value, "bottleneck": diag.bottleneck.value,
                       **({"note": note} if note else {})}
    doc.setdefault("displayTimeUnit", "ns")
    return doc


def write(diag: Diagnosis, path: str | Path) -> dict[str, Any]:
    """Write the annotated trace to ``path`` (gzip when it ends in .gz); return summary()."""
    import orjson

    from .io import write_atomic

    tables = diag.tables()
    doc = build(diag, tables)
    data = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY, default=_json_default)
    if str(path).endswith(".gz"):
        data = gzip.compress(data, compresslevel=3, mtime=0)
    write_atomic(path, data)
    return summary(tables, doc, path)


def _json_default(obj: Any) -> Any:
    if obj is pd.NA or obj is None:
        return None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    return str(obj)


def _load_original(path: str) -> dict[str, Any] | None:
    import orjson

    from .errors import TraceFormatError
    from .parsers._io import Input

    def truncated() -> None:
        raise TraceFormatError("truncated gzip stream", path)

    try:
        with Input(path) as src:  # bounded, like every trace read
            raw = src.read_bytes(on_truncated=truncated)
        doc = orjson.loads(raw)
    except (OSError, TraceFormatError, orjson.JSONDecodeError):
        return None
    if isinstance(doc, list):
        return {"traceEvents": doc}
    if isinstance(doc, dict) and isinstance(doc.get("traceEvents"), list):
        return doc
    return None


def _annotate_kernels(events: list[dict[str, Any]], kernels: pd.DataFrame) -> int:
    """Add profdiag.* args to the original GPU events of the analysed device; return how many."""
    if kernels.empty:
        return 0
    key_cols = ["start_ns", "name"]
    info = kernels[[*key_cols, "class", "category", "step", "layer", "hotspot_rank"]]
    lookup: dict[tuple[int, str], tuple[Any, ...]] = {
        (int(s), str(n)): (c, cat, int(st), lay, hr)
        for s, n, c, cat, st, lay, hr in info.itertuples(index=False, name=None)}
    hits = 0
    for ev in events:
        if ev.get("ph") != "X" or ev.get("cat") not in GPU_KIND_CATS:
            continue
        ts = ev.get("ts")
        if not isinstance(ts, (int, float)):
            continue
        got = lookup.get((int(np.rint(ts * 1000.0)), str(ev.get("name"))))
        if got is None:
            continue
        cls, cat, step, layer, rank = got
        args = ev.setdefault("args", {})
        args["profdiag.class"] = cls
        args["profdiag.category"] = cat
        args["profdiag.step"] = step
        if layer is not pd.NA and layer == layer:
            args["profdiag.layer"] = int(layer)
        if rank is not pd.NA and rank == rank:
            args["profdiag.hotspot_rank"] = int(rank)
        hits += 1
    return hits


def _free_pid(events: list[dict[str, Any]]) -> int:
    used = {e.get("pid") for e in events}
    pid = 9_000_000
    while pid in used:
        pid += 1
    return pid


def _meta(pid: int, tid: int, name: str, value: Any) -> dict[str, Any]:
    key = {"process_sort_index": "sort_index", "thread_sort_index": "sort_index",
           "process_labels": "labels"}.get(name, "name")
    return {"ph": "M", "pid": pid, "tid": tid, "name": name, "args": {key: value}}


def _slice(pid: int, tid: int, name: str, start_ns: int, dur_ns: int,
           args: dict[str, Any]) -> dict[str, Any]:
    return {"ph": "X", "cat": "profdiag", "pid": pid, "tid": tid, "name": name,
            "ts": _us(start_ns), "dur": _us(max(int(dur_ns), 0)),
            "args": {k: v for k, v in args.items() if v is not None and v is not pd.NA}}


def _clean(v: Any) -> Any:
    if v is None or v is pd.NA:
        return None
    if isinstance(v, float) and v != v:
        return None
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    return v


def _pylist(col: pd.Series) -> list[Any]:
    """Column values as plain Python objects, missing values as None."""
    obj = col.astype(object)
    return obj.where(col.notna(), None).tolist()


def profdiag_events(diag: Diagnosis, tables: dict[str, pd.DataFrame],
                    pid: int) -> list[dict[str, Any]]:
    """The "profdiag" process: metadata plus one track per finding."""
    out: list[dict[str, Any]] = [
        _meta(pid, 0, "process_name", PROCESS_NAME),
        _meta(pid, 0, "process_sort_index", -1),
        _meta(pid, 0, "process_labels", f"{diag.mode.value}, {diag.bottleneck.value}-bound"),
    ]
    tid = 0

    def track(name: str) -> int:
        nonlocal tid
        tid += 1
        out.append(_meta(pid, tid, "thread_name", name))
        out.append(_meta(pid, tid, "thread_sort_index", tid))
        return tid

    steps = tables["steps"]
    t = track(TRACK_PHASES)
    for ph in _phase_spans(diag, steps):
        out.append(_slice(pid, t, ph["name"], ph["start_ns"], ph["dur_ns"], ph["args"]))
    t = track(TRACK_STEPS)
    for r in steps.to_dict("records"):
        args = {k: _clean(r.get(k)) for k in (
            "step", "phase", "kernels", "host_ns", "wall_ns", "gpu_busy_ns", "idle_ns",
            "gpu_busy_share", "gemm_m", "attention_tq", "batch", "ideal_ns", "sol_ratio")}
        out.append(_slice(pid, t, str(r["name"]), int(r["start_ns"]), int(r["host_ns"]), args))
    gaps = tables["idle_gaps"]
    t = track(TRACK_GAPS)
    gap_keys = ("gap_id", "dur_ns", "step", "phase", "cause", "op", "prev_kernel", "next_kernel")
    cols = {k: _pylist(gaps[k]) if k in gaps.columns else [None] * len(gaps) for k in gap_keys}
    for i, (start, dur) in enumerate(zip(_pylist(gaps["start_ns"]), cols["dur_ns"])):
        args = {k: cols[k][i] for k in gap_keys if cols[k][i] is not None}
        cause = args.get("cause")
        out.append({"ph": "X", "cat": "profdiag", "pid": pid, "tid": t,
                    "name": f"idle: {cause}" if cause else "idle",
                    "ts": start / 1000.0, "dur": max(dur, 0) / 1000.0, "args": args})
    kernels = tables["kernels"]
    hot = tables["hotspots"]
    hot_by_rank = {int(r["rank"]): r for r in hot.to_dict("records")}
    streams = sorted({int(s) for s in kernels["stream"].dropna()}) if len(kernels) else []
    multi = len(streams) > 1
    if "stream" in kernels.columns:
        kernels = kernels.assign(_stream=kernels["stream"].fillna(-1).astype("int64"))
    for s in streams or [-1]:
        sub = kernels[kernels["_stream"] == s] if "_stream" in kernels.columns else kernels
        sub = sub[sub["hotspot_rank"].notna()]
        t = track(f"{TRACK_HOTSPOTS} (stream {s})" if multi else TRACK_HOTSPOTS)
        for r in sub[["start_ns", "dur_ns", "hotspot_rank", "short_name", "name",
                      "step"]].itertuples(index=False):
            h = hot_by_rank[int(r.hotspot_rank)]
            label = f"{hotspot_label(int(r.hotspot_rank))} {_clean(r.short_name) or r.name}"
            out.append(_slice(pid, t, label,
                              int(r.start_ns), int(r.dur_ns), {
                                  "kernel": str(r.name), "step": int(r.step),
                                  "calls": int(h["calls"]), "total_ns": int(h["total_ns"]),
                                  "share_of_busy": round(float(h["share_of_busy"]), 6),
                                  "note": h.get("note")}))
    for s in streams or [-1]:
        sub = kernels[kernels["_stream"] == s] if "_stream" in kernels.columns else kernels
        t = track(f"{TRACK_CLASSES} (stream {s})")
        for start, dur, cls, cat, name, step, layer in zip(*(_pylist(sub[c]) for c in (
                "start_ns", "dur_ns", "class", "category", "name", "step", "layer"))):
            args = {"category": cat, "kernel": name, "step": step}
            if layer is not None:
                args["layer"] = layer
            out.append({"ph": "X", "cat": "profdiag", "pid": pid, "tid": t, "name": cls,
                        "ts": start / 1000.0, "dur": max(dur, 0) / 1000.0, "args": args})
    return out


def _phase_spans(diag: Diagnosis, steps: pd.DataFrame) -> list[dict[str, Any]]:
    """Contiguous runs of steps of one mode, with that phase's verdict and categories."""
    by_name = {p.name: p for p in diag.phases}

    def args_for(name: str) -> dict[str, Any]:
        p = by_name.get(name)
        bd = p.breakdown if p else diag.breakdown
        verdict = p.bottleneck if p else diag.bottleneck
        share = p.overhead_share if p else diag.overhead.get("overhead_share")
        return {"mode": name, "bottleneck": verdict.value,
                "evidence": "; ".join(verdict.evidence[:2]),
                "overhead_share": round(float(share), 6) if share is not None else None,
                **{f"share_{k}": v for k, v in bd.shares.items()}}

    if steps.empty:
        if diag.window is None:
            return []
        w0, w1 = diag.window
        name = diag.mode.value
        return [{"name": name, "start_ns": w0, "dur_ns": w1 - w0, "args": args_for(name)}]
    spans: list[dict[str, Any]] = []
    for r in steps.to_dict("records"):
        start, end = int(r["start_ns"]), int(r["end_ns"])
        if spans and spans[-1]["name"] == r["phase"]:
            spans[-1]["end"] = end
            spans[-1]["n"] += 1
        else:
            spans.append({"name": r["phase"], "start_ns": start, "end": end, "n": 1})
    return [{"name": s["name"], "start_ns": s["start_ns"], "dur_ns": s["end"] - s["start_ns"],
             "args": {**args_for(s["name"]), "steps_in_span": s["n"]}} for s in spans]


def events_from_table(events: pd.DataFrame, devices: list[Any] | None = None
                      ) -> list[dict[str, Any]]:
    """Chrome trace events from the canonical event table (for nsys and rocprof inputs):
    GPU work in one process per device with a thread per stream, host work per pid/tid."""
    out: list[dict[str, Any]] = []
    names = {d.index: d.name for d in (devices or [])}
    gpu_kinds = {"kernel", "memcpy", "memset"}
    ev = events
    kind = ev["kind"].astype(str).tolist()
    gpu = [k in gpu_kinds for k in kind]
    gpu_ann = [k == "gpu_annotation" for k in kind]
    dev = ev["device"].fillna(-1).astype("int64").tolist()
    stream = ev["stream"].fillna(0).astype("int64").tolist()
    pid = ev["pid"].fillna(0).astype("int64").tolist()
    tid = ev["tid"].fillna(0).astype("int64").tolist()
    gpu_pid_base = 1_000_000
    seen_proc: set[int] = set()
    seen_thread: set[tuple[int, int]] = set()
    start = ev["start_ns"].astype("int64").tolist()
    dur = ev["dur_ns"].astype("int64").tolist()
    name = ev["name"].astype(str).tolist()
    extra = {c: _pylist(ev[c]) for c in ("correlation", "external_id", "bytes", "grid",
                                         "block", "op_name") if c in ev.columns}
    for i in range(len(ev)):
        if gpu[i] or gpu_ann[i]:
            p = gpu_pid_base + int(dev[i])
            t = int(stream[i]) + (500_000 if gpu_ann[i] else 0)
            if p not in seen_proc:
                seen_proc.add(p)
                label = f"GPU {int(dev[i])}" + (f" ({names[int(dev[i])]})"
                                                if names.get(int(dev[i])) else "")
                out.append(_meta(p, 0, "process_name", label))
            if (p, t) not in seen_thread:
                seen_thread.add((p, t))
                out.append(_meta(p, t, "thread_name", (f"annotations (stream {int(stream[i])})"
                                                       if gpu_ann[i] else
                                                       f"stream {int(stream[i])}")))
            cat = {"kernel": "kernel", "memcpy": "gpu_memcpy", "memset": "gpu_memset"}.get(
                kind[i], "gpu_user_annotation")
        else:
            p, t = int(pid[i]), int(tid[i])
            if p not in seen_proc:
                seen_proc.add(p)
                out.append(_meta(p, 0, "process_name", f"host {p}"))
            cat = kind[i]
        args = {c: col[i] for c, col in extra.items() if col[i] is not None}
        out.append({"ph": "X", "cat": cat, "name": name[i], "pid": p, "tid": t,
                    "ts": start[i] / 1000.0, "dur": max(dur[i], 0) / 1000.0, "args": args})
    return out


def summary(tables: dict[str, pd.DataFrame], doc: dict[str, Any],
            path: str | Path) -> dict[str, Any]:
    """Where to look in the written file: for the report's "Open in Perfetto" section."""
    stamps = [e["ts"] for e in doc["traceEvents"]
              if e.get("ph") != "M" and isinstance(e.get("ts"), (int, float))]
    origin_ns = int(round(min(stamps) * 1000)) if stamps else 0
    hot = tables["hotspots"]
    gaps = tables["idle_gaps"]
    big = gaps.sort_values(["dur_ns", "start_ns"], ascending=[False, True]).head(TOP_GAPS)

    def rel_ms(ns: Any) -> float | None:
        v = _clean(ns)
        return None if v is None else round((int(v) - origin_ns) / 1e6, 6)

    return {
        "file": Path(path).name,
        "origin_ns": origin_ns,
        "tracks": [TRACK_PHASES, TRACK_STEPS, TRACK_GAPS, TRACK_HOTSPOTS, TRACK_CLASSES],
        "hotspots": [{"rank": int(r["rank"]), "name": r["name"],
                      "search": hotspot_label(int(r["rank"])),
                      "first_start_ns": _clean(r["first_start_ns"]),
                      "first_ms": rel_ms(r["first_start_ns"]),
                      "longest_start_ns": _clean(r["longest_start_ns"]),
                      "longest_ms": rel_ms(r["longest_start_ns"]),
                      "longest_dur_ns": _clean(r["longest_dur_ns"])}
                     for r in hot.to_dict("records")],
        "gaps": [{"gap_id": int(r["gap_id"]), "start_ns": int(r["start_ns"]),
                  "start_ms": rel_ms(r["start_ns"]), "dur_ns": int(r["dur_ns"]),
                  "step": _clean(r["step"]), "cause": _clean(r["cause"]),
                  "next_kernel": _clean(r["next_kernel"])}
                 for r in big.to_dict("records")],
    }
