"""The diagnosis as flat tables (kernels, hotspots, classes, steps, phases, roofline,
idle_gaps, checks), with stable column names that carry their units.

``build_tables(diag)`` returns ``{name: DataFrame}`` (also ``Diagnosis.tables()``);
``write_tables`` writes them as CSV or Parquet (``profdiag export``). Every column is declared
in ``TABLES`` with its meaning, and docs/export.md lists the same columns (a test keeps
them in step). Times are integer nanoseconds on the trace's own clock, shares are 0..1.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from . import strcols
from .strcols import to_text

if TYPE_CHECKING:  # pragma: no cover
    from .diagnosis.model import Diagnosis

# table -> column -> meaning (the order is the column order of the file)
TABLES: dict[str, dict[str, str]] = {
    "kernels": {
        "kernel_id": "row number, in start order",
        "name": "kernel (or memcpy/memset) name as the trace gives it",
        "short_name": "base name, template arguments stripped",
        "kind": "kernel | memcpy | memset",
        "class": "profdiag class (gemv, attention, rmsnorm, ...)",
        "category": "profdiag category (compute, memory, normalization, elementwise, other)",
        "rule_id": "the classification rule that matched",
        "phase": "mode of the step it belongs to (prefill | decode), empty outside steps",
        "step": "step index (the steps table), -1 outside every step",
        "layer": "decoder layer index from layer_N annotations, empty when unknown",
        "device": "GPU index",
        "stream": "GPU stream / queue",
        "start_ns": "start on the GPU, ns (trace clock)",
        "dur_ns": "duration, ns",
        "end_ns": "start_ns + dur_ns, ns",
        "launch_ns": "when the host issued it (its launch call), ns; start_ns when unknown",
        "launch_to_start_ns": "start_ns - launch_ns: queueing plus launch latency, ns",
        "correlation": "launch correlation id",
        "external_id": "framework op id",
        "op_name": "framework op that launched it (aten::mm), empty when not linked",
        "input_dims": "the launching op's input shapes (JSON)",
        "input_types": "the launching op's input dtypes (JSON)",
        "grid": "launch grid x,y,z (blocks)",
        "block": "launch block x,y,z (threads)",
        "bytes": "bytes moved (memcpy/memset)",
        "graph_launch": "replayed from a CUDA/HIP graph",
        "hotspot_rank": "rank of its name in the hotspots table (1 = hottest), empty if none",
    },
    "hotspots": {
        "rank": "1 = most GPU time",
        "name": "kernel name",
        "short_name": "base name",
        "class": "profdiag class",
        "category": "profdiag category",
        "calls": "number of calls",
        "total_ns": "summed duration, ns",
        "mean_ns": "total_ns / calls, ns",
        "share_of_busy": "total_ns / GPU busy time of the window",
        "calls_per_forward": "calls / forwards (empty when the forwards are unknown)",
        "note": "costly per call or called too often",
        "first_start_ns": "start of its first call, ns (trace clock)",
        "longest_start_ns": "start of its longest call, ns (trace clock)",
        "longest_dur_ns": "duration of its longest call, ns",
    },
    "classes": {
        "class": "profdiag class",
        "category": "its category",
        "busy_ns": "GPU busy time apportioned to the class (sums to the window's busy time), ns",
        "share_of_busy": "busy_ns / GPU busy time",
        "share_of_window": "busy_ns / window time",
        "kernels": "number of kernels of the class in the window",
        "kernel_sum_ns": "plain sum of their durations (larger than busy_ns when streams overlap), ns",
    },
    "steps": {
        "step": "step index",
        "name": "the step range's name (annotation)",
        "phase": "prefill | decode (the step's own mode)",
        "start_ns": "host range start, ns (trace clock)",
        "end_ns": "host range end, ns",
        "host_ns": "host range duration, ns",
        "gpu_busy_ns": "union of the step's GPU intervals, ns",
        "wall_ns": "device-side window of the step (previous step's GPU end to its last GPU end), ns",
        "idle_ns": "wall_ns - gpu_busy_ns, ns",
        "gpu_busy_share": "gpu_busy_ns / wall_ns",
        "kernels": "GPU events launched in the step",
        "gemm_m": "median GEMM rows M of the step (batch x tokens per sequence)",
        "attention_tq": "median attention query length Tq (tokens per sequence)",
        "batch": "sequences in the step: gemm_m / attention_tq when it divides, else empty",
        "ideal_ns": "speed-of-light time of the step (roofline), ns",
        "sol_ratio": "wall_ns / ideal_ns",
    },
    "phases": {
        "phase": "prefill | decode (one row per phase; one row for a single-mode trace)",
        "steps": "number of steps",
        "median_step_ns": "median wall time per step, ns",
        "window_ns": "analysed window, ns",
        "busy_ns": "GPU busy time, ns",
        "idle_ns": "GPU idle time, ns",
        "overhead_share": "share of the window lost to GPU idle time",
        "mode_confidence": "confidence of the phase's mode, 0..1",
        "bottleneck": "compute | memory | overhead | unknown",
        "bottleneck_evidence": "the verdict's first evidence line",
        "share_compute": "share of the window (as in the report's categories)",
        "share_memory": "share of the window",
        "share_normalization": "share of the window",
        "share_elementwise": "share of the window",
        "share_other": "share of the window",
        "share_overhead": "share of the window: GPU idle plus overhead kernels",
    },
    "roofline": {
        "phase": "prefill | decode",
        "op_class": "gemm | attention",
        "op_name": "framework op",
        "m": "GEMM rows M (or attention batch x heads)",
        "k": "reduction dimension K",
        "n": "GEMM columns N",
        "calls": "calls of this shape",
        "kernel": "the kernel that ran it",
        "time_ns": "GPU time of these calls, ns",
        "intensity_flop_per_byte": "arithmetic intensity, FLOP/byte",
        "achieved_flop_per_s": "achieved FLOP/s",
        "achieved_bytes_per_s": "achieved bytes/s",
        "efficiency": "achieved / attainable at this intensity, 0..1",
        "bound": "memory | compute (by the ridge point)",
    },
    "idle_gaps": {
        "gap_id": "row number, in time order",
        "device": "GPU index",
        "start_ns": "start of the idle stretch, ns (trace clock)",
        "end_ns": "end, ns",
        "dur_ns": "duration, ns",
        "step": "step of the work that ended the gap, -1 when none",
        "phase": "that step's phase",
        "cause": "why the GPU waited (empty until a cause is attributed)",
        "op": "framework op of the work that ended the gap",
        "prev_kernel": "GPU work just before the gap",
        "next_kernel": "GPU work just after the gap",
    },
    "checks": {
        "id": "stable check id",
        "status": "pass | warn | fail | skip",
        "summary": "one line with numbers and units",
        "evidence": "the check's evidence (JSON)",
    },
}

PHASE_CATEGORIES = ("compute", "memory", "normalization", "elementwise", "other", "overhead")
ROOFLINE_RENAME = {"intensity": "intensity_flop_per_byte",
                   "achieved_flops_s": "achieved_flop_per_s",
                   "achieved_bytes_s": "achieved_bytes_per_s"}
HOTSPOT_RENAME = {"share": "share_of_busy"}
TABLE_FORMATS = ("csv", "parquet")


def build_tables(diag: Diagnosis) -> dict[str, pd.DataFrame]:
    """All tables of ``diag``, in the order of TABLES."""
    hot = hotspots_table(diag)
    rank_of = dict(zip(hot["name"], hot["rank"]))
    return {
        "kernels": kernels_table(diag, rank_of),
        "hotspots": hot,
        "classes": classes_table(diag),
        "steps": steps_table(diag),
        "phases": phases_table(diag),
        "roofline": roofline_table(diag),
        "idle_gaps": idle_gaps_table(diag),
        "checks": checks_table(diag),
    }


def _frame(table: str, data: dict[str, Any] | pd.DataFrame, keep_extra: bool = False
           ) -> pd.DataFrame:
    """Columns in the declared order; a missing one is filled with NA (extras kept at the end)."""
    df = data if isinstance(data, pd.DataFrame) else pd.DataFrame(data)
    cols = list(TABLES[table])
    for c in cols:
        if c not in df.columns:
            df[c] = pd.NA
    extra = [c for c in df.columns if c not in cols and not str(c).startswith("_")] \
        if keep_extra else []
    return df[cols + extra].reset_index(drop=True)


def _work(diag: Diagnosis) -> pd.DataFrame:
    if diag.events is None:
        return pd.DataFrame(columns=list(TABLES["kernels"]))
    return diag.events


def _phase_of_step(diag: Diagnosis) -> dict[int, str]:
    st = diag.steps
    if st is None or st.empty:
        return {}
    return {int(s): str(p) for s, p in zip(st["step"], st["phase"])}


def kernels_table(diag: Diagnosis, rank_of: dict[str, int] | None = None) -> pd.DataFrame:
    """One row per GPU event of the analysed device, classified and placed in step and layer."""
    w = _work(diag).sort_values("start_ns", kind="stable").reset_index(drop=True)
    n = len(w)
    step = (w["step"].astype("int64") if "step" in w.columns else pd.Series(-1, index=w.index))
    phases = _phase_of_step(diag)
    start = w["start_ns"].astype("int64")
    dur = w["dur_ns"].astype("int64")
    launch = w["launch_ns"].astype("int64") if "launch_ns" in w.columns else start
    out = pd.DataFrame({
        "kernel_id": np.arange(n, dtype=np.int64),
        "name": w["name"].astype("string"),
        "short_name": w["short_name"].astype("string"),
        "kind": w["kind"].astype(str),
        "class": w["class"].astype(str) if "class" in w.columns else pd.NA,
        "category": w["category"].astype(str) if "category" in w.columns else pd.NA,
        "rule_id": w["rule_id"].astype("string") if "rule_id" in w.columns else pd.NA,
        "phase": pd.array([phases.get(int(s)) for s in step], dtype="string"),
        "step": step.to_numpy(),
        "layer": _layers(diag, launch.to_numpy()),
        "device": w["device"], "stream": w["stream"],
        "start_ns": start, "dur_ns": dur, "end_ns": start + dur, "launch_ns": launch,
        "launch_to_start_ns": start - launch,
        "correlation": w["correlation"], "external_id": w["external_id"],
        # the compact table's Categoricals written as the canonical string columns
        "op_name": to_text(w["op_name"]), "input_dims": to_text(w["input_dims"]),
        "input_types": to_text(w["input_types"]),
        "grid": to_text(w["grid"]), "block": to_text(w["block"]), "bytes": w["bytes"],
        "graph_launch": w["graph_launch"],
    })
    rank_of = rank_of or {}
    ranks: Any = strcols.per_value(w["name"], rank_of.get) if n else []
    out["hotspot_rank"] = pd.array(ranks, dtype="Int64")
    return _frame("kernels", out)


def _layers(diag: Diagnosis, launch_ns: np.ndarray) -> pd.arrays.IntegerArray:
    """Layer index of each launch from the trace's layer_N host ranges (NA when unknown)."""
    trace = diag.trace
    empty = pd.array([pd.NA] * len(launch_ns), dtype="Int64")
    if trace is None or not len(launch_ns):
        return empty
    from .diagnosis.context import assign
    from .diagnosis.counts import layer_ranges

    ann = trace.events[trace.events["kind"] == "annotation"]
    lay = layer_ranges(ann)
    if lay.empty:
        return empty
    idx = assign(launch_ns, lay["start_ns"].to_numpy(), lay["end_ns"].to_numpy())
    vals = lay["layer"].to_numpy(dtype=np.int64)[np.clip(idx, 0, None)]
    out = pd.array(vals, dtype="Int64")
    out[idx < 0] = pd.NA
    return out


def hotspots_table(diag: Diagnosis) -> pd.DataFrame:
    """The report's hotspots, ranked, with where their first and longest calls start."""
    hot = diag.hotspots.rename(columns=HOTSPOT_RENAME).reset_index(drop=True)
    hot.insert(0, "rank", np.arange(1, len(hot) + 1, dtype=np.int64))
    w = _work(diag)
    if len(hot) and len(w):
        # grouped by name code (one per distinct name), then labelled with the names
        codes, values = strcols.codes_values(w["name"])
        want = strcols.isin(w["name"], hot["name"].astype(object))
        sub = w.loc[want, ["start_ns", "dur_ns"]]
        key = pd.Series(codes[want], index=sub.index)
        first = sub.groupby(key)["start_ns"].min()
        first.index = values[first.index.to_numpy()]
        at = sub.groupby(key)["dur_ns"].idxmax()
        longest = sub.loc[at]
        longest.index = values[key.loc[at].to_numpy()]
        hot["first_start_ns"] = hot["name"].map(first).astype("Int64")
        hot["longest_start_ns"] = hot["name"].map(longest["start_ns"]).astype("Int64")
        hot["longest_dur_ns"] = hot["name"].map(longest["dur_ns"]).astype("Int64")
    for c in ("calls", "total_ns", "mean_ns"):
        if c in hot.columns:
            hot[c] = hot[c].astype("int64")
    return _frame("hotspots", hot)


def classes_table(diag: Diagnosis) -> pd.DataFrame:
    """Busy time per class of the window (the report's class breakdown)."""
    bd = diag.breakdown
    w = _work(diag)
    if diag.window is not None and len(w):
        w0, w1 = diag.window
        inside = w[(w["start_ns"] + w["dur_ns"] > w0) & (w["start_ns"] < w1)]
    else:
        inside = w
    cls = inside["class"].astype(str) if len(inside) else pd.Series([], dtype=str)
    counts = cls.value_counts()
    sums = inside["dur_ns"].groupby(cls).sum() if len(inside) else pd.Series([], dtype="int64")
    rows: list[dict[str, Any]] = [
        {"class": k, "category": bd.class_category.get(k), "busy_ns": int(v),
         "share_of_busy": v / bd.busy_ns if bd.busy_ns else 0.0,
         "share_of_window": v / bd.window_ns if bd.window_ns else 0.0,
         "kernels": int(counts.get(k, 0)), "kernel_sum_ns": int(sums.get(k, 0))}
        for k, v in bd.class_ns.items()]
    rows.sort(key=lambda r: (-r["busy_ns"], r["class"]))
    return _frame("classes", pd.DataFrame(rows, columns=list(TABLES["classes"])))


def steps_table(diag: Diagnosis) -> pd.DataFrame:
    """The steps with their idle time, batch composition and speed-of-light ratio."""
    st = diag.steps.copy() if diag.steps is not None else pd.DataFrame()
    if st.empty:
        return _frame("steps", pd.DataFrame(columns=list(TABLES["steps"])))
    st["end_ns"] = st["start_ns"] + st["host_ns"]
    st["idle_ns"] = st["wall_ns"] - st["gpu_busy_ns"]
    st["gpu_busy_share"] = np.where(st["wall_ns"] > 0, st["gpu_busy_ns"] / st["wall_ns"].where(
        st["wall_ns"] > 0, 1), np.nan)
    m_of, tq_of = _step_shapes(diag)
    st["gemm_m"] = pd.array([m_of.get(int(s)) for s in st["step"]], dtype="Int64")
    st["attention_tq"] = pd.array([tq_of.get(int(s)) for s in st["step"]], dtype="Int64")
    st["batch"] = pd.array([
        (m // tq) if m is not None and tq and m % tq == 0 else None
        for m, tq in ((m_of.get(int(s)), tq_of.get(int(s))) for s in st["step"])], dtype="Int64")
    sol = ((diag.roofline or {}).get("speed_of_light") or {}).get("steps") or []
    ideal = {int(r["step"]): r.get("ideal_ns") for r in sol if r.get("step") is not None}
    st["ideal_ns"] = pd.array([ideal.get(int(s)) for s in st["step"]], dtype="Int64")
    st["sol_ratio"] = [
        (w / i) if i else np.nan for w, i in zip(st["wall_ns"], st["ideal_ns"].fillna(0))]
    for c in ("step", "start_ns", "end_ns", "host_ns", "gpu_busy_ns", "wall_ns", "idle_ns",
              "kernels"):
        st[c] = st[c].astype("int64")
    return _frame("steps", st, keep_extra=True)


def _step_shapes(diag: Diagnosis) -> tuple[dict[int, int], dict[int, int]]:
    """Median GEMM M and attention Tq per step (one value per op call, as the mode step)."""
    w = _work(diag)
    if not len(w) or "step" not in w.columns:
        return {}, {}
    from .diagnosis.mode import annotate

    a = annotate(w[w["input_dims"].notna()].copy())
    has = a["_m"].notna() | a["_tq"].notna()
    a = a.loc[has, ["step", "external_id", "op_name", "input_dims", "_m", "_tq"]]
    a = a.drop_duplicates(["step", "external_id", "op_name", "input_dims"])
    m = a.dropna(subset=["_m"]).groupby("step")["_m"].median()
    tq = a.dropna(subset=["_tq"]).groupby("step")["_tq"].median()
    return ({int(k): int(v) for k, v in m.items()}, {int(k): int(v) for k, v in tq.items()})


def phases_table(diag: Diagnosis) -> pd.DataFrame:
    """One row per phase (a single row for a single-mode diagnosis)."""
    rows = []
    if diag.phases:
        for p in diag.phases:
            rows.append(_phase_row(p.name, p.steps, p.median_step_ns, p.breakdown,
                                   p.overhead_share, p.mode.confidence, p.bottleneck))
    else:
        st = diag.steps
        median = int(st["wall_ns"].median()) if st is not None and len(st) else None
        rows.append(_phase_row(diag.mode.value, 0 if st is None else len(st), median,
                               diag.breakdown, float(diag.overhead.get("overhead_share", 0.0)),
                               diag.mode.confidence, diag.bottleneck))
    return _frame("phases", pd.DataFrame(rows))


def _phase_row(name: str, steps: int, median: int | None, bd: Any, overhead_share: float,
               confidence: float, verdict: Any) -> dict[str, Any]:
    shares = bd.shares
    row = {"phase": name, "steps": steps, "median_step_ns": median, "window_ns": bd.window_ns,
           "busy_ns": bd.busy_ns, "idle_ns": bd.idle_ns,
           "overhead_share": round(overhead_share, 6), "mode_confidence": round(confidence, 2),
           "bottleneck": verdict.value,
           "bottleneck_evidence": verdict.evidence[0] if verdict.evidence else None}
    for cat in PHASE_CATEGORIES:
        row[f"share_{cat}"] = shares.get(cat, 0.0)
    for cat in sorted(set(shares) - set(PHASE_CATEGORIES)):  # categories from user rules
        row[f"share_{cat}"] = shares[cat]
    return row


def roofline_table(diag: Diagnosis) -> pd.DataFrame:
    """The roofline points: one row per (phase, op, shape)."""
    points = (diag.roofline or {}).get("points") or []
    df = pd.DataFrame(points).rename(columns=ROOFLINE_RENAME)
    return _frame("roofline", df, keep_extra=True)


def idle_gaps_table(diag: Diagnosis) -> pd.DataFrame:
    """GPU idle stretches of the window, with a cause when the diagnosis attributed one."""
    given = getattr(diag, "idle_gaps", None)
    own = idle_gaps(diag)
    if isinstance(given, pd.DataFrame):
        gaps = given.copy()
        if "end_ns" not in gaps.columns and len(gaps):
            gaps["end_ns"] = gaps["start_ns"] + gaps["dur_ns"]
        if "device" not in gaps.columns:
            gaps["device"] = diag.source.get("device_index")
        gaps = gaps.sort_values("start_ns", kind="stable").reset_index(drop=True)
        gaps["gap_id"] = np.arange(len(gaps), dtype=np.int64)
        if "phase" not in gaps.columns and "step" in gaps.columns:
            phases = _phase_of_step(diag)
            gaps["phase"] = [phases.get(int(s)) if s == s else None for s in gaps["step"]]
        # neighbours come from our own timeline where the gap starts match
        for col in ("prev_kernel", "next_kernel"):
            if col not in gaps.columns and len(own):
                gaps[col] = gaps["start_ns"].map(dict(zip(own["start_ns"], own[col])))
        return _frame("idle_gaps", gaps, keep_extra=True)
    return own


def idle_gaps(diag: Diagnosis) -> pd.DataFrame:
    """Idle stretches of the analysed device inside the window: the complement of the union
    of its busy intervals. Their durations sum to the breakdown's idle_ns."""
    w = _work(diag)
    cols = list(TABLES["idle_gaps"])
    if not len(w) or diag.window is None:
        return pd.DataFrame(columns=cols)
    w0, w1 = diag.window
    order = np.argsort(w["start_ns"].to_numpy(), kind="stable")
    s = np.clip(w["start_ns"].to_numpy(dtype=np.int64)[order], w0, w1)
    e = np.clip((w["start_ns"] + w["dur_ns"]).to_numpy(dtype=np.int64)[order], w0, w1)
    reach = np.maximum.accumulate(e)  # furthest end of any work started so far
    prev_reach = np.concatenate(([w0], reach[:-1]))
    prev_reach = np.maximum(prev_reach, w0)
    gap_at = np.nonzero(s > prev_reach)[0]  # work that starts after every earlier one ended
    names = strcols.as_str_objects(w["name"])[order]
    steps = (w["step"].to_numpy()[order] if "step" in w.columns
             else np.full(len(w), -1))
    ops = strcols.per_value(w["op_name"], str, None)[order]
    # which earlier row reached prev_reach: the last one whose end is the running max
    last_reacher = _argmax_accumulate(e)
    starts = list(prev_reach[gap_at])
    ends = list(s[gap_at])
    prev_names = [names[last_reacher[i - 1]] if i > 0 else None for i in gap_at]
    next_names = [names[i] for i in gap_at]
    step_of = [int(steps[i]) for i in gap_at]
    op_of = [ops[i] if isinstance(ops[i], str) else None for i in gap_at]
    tail_start = max(int(reach[-1]), w0)
    if tail_start < w1:  # the window ends after the last work
        starts.append(tail_start)
        ends.append(w1)
        prev_names.append(names[last_reacher[-1]])
        next_names.append(None)
        step_of.append(-1)
        op_of.append(None)
    phases = _phase_of_step(diag)
    start_arr = np.asarray(starts, dtype=np.int64)
    end_arr = np.asarray(ends, dtype=np.int64)
    df = pd.DataFrame({
        "gap_id": np.arange(len(starts), dtype=np.int64),
        "device": diag.source.get("device_index"),
        "start_ns": start_arr, "end_ns": end_arr, "dur_ns": end_arr - start_arr,
        "step": np.asarray(step_of, dtype=np.int64),
        "phase": pd.array([phases.get(s_) for s_ in step_of], dtype="string"),
        "cause": pd.array([None] * len(starts), dtype="string"),
        "op": pd.array(op_of, dtype="string"),
        "prev_kernel": pd.array(prev_names, dtype="string"),
        "next_kernel": pd.array(next_names, dtype="string"),
    })
    df["device"] = df["device"].astype("Int64")
    return df[df["dur_ns"] > 0].reset_index(drop=True).assign(
        gap_id=lambda d: np.arange(len(d), dtype=np.int64))[cols]


def _argmax_accumulate(values: np.ndarray) -> np.ndarray:
    """Index of the running maximum (the latest index holding it)."""
    idx = np.arange(len(values))
    running = np.maximum.accumulate(values)
    holder = np.where(values == running, idx, 0)
    return np.maximum.accumulate(holder)


def checks_table(diag: Diagnosis) -> pd.DataFrame:
    """The checks of the report, evidence as JSON text."""
    import orjson

    rows = [{"id": c.id, "status": c.status, "summary": c.summary,
             "evidence": orjson.dumps(c.evidence, option=orjson.OPT_SORT_KEYS,
                                      default=str).decode()}
            for c in diag.checks]
    return _frame("checks", pd.DataFrame(rows, columns=list(TABLES["checks"])))


def write_tables(tables: dict[str, pd.DataFrame], out_dir: str | Path,
                 table_format: str = "csv") -> list[Path]:
    """Write each table as ``<out_dir>/<name>.<csv|parquet>`` (atomically); return the paths."""
    from .errors import MissingDependencyError, UsageError
    from .io import write_atomic

    if table_format not in TABLE_FORMATS:
        raise UsageError(f"unknown table format {table_format!r}; choose csv or parquet")
    if table_format == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise MissingDependencyError(
                "Parquet output needs pyarrow: pip install 'profdiag[parquet]'") from None
    out = Path(out_dir)
    paths = []
    for name, df in tables.items():
        path = out / f"{name}.{table_format}"
        if table_format == "csv":
            write_atomic(path, df.to_csv(index=False, lineterminator="\n"))
        else:
            write_atomic(path, _parquet_bytes(df))
        paths.append(path)
    return paths


def _parquet_bytes(df: pd.DataFrame) -> bytes:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    clean = df.copy()
    for c in clean.columns:  # object columns of mixed or all-missing values -> text
        if clean[c].dtype == object:
            clean[c] = clean[c].astype("string")
    table = pa.Table.from_pandas(clean, preserve_index=False)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()
