"""The bottleneck curves of a sweep: fits, speed-of-light ratios, regime map and crossovers.

``analyse(results, meta)`` turns the per-point results (see local.point_result and
server.point_result) into the JSON-ready sweep report that the HTML/CSV renderers draw.
Plain functions over dicts; nothing here prints.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

SWEEP_REPORT_VERSION = 1


def fit_prefill(tokens: Sequence[float], times_ns: Sequence[float]) -> dict[str, Any]:
    """Least-squares t(T) = a + b·T + c·T² (ns): ``b·T`` the projections (linear in the prompt),
    ``c·T²`` attention. Two distinct lengths fit a line only (c = 0). ``crossover_tokens`` is
    b/c, where c·T² = b·T (attention overtakes), or None when c <= 0 or b <= 0 (no T² growth
    measured). ``r2`` is the fit's coefficient of determination."""
    t = np.asarray(tokens, dtype=float)
    y = np.asarray(times_ns, dtype=float)
    distinct = len(set(t.tolist()))
    if distinct < 2:
        return {"a_ns": None, "b_ns_per_token": None, "c_ns_per_token2": None,
                "crossover_tokens": None, "r2": None, "degree": 0}
    deg = 2 if distinct >= 3 else 1
    cols = [np.ones_like(t), t] + ([t * t] if deg == 2 else [])
    coef, *_ = np.linalg.lstsq(np.stack(cols, axis=1), y, rcond=None)
    a, b = float(coef[0]), float(coef[1])
    c = float(coef[2]) if deg == 2 else 0.0
    pred = np.stack(cols, axis=1) @ coef
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float(((y - pred) ** 2).sum()) / ss_tot if ss_tot > 0 else None
    cross = b / c if (c > 0 and b > 0) else None
    return {"a_ns": a, "b_ns_per_token": b, "c_ns_per_token2": c, "crossover_tokens": cross,
            "r2": r2, "degree": deg}


def fit_line(x: Sequence[float], y: Sequence[float]) -> dict[str, Any]:
    """Least-squares y = intercept + slope·x; slope None with fewer than two distinct x."""
    xs = np.asarray(x, dtype=float)
    ys = np.asarray(y, dtype=float)
    if len(set(xs.tolist())) < 2:
        return {"intercept": float(ys.mean()) if len(ys) else None, "slope": None}
    slope, intercept = np.polyfit(xs, ys, 1)
    return {"intercept": float(intercept), "slope": float(slope)}


def _known(vals: Iterable[float | None]) -> list[float]:
    """The values that are numbers: None (no roofline, or NaN once through JSON) and NaN out."""
    return [v for v in vals if v is not None and v == v]


def _median(vals: Iterable[float | None]) -> float | None:
    """Median of the known values; None when there is none."""
    known = _known(vals)
    return float(np.median(known)) if known else None


def _median_ns(vals: Sequence[float]) -> float:
    """Median of measured times (never empty, always integers: local/server point_result)."""
    return float(np.median(vals))


def _round(x: Any, nd: int = 4) -> Any:
    if isinstance(x, float):
        if not math.isfinite(x):
            return None
        return float(f"{x:.{nd}g}") if x else 0.0
    return x


def flat_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per point for the CSV/JSON tables (measured, ideal, ratio, regime per phase)."""
    rows = []
    for r in results:
        row: dict[str, Any] = {k: r.get(k) for k in ("id", "kind", "tokens", "new_tokens",
                                                    "batch", "context", "status")}
        for ph in ("prefill", "decode"):
            d = r.get(ph) or {}
            row[f"{ph}_ns"] = d.get("median_step_ns")
            row[f"{ph}_ideal_ns"] = d.get("ideal_ns")
            row[f"{ph}_ratio"] = d.get("ratio")
            row[f"{ph}_limit"] = d.get("limit")
            row[f"{ph}_regime"] = d.get("regime")
            row[f"{ph}_tokens_per_s"] = d.get("tokens_per_s")
        row["error"] = r.get("error")
        rows.append(row)
    return rows


def analyse(results: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    """Return the sweep report: points, prefill curves with fits, decode curves vs context
    and vs batch, the regime map and one sentence per crossover.

    ``meta``: target, settings, model (shape dict, may be None), spec (name, ridge,
    critical_batch, bandwidth, peak, dtype_bytes; None without a roofline),
    model_crossover_tokens (FLOP model, optional), critical_batch_with_kv (optional).
    """
    ok = [r for r in results if r.get("status") == "ok"]
    failed = [r for r in results if r.get("status") != "ok"]
    spec = meta.get("spec")

    # Prefill vs prompt length, one curve per batch (median over the output lengths).
    by_bt: dict[int, dict[int, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in ok:
        if r.get("prefill"):
            by_bt[r["batch"]][r["tokens"]].append(r["prefill"])
    prefill_curves = []
    for b in sorted(by_bt):
        pts: list[dict[str, Any]] = []
        meas: list[float] = []
        for tok in sorted(by_bt[b]):
            ph = by_bt[b][tok]
            measured = _median_ns([p["median_step_ns"] for p in ph])
            ideal_ns = _median([p.get("ideal_ns") for p in ph])
            meas.append(measured)
            pts.append({"tokens": tok, "measured_ns": measured, "ideal_ns": ideal_ns,
                        "regime": ph[0].get("regime"), "limit": ph[0].get("limit"),
                        "ratio": measured / ideal_ns if ideal_ns else None})
        fit = fit_prefill(sorted(by_bt[b]), meas)
        prefill_curves.append({
            "batch": b, "points": pts, "fit": fit,
            "monotone": all(x < y for x, y in zip(meas, meas[1:])),
        })

    # Decode per-token (per-step) time vs context: every step of every point, per batch.
    ctx_rows: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in ok:
        for s in (r.get("decode") or {}).get("per_step", []):
            ctx_rows[r["batch"]].append({"point": r["id"], **s})
    decode_vs_context = []
    for b in sorted(ctx_rows):
        rows = sorted(ctx_rows[b], key=lambda s: s["context"])
        fit_m = fit_line([s["context"] for s in rows], [s["measured_ns"] for s in rows])
        ideal = [s for s in rows if s.get("ideal_ns") is not None]
        fit_i = (fit_line([s["context"] for s in ideal], [s["ideal_ns"] for s in ideal])
                 if ideal else {"intercept": None, "slope": None})
        # One plotted point per distinct context (median of the steps there).
        grouped: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for s in rows:
            grouped[s["context"]].append(s)
        ctx_pts = [{"context": c, "measured_ns": _median_ns([s["measured_ns"] for s in g]),
                    "ideal_ns": _median([s.get("ideal_ns") for s in g])}
                   for c, g in sorted(grouped.items())]
        decode_vs_context.append({"batch": b, "points": ctx_pts, "fit_measured": fit_m,
                                  "fit_ideal": fit_i})

    # Decode step time vs batch at each length (prompt tokens, or context for decode points).
    by_len: dict[tuple[str, int], dict[int, list[dict[str, Any]]]] = defaultdict(
        lambda: defaultdict(list))
    for r in ok:
        if r.get("decode"):
            key = ("context", r["context"]) if r["kind"] == "decode" else ("tokens", r["tokens"])
            by_len[key][r["batch"]].append(r["decode"])
    decode_vs_batch = []
    for (axis, length) in sorted(by_len):
        batch_pts: list[dict[str, Any]] = []
        for b in sorted(by_len[(axis, length)]):
            ds = by_len[(axis, length)][b]
            m = _median_ns([d["median_step_ns"] for d in ds])
            i = _median([d.get("ideal_ns") for d in ds])
            batch_pts.append({"batch": b, "measured_ns": m, "ideal_ns": i,
                              "measured_ns_per_token": m / b if m else None,
                              "ratio": m / i if (m and i) else None,
                              "regime": ds[0].get("regime"), "limit": ds[0].get("limit")})
        decode_vs_batch.append({"axis": axis, "length": length, "points": batch_pts})

    regime_map = _regime_map(ok)
    sentences = _sentences(prefill_curves, decode_vs_context, decode_vs_batch, ok, failed, meta)
    ratios = {ph: _median([(r.get(ph) or {}).get("ratio") for r in ok])
              for ph in ("prefill", "decode")}
    return {
        "sweep_report_version": SWEEP_REPORT_VERSION,
        "target": meta.get("target"),
        "settings": meta.get("settings"),
        "model": meta.get("model"),
        "spec": spec,
        "points": flat_rows(results),
        "counts": {"points": len(results), "ok": len(ok), "failed": len(failed)},
        "median_ratio": ratios,
        "prefill_curves": prefill_curves,
        "decode_vs_context": decode_vs_context,
        "decode_vs_batch": decode_vs_batch,
        "regime_map": regime_map,
        "model_crossover_tokens": meta.get("model_crossover_tokens"),
        "sentences": sentences,
        "failures": [{"id": r["id"], "error": r.get("error")} for r in failed],
    }


def _regime_map(ok: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch x length grid per phase: the diagnosis regime, the roofline limit and the ratio
    (median over the output lengths at that cell)."""
    out: dict[str, Any] = {}
    for ph in ("prefill", "decode"):
        cells: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
        for r in ok:
            d = r.get(ph)
            if not d:
                continue
            length = f"ctx {r['context']}" if r["kind"] == "decode" else f"T {r['tokens']}"
            cells[(r["batch"], length)].append(d)
        if not cells:
            continue
        batches = sorted({b for b, _ in cells})
        lengths = sorted({ln for _, ln in cells},
                         key=lambda s: (s.startswith("ctx"), int(s.split()[1])))
        grid: list[list[dict[str, Any] | None]] = []
        for b in batches:
            row: list[dict[str, Any] | None] = []
            for ln in lengths:
                ds = cells.get((b, ln))
                if not ds:
                    row.append(None)
                    continue
                regimes = [d.get("regime") for d in ds if d.get("regime")]
                row.append({"regime": max(set(regimes), key=regimes.count) if regimes else None,
                            "limit": ds[0].get("limit"),
                            "ratio": _median([d.get("ratio") for d in ds]),
                            "measured_ns": _median_ns([d["median_step_ns"] for d in ds])})
            grid.append(row)
        out[ph] = {"batches": batches, "lengths": lengths, "cells": grid}
    return out


def _fmt_ms(ns: float | None) -> str:
    return "-" if ns is None else f"{ns / 1e6:.3g} ms"


def _sentences(prefill_curves: list[dict[str, Any]], vs_ctx: list[dict[str, Any]],
               vs_batch: list[dict[str, Any]], ok: list[dict[str, Any]],
               failed: list[dict[str, Any]], meta: dict[str, Any]) -> list[str]:
    spec = meta.get("spec")
    out: list[str] = []
    model_cross = meta.get("model_crossover_tokens")
    for c in prefill_curves:
        pts = c["points"]
        if len(pts) < 2:
            continue
        first, last = pts[0], pts[-1]
        grow = last["measured_ns"] / first["measured_ns"] if first["measured_ns"] else math.nan
        s = (f"Prefill at batch {c['batch']}: {_fmt_ms(first['measured_ns'])} at "
             f"{first['tokens']} tokens to {_fmt_ms(last['measured_ns'])} at {last['tokens']} "
             f"({grow:.3g}x for {last['tokens'] / first['tokens']:.3g}x the tokens)")
        cross = c["fit"].get("crossover_tokens")
        if cross is not None:
            s += f"; the fitted T² (attention) part overtakes the linear part at ~{cross:.0f} tokens"
        elif c["fit"]["degree"] == 2:
            s += "; no T² growth measured: the projections dominate at these lengths"
        if model_cross:
            s += f" (FLOP model: attention FLOPs overtake the projections' at ~{model_cross:.0f})"
        out.append(s + ".")
    if spec and spec.get("critical_batch"):
        crit = spec["critical_batch"]
        for row in vs_batch:
            pts = [p for p in row["points"] if p.get("ideal_ns")]
            if len(pts) < 2:
                continue
            b0, b1 = pts[0], pts[-1]
            ideal_g = b1["ideal_ns"] / b0["ideal_ns"]
            meas_g = b1["measured_ns"] / b0["measured_ns"]
            where = f"{'context' if row['axis'] == 'context' else 'prompt'} {row['length']}"
            s = (f"Decode ({where}) stays memory-bound up to batch ~{crit:.0f} on "
                 f"{spec['name']}: from batch {b0['batch']} to {b1['batch']} the ideal step "
                 f"time grows {ideal_g:.3g}x, the measured {meas_g:.3g}x")
            leave = next((p for p in pts[1:]
                          if p["measured_ns"] / b0["measured_ns"]
                          > 1.25 * p["ideal_ns"] / b0["ideal_ns"]), None)
            if leave is not None:
                why = leave.get("regime") or "unknown"
                s += (f"; your measured curve leaves the roof at batch {leave['batch']}: "
                      f"{why}, not bandwidth" if why != "memory" else
                      f"; your measured curve leaves the roof at batch {leave['batch']} "
                      "(still memory-bound by the diagnosis: more bytes than the model's)")
            else:
                s += ": flat like the roof"
            out.append(s + ".")
    for row in vs_ctx:
        m, i = row["fit_measured"].get("slope"), row["fit_ideal"].get("slope")
        if m is None:
            continue
        s = f"Decode at batch {row['batch']}: each cached position adds {m:.3g} ns per step"
        if i is not None:
            s += f" measured, {i:.3g} ns ideal (its KV bytes over the bandwidth)"
        out.append(s + ".")
    for ph, word in (("prefill", "Prefill"), ("decode", "Decode")):
        rs = _known((r.get(ph) or {}).get("ratio") for r in ok)
        if rs:
            out.append(f"{word} runs at {min(rs):.3g}x to {max(rs):.3g}x the speed-of-light "
                       f"time (median {float(np.median(rs)):.3g}x).")
    if failed:
        out.append(f"{len(failed)} point(s) failed: " + ", ".join(r["id"] for r in failed) + ".")
    return out
