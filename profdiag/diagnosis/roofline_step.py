"""Roofline section of a Diagnosis: per-GEMM placement, per-class aggregates, speed of light."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import hardware, roofline
from ..errors import RulesError
from ..trace import device_label
from .context import Context

MAX_POINTS = 300


def roofline_section(ctx: Context, work: pd.DataFrame, steps: pd.DataFrame,
                     step_of_row: np.ndarray, mode: str, gpu: str | None,
                     gpu_spec: str | Path | None) -> dict[str, Any]:
    """JSON-ready roofline figures; {'available': False, 'reason': ...} when it cannot apply.

    ``work``: the analysed device work; ``step_of_row``: its rows' step indices (-1 outside
    every step); ``steps``: the steps table (step, phase, ...); ``mode``: the trace's mode,
    the phase of work outside every step."""
    if ctx.cpu_only:
        return {"available": False, "reason": "CPU trace: no GPU roofline"}
    dev = ctx.trace.meta.device_info(ctx.device)[0]  # the GPU the kernels ran on
    try:
        spec = hardware.resolve(gpu, gpu_spec, dev.name if dev else None,
                                sm_count=dev.sm_count if dev else None,
                                memory_bytes=dev.memory_bytes if dev else None)
    except RulesError:
        raise
    if spec is None:
        return {"available": False,
                "reason": f"GPU {device_label(dev) or '(unnamed)'!r} is not in the hardware "
                          "table; pass --gpu NAME or --gpu-spec FILE"}
    phase_of_step = dict(zip(steps["step"], steps["phase"])) if len(steps) else {}
    # Attention FLOPs causal where Tq == Tk (a prompt attending to itself, which a decoder
    # masks; flash kernels skip the masked half): the efficiency is then the real one.
    table = roofline.gemm_table(work, spec, causal_attention=True)
    if len(table):
        table["phase"] = _call_phases(table, work, step_of_row, phase_of_step, mode)
    out: dict[str, Any] = {
        "available": True,
        "gpu": {"key": spec.key, "name": spec.name, "bandwidth_bytes_s": spec.bandwidth,
                "peak_bf16_flops_s": spec.peak("bf16") if spec.has_peak("bf16") else None,
                "ridge_bf16": round(roofline.ridge_point(spec, "bf16"), 1)
                if spec.has_peak("bf16") else None, "source": spec.source,
                # Dense peak per dtype (a GEMM is rated against its own dtype's peak).
                "peak_flops_s": dict(spec.peak_flops)},
        "calls_with_shapes": int(len(table)),
        "attention_flops": "causal where Tq == Tk (half of 4·B·H·Tq·Tk·d), dense otherwise",
    }
    if table.empty:
        out["reason"] = ("no GEMM/attention call carries shapes (capture with record_shapes=True; "
                         "CUDA-graph replays and nsys/rocprof traces have none: --shapes-from an "
                         "eager or capture trace of the same model recovers a replay's)")
    out["summary"] = roofline.summarise(table)
    out["by_phase"] = {p: roofline.summarise(g) for p, g in
                       table[[*roofline.SUMMARY_COLUMNS, "phase"]].groupby("phase")
                       } if len(table) else {}
    out["suspect_calls"] = int(table["suspect"].sum()) if len(table) else 0
    out["points"] = _points(table)
    out["speed_of_light"] = _speed_of_light(steps, work, step_of_row, ctx, spec)
    return out


def _call_phases(table: pd.DataFrame, work: pd.DataFrame, step_of_row: np.ndarray,
                 phase_of_step: dict[Any, Any], mode: str) -> list[Any]:
    """Each op call's phase: that of its first kernel's step (``mode`` outside every step).

    The first kernel of each external id by a sorted search over the linked rows (the same
    pick as a drop_duplicates of (external_id, step) and a map of the calls' ids through it,
    which is what a table holding an unlinked call still takes)."""
    ext = table["external_id"]
    if ext.isna().any():
        calls = pd.DataFrame({"external_id": work["external_id"], "step": step_of_row})
        step_of = calls.drop_duplicates("external_id").set_index("external_id")["step"]
        return [phase_of_step.get(s, mode) if s == s else mode
                for s in ext.map(step_of)]
    wext = pd.array(work["external_id"].array, dtype="Int64")
    linked = np.flatnonzero(~np.asarray(wext.isna(), dtype=bool))
    ids, first = np.unique(np.asarray(wext[linked], dtype=np.int64), return_index=True)
    step_first = np.asarray(step_of_row)[linked[first]]
    cext = np.asarray(ext, dtype=np.int64)
    at = np.minimum(np.searchsorted(ids, cext), max(len(ids) - 1, 0))
    found = ids[at] == cext if len(ids) else np.zeros(len(cext), dtype=bool)
    # one phase per distinct step (the steps' dict read as the Series.map's values were)
    steps = np.where(found, step_first[at] if len(ids) else 0, 0)
    uniq, inv = np.unique(steps, return_inverse=True)
    phase_of = [phase_of_step.get(int(s), mode) for s in uniq.tolist()]
    return [phase_of[i] if f else mode for i, f in zip(inv.tolist(), found.tolist())]


def _points(table: pd.DataFrame) -> list[dict[str, Any]]:
    """One chart point per (phase, class, shape): intensity and achieved FLOP/s, medians."""
    if table.empty:
        return []
    ok = table[~table["suspect"] & table["intensity"].notna() & (table["dur_ns"] > 0)]
    g = ok.groupby(["phase", "op_class", "op_name", "m", "k", "n"], dropna=False).agg(
        calls=("dur_ns", "size"), intensity=("intensity", "median"),
        achieved_flops_s=("achieved_flops_s", "median"),
        achieved_bytes_s=("achieved_bytes_s", "median"), efficiency=("efficiency", "median"),
        bound=("bound", "first"), time_ns=("dur_ns", "sum"), kernel=("kernel", "first"))
    g = g.sort_values("time_ns", ascending=False).head(MAX_POINTS).reset_index()
    return [{k: (None if isinstance(v, float) and v != v else
                 (int(v) if isinstance(v, (np.integer,)) else
                  float(v) if isinstance(v, (np.floating,)) else v))
             for k, v in r.items()} for r in g.to_dict("records")]


def _speed_of_light(steps: pd.DataFrame, work: pd.DataFrame, step_of_row: np.ndarray,
                    ctx: Context, spec: hardware.GpuSpec) -> dict[str, Any]:
    from .sol import speed_of_light

    return speed_of_light(steps, work, ctx.spec, spec, step_of_row)
