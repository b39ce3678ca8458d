"""The sweep report as one self-contained HTML file: curves as inline SVG, the regime map as a
coloured table, the sentences, and the point table. Same jinja environment as the report."""

from __future__ import annotations

import math
from typing import Any

from . import templating
from .templating import script_json

REGIME_COLORS = {"compute": "#4e79a7", "memory": "#f28e2b", "overhead": "#e15759",
                 "unknown": "#bab0ac", None: "#eceff3"}
SERIES_COLORS = ["#4e79a7", "#e15759", "#59a14f", "#b07aa1", "#f28e2b", "#76b7b2", "#9c755f"]
W, H, PAD_L, PAD_R, PAD_T, PAD_B = 560, 300, 64, 16, 14, 40


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    v = start
    while True:  # up to the first tick at or above hi, so the axis top is a tick
        if v >= lo - 1e-9 * step:
            ticks.append(round(v, 10))
        if v >= hi - 1e-9 * step:
            return ticks
        v += step


def _fmt_tick(v: float) -> str:
    return f"{v:g}" if abs(v) < 1e5 else f"{v:.0e}"


def chart(series: list[dict[str, Any]], x_label: str, y_label: str) -> dict[str, Any]:
    """Return an SVG view: axes, ticks and one polyline (and dots) per series.

    Each series: name, color, dash (bool), points [(x, y)] with y in ms; None ys are skipped.
    """
    pts = [(x, y) for s in series for x, y in s["points"] if y is not None]
    if not pts:
        return {"empty": True}
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1 = min(xs), max(xs)
    if x0 == x1:
        x0, x1 = x0 - 1, x1 + 1
    y1 = max(ys) * 1.08
    xt, yt = _nice_ticks(x0, x1), _nice_ticks(0.0, y1)
    y1 = max(y1, yt[-1]) if yt else y1

    def sx(x: float) -> float:
        return PAD_L + (x - x0) / (x1 - x0) * (W - PAD_L - PAD_R)

    def sy(y: float) -> float:
        return H - PAD_B - (y / y1 if y1 else 0) * (H - PAD_T - PAD_B)

    out_series = []
    for s in series:
        p = [(sx(x), sy(y)) for x, y in s["points"] if y is not None]
        dash = s.get("dash", False)
        out_series.append({"name": s["name"], "color": s["color"],
                           "dash": ("5,4" if dash is True else dash) or "",
                           "dots": not s.get("line_only", False),
                           "line": not s.get("scatter", False),
                           "path": " ".join(f"{a:.1f},{b:.1f}" for a, b in p), "points": p})
    return {"empty": False, "w": W, "h": H, "x_label": x_label, "y_label": y_label,
            "x_ticks": [(sx(v), _fmt_tick(v)) for v in xt if x0 <= v <= x1],
            "y_ticks": [(sy(v), _fmt_tick(v)) for v in yt if v <= y1],
            "left": PAD_L, "right": W - PAD_R, "top": PAD_T, "bottom": H - PAD_B,
            "series": out_series}


def _ms(ns: Any) -> float | None:
    return None if ns is None else float(ns) / 1e6


def view(rep: dict[str, Any]) -> dict[str, Any]:
    """Return the template's view of a sweep report (charts computed here, tested directly)."""
    charts: dict[str, Any] = {}
    series: list[dict[str, Any]] = []
    for i, c in enumerate(rep["prefill_curves"]):
        col = SERIES_COLORS[i % len(SERIES_COLORS)]
        pts = c["points"]
        series.append({"name": f"batch {c['batch']} measured", "color": col,
                       "points": [(p["tokens"], _ms(p["measured_ns"])) for p in pts]})
        if any(p.get("ideal_ns") for p in pts):
            series.append({"name": f"batch {c['batch']} speed of light", "color": col,
                           "dash": True,
                           "points": [(p["tokens"], _ms(p.get("ideal_ns"))) for p in pts]})
        f = c["fit"]
        if f.get("degree") and len(pts) >= 2:
            lo, hi = pts[0]["tokens"], pts[-1]["tokens"]
            grid = [lo + (hi - lo) * k / 40 for k in range(41)]
            a, b, cc = f["a_ns"], f["b_ns_per_token"], f["c_ns_per_token2"] or 0.0
            series.append({"name": f"batch {c['batch']} fit a + bT + cT²", "color": col,
                           "line_only": True, "dash": "2,3",
                           "points": [(t, _ms(a + b * t + cc * t * t)) for t in grid]})
    charts["prefill"] = chart(series, "prompt tokens per sequence", "prefill time (ms)")

    series = []
    for i, c in enumerate(rep["decode_vs_context"]):
        col = SERIES_COLORS[i % len(SERIES_COLORS)]
        # Steps of different points at nearby contexts: dots, not a line through them.
        series.append({"name": f"batch {c['batch']} measured", "color": col, "scatter": True,
                       "points": [(p["context"], _ms(p["measured_ns"])) for p in c["points"]]})
        if any(p.get("ideal_ns") for p in c["points"]):
            series.append({"name": f"batch {c['batch']} speed of light", "color": col,
                           "dash": True, "line_only": True,
                           "points": [(p["context"], _ms(p.get("ideal_ns")))
                                      for p in c["points"]]})
    charts["decode_context"] = chart(series, "context (cached positions)",
                                     "decode step = per-token latency (ms)")

    series = []
    for i, row in enumerate(rep["decode_vs_batch"]):
        col = SERIES_COLORS[i % len(SERIES_COLORS)]
        label = f"{'ctx' if row['axis'] == 'context' else 'T'} {row['length']}"
        series.append({"name": f"{label} measured", "color": col,
                       "points": [(p["batch"], _ms(p["measured_ns"])) for p in row["points"]]})
        if any(p.get("ideal_ns") for p in row["points"]):
            series.append({"name": f"{label} speed of light", "color": col, "dash": True,
                           "points": [(p["batch"], _ms(p.get("ideal_ns")))
                                      for p in row["points"]]})
    charts["decode_batch"] = chart(series, "batch (sequences per step)",
                                   "decode step = per-token latency (ms)")

    heat = {}
    for ph, m in rep["regime_map"].items():
        rows = []
        for b, cells in zip(m["batches"], m["cells"]):
            rows.append({"batch": b, "cells": [
                None if c is None else {**c, "color": REGIME_COLORS.get(c.get("regime"),
                                                                         "#bab0ac")}
                for c in cells]})
        heat[ph] = {"lengths": m["lengths"], "rows": rows}
    return {"rep": rep, "charts": charts, "heat": heat, "regime_colors": {
        k: v for k, v in REGIME_COLORS.items() if k}, "data_json": script_json(rep)}


def render(rep: dict[str, Any]) -> str:
    """Return the sweep report as HTML."""
    return templating.render("sweep.html.j2", **view(rep))
