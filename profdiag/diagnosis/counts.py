"""Step 4: observed GEMM calls against layers x GEMMs per layer (+ lm_head) x forwards."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..classify import GEMM_CLASSES
from ..modelspec import ModelSpec
from .context import LAYER_RE, assign
from .model import FAIL, PASS, SKIP, WARN, Check


def gemm_calls(work: pd.DataFrame) -> pd.DataFrame:
    """One row per GEMM call: kernels of one op call (External id) merged; split-K reduce excluded."""
    g = work[work["class"].astype(str).isin(GEMM_CLASSES)]
    with_ext = g[g["external_id"].notna()]
    # Several GEMM kernels under one op call (rare: cuBLAS multi-kernel algos) are one call.
    merged = with_ext.groupby("external_id", sort=False).agg(
        name=("name", "first"), op_name=("op_name", "first"), input_dims=("input_dims", "first"),
        start_ns=("start_ns", "min"), launch_ns=("launch_ns", "min"), dur_ns=("dur_ns", "sum"))
    no_ext = g[g["external_id"].isna()][["name", "op_name", "input_dims", "start_ns",
                                          "launch_ns", "dur_ns"]]
    calls = pd.concat([merged.reset_index(drop=True), no_ext.reset_index(drop=True)],
                      ignore_index=True)
    return calls.sort_values("start_ns", ignore_index=True)


def layer_ranges(annotations: pd.DataFrame) -> pd.DataFrame:
    """Host ranges named layer_N: layer, start_ns, end_ns (sorted)."""
    if annotations.empty:
        return pd.DataFrame(columns=["layer", "start_ns", "end_ns"])
    names = annotations["name"].astype(str)
    m = names.str.extract(LAYER_RE)[0]
    lay = annotations[m.notna()].assign(layer=m[m.notna()].astype(int))
    lay = lay.assign(end_ns=lay["start_ns"] + lay["dur_ns"]).sort_values("start_ns")
    return lay[["layer", "start_ns", "end_ns"]].reset_index(drop=True)


def infer_layers(work: pd.DataFrame, layers_df: pd.DataFrame, forwards: int) -> tuple[int | None, str]:
    """Layer count from layer_N annotations, else from attention calls per forward."""
    if len(layers_df):
        return int(layers_df["layer"].max()) + 1, "layer_N annotations"
    att = work[work["class"].astype(str) == "attention"]
    if att.empty or forwards <= 0:
        return None, ""
    if att["external_id"].notna().any():
        n = att["external_id"].nunique()
        how = "attention op calls per forward"
    else:
        # Graph replays: count the main attention kernels (not their reduction/combine passes).
        main = att[~att["name"].astype(str).str.contains("reduc|combine|lean_", case=False)]
        n = len(main)
        how = "attention kernels per forward"
    if n % forwards:
        return None, ""
    return n // forwards, how


def count(work: pd.DataFrame, annotations: pd.DataFrame, spec: ModelSpec, steps: pd.DataFrame,
          tolerance: int, slow_factor: float) -> tuple[dict[str, Any], list[Check]]:
    """The kernel_counts section of the JSON contract, and its checks."""
    calls = gemm_calls(work)
    observed = len(calls)
    forwards = spec.forwards or (len(steps) if len(steps) else None)
    forwards_source = ("manifest" if spec.forwards else "steps" if len(steps) else "none")
    layers_df = layer_ranges(annotations)
    layers, layers_source, inferred_how = spec.layers, spec.source, ""
    if layers is None:
        layers, inferred_how = infer_layers(work, layers_df, forwards or 1)
        layers_source = "inferred" if layers is not None else "none"
    elif spec.source in ("config", "manifest", "cli"):
        layers_source = spec.source  # the file (or flag) that gave the layers, as the model line says
    gpl = spec.gemms_per_layer or (7 if layers is not None else None)
    expected = None
    if layers is not None and gpl is not None and forwards:
        expected = (layers * gpl + spec.lm_head) * forwards

    by_shape = _by_shape(calls, forwards or 1)
    extra: list[dict[str, Any]] = []
    checks: list[Check] = []
    result: dict[str, Any] = {
        "observed_gemm_calls": observed,
        "expected_gemm_calls": expected,
        "layers": layers,
        "layers_source": layers_source,
        "layers_inferred_from": inferred_how or None,
        "gemms_per_layer": gpl,
        "lm_head_per_forward": spec.lm_head,
        "forwards": forwards,
        "forwards_source": forwards_source,
        "gemm_calls_per_forward": round(observed / forwards, 3) if forwards else None,
        "by_shape": by_shape,
        "extra": extra,
        "missing": 0,
    }
    if expected is None:
        why = ("no model config (use --model-config or --layers)" if layers is None
               else "number of forwards unknown")
        checks.append(Check("kernel_count", SKIP, f"expected GEMM calls unknown: {why}; "
                            f"observed {observed} GEMM calls", {"observed": observed}))
    else:
        diff = observed - expected
        if diff > 0:
            extra.extend(_suspects(by_shape, layers or 0, forwards or 1, spec.lm_head))
        result["missing"] = max(0, -diff)
        status = PASS if abs(diff) <= tolerance else FAIL
        what = ("= the" if diff == 0 else f"is {abs(diff)} {'more' if diff > 0 else 'fewer'} than the")
        src = (f"layers inferred from {inferred_how}" if layers_source == "inferred" and inferred_how
               else "layers inferred" if layers_source == "inferred"
               else f"layers from {layers_source}")
        checks.append(Check(
            "kernel_count", status,
            f"{observed} GEMM calls {what} {expected} expected: "
            f"({layers} layers x {gpl} + {spec.lm_head} lm_head) x {forwards} "
            f"forward{'s' if forwards != 1 else ''}; {src}",
            {"observed": observed, "expected": expected, "difference": diff,
             "suspects": [e["signature"] for e in extra]}))
    per_layer = _per_layer(work, calls, layers_df, slow_factor)
    result["per_layer"] = per_layer["layers"]
    result["slow_layers"] = per_layer["slow"]
    if per_layer["layers"]:
        slow = per_layer["slow"]
        counts_per_layer = {r["gemm_calls"] for r in per_layer["layers"]}
        status = WARN if slow or len(counts_per_layer) > 1 else PASS
        msg = (f"{len(slow)} of {len(per_layer['layers'])} layers slower than "
               f"{slow_factor}x the median layer time" if slow else
               f"{len(per_layer['layers'])} layers within {slow_factor}x of the median layer time")
        if len(counts_per_layer) > 1:
            msg += f"; GEMM calls per layer differ ({sorted(counts_per_layer)})"
        checks.append(Check("layer_balance", status, msg,
                            {"slow_layers": slow, "median_layer_ns": per_layer["median_ns"]}))
    return result, checks


def _signature(row: pd.Series) -> str:
    if isinstance(row["op_name"], str) and isinstance(row["input_dims"], str):
        return f"{row['op_name']} {row['input_dims']}"
    return str(row["name"])


def _by_shape(calls: pd.DataFrame, forwards: int) -> list[dict[str, Any]]:
    """GEMM calls grouped by op + shape (or kernel name), with calls per forward."""
    if calls.empty:
        return []
    sig = calls.apply(_signature, axis=1)
    g = calls.assign(signature=sig).groupby("signature", sort=False).agg(
        calls=("dur_ns", "size"), total_ns=("dur_ns", "sum"), kernel=("name", "first"))
    g = g.sort_values("calls", ascending=False)
    return [{"signature": s, "kernel": r["kernel"], "calls": int(r["calls"]),
             "calls_per_forward": round(r["calls"] / forwards, 3),
             "total_ns": int(r["total_ns"])} for s, r in g.iterrows()]


def _suspects(by_shape: list[dict[str, Any]], layers: int, forwards: int,
              lm_head: int) -> list[dict[str, Any]]:
    """Shape groups whose per-forward count is not a whole multiple of the layer count."""
    out = []
    for row in by_shape:
        per_fwd = row["calls"] / forwards
        if layers and per_fwd % layers and per_fwd != lm_head:
            out.append({**row, "reason": f"{per_fwd:g} calls per forward is not a multiple "
                        f"of {layers} layers"})
    if not out and by_shape:
        # Every group is per-layer: the extra calls are a whole extra projection per layer.
        out = [{**r, "reason": "per-layer GEMM group; compare with the architecture"}
               for r in by_shape if layers and (r["calls"] / forwards) % layers == 0][:3]
    return out


def _per_layer(work: pd.DataFrame, calls: pd.DataFrame, layers_df: pd.DataFrame,
               slow_factor: float) -> dict[str, Any]:
    """GPU time and GEMM calls per layer index (summed over forwards), with slow layers."""
    if layers_df.empty:
        return {"layers": [], "slow": [], "median_ns": None}
    starts = layers_df["start_ns"].to_numpy()
    ends = layers_df["end_ns"].to_numpy()
    idx = assign(work["launch_ns"].to_numpy(), starts, ends)
    lay_of = np.where(idx >= 0, layers_df["layer"].to_numpy()[np.clip(idx, 0, None)], -1)
    t = pd.Series(work["dur_ns"].to_numpy()).groupby(lay_of).sum()
    cidx = assign(calls["launch_ns"].to_numpy(), starts, ends)
    clay = np.where(cidx >= 0, layers_df["layer"].to_numpy()[np.clip(cidx, 0, None)], -1)
    c = pd.Series(clay).value_counts()
    rows = [{"layer": int(k), "gpu_ns": int(v), "gemm_calls": int(c.get(k, 0))}
            for k, v in t.items() if k >= 0]
    rows.sort(key=lambda r: r["layer"])
    if not rows:
        return {"layers": [], "slow": [], "median_ns": None}
    median = float(np.median([r["gpu_ns"] for r in rows]))
    slow = [r["layer"] for r in rows if median and r["gpu_ns"] > slow_factor * median]
    return {"layers": rows, "slow": slow, "median_ns": int(median)}
