"""What changed between two profiles: build a plain comparison dict, then render it.

``compare(base, new)`` takes Profiles (profdiag.gate.load_profile), Diagnoses or diagnosis
dicts and returns a dict (the JSON form); ``render(cmp, fmt)`` turns it into text, Markdown,
HTML or JSON. Times are per forward (per prefill token when both profiles are prefills of
known length) so that profiles with different step counts compare; step times are medians
over the steps of each phase.

Per-kernel rows come from the classified events when both inputs are traces (every kernel);
when one is a JSON report they come from the reports' hotspots (the top N kernels only), and
the comparison says so.
"""

from __future__ import annotations

from typing import Any

from .gate import (
    Profile,
    as_profile,
    forwards_of,
    kernel_table,
    kernel_unit,
    mode_of,
    overhead_share,
    pct_change,
    phase_unit,
    step_stats,
)
from .report_model import Report

SCHEMA_VERSION = 1
DEFAULT_THRESHOLD_PCT = 5.0  # a kernel or class within +-5% is "same"


def _r(x: float | None, nd: int = 6) -> float | None:
    return None if x is None else round(float(x), nd)


def _status(base: float, new: float, change: float | None, threshold: float) -> str:
    if base <= 0 and new > 0:
        return "added"
    if new <= 0 and base > 0:
        return "removed"
    if change is None:
        return "same"
    return "slower" if change > threshold else "faster" if change < -threshold else "same"


def compare(base: Any, new: Any, threshold_pct: float = DEFAULT_THRESHOLD_PCT) -> dict[str, Any]:
    """The comparison of ``base`` and ``new`` as a plain dict (see module docstring)."""
    b, n = as_profile(base, "base"), as_profile(new, "new")
    bd, nd = b.report, n.report
    db, dn, unit = kernel_unit(bd, nd)
    notes: list[str] = []

    def side(p: Profile, divisor: float) -> dict[str, Any]:
        d = p.report
        return {"path": p.path, "kind": p.kind, "mode": mode_of(d),
                "bottleneck": d.bottleneck.value, "forwards": forwards_of(d),
                "divisor": divisor, "device": d.source.device}

    out: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "threshold_pct": threshold_pct,
                           "unit": unit, "base": side(b, db), "new": side(n, dn)}
    mb, mn = mode_of(bd), mode_of(nd)
    out["mode"] = {"base": mb, "new": mn, "changed": mb != mn}
    if mb != mn:
        notes.append(f"mode changed {mb} -> {mn}: times are per forward, and per-phase step "
                     "times only for phases in both")
    bb, bn = out["base"]["bottleneck"], out["new"]["bottleneck"]
    out["bottleneck"] = {"base": bb, "new": bn, "changed": bb != bn}
    ob, on = overhead_share(bd), overhead_share(nd)
    out["overhead_share"] = {"base": _r(ob), "new": _r(on),
                             "delta_points": _r((on - ob) * 100, 3) if ob is not None
                             and on is not None else None}
    busy_b, busy_n = bd.breakdown.busy_share, nd.breakdown.busy_share
    out["busy_share"] = {"base": busy_b, "new": busy_n,
                         "delta_points": _r((busy_n - busy_b) * 100, 3)
                         if busy_b is not None and busy_n is not None else None}
    cb, cn = bd.categories, nd.categories
    out["categories"] = [
        {"category": c, "base": _r(cb.get(c, 0.0)), "new": _r(cn.get(c, 0.0)),
         "delta_points": _r((float(cn.get(c, 0) or 0) - float(cb.get(c, 0) or 0)) * 100, 3)}
        for c in sorted(set(cb) | set(cn))]
    out["classes"] = _classes(bd, nd, db, dn, threshold_pct)
    out["kernels"] = _kernels(b, n, db, dn, threshold_pct)
    if out["kernels"]["source"] == "hotspots":
        notes.append(out["kernels"]["note"])
    gb = float(bd.overhead.graph_replayed_share or 0)
    gn = float(nd.overhead.graph_replayed_share or 0)
    if (gb > 0.5) != (gn > 0.5):
        notes.append("one profile replays CUDA graphs and the other does not: graph replays "
                     "carry no CPU-op links, so some kernels are classified by name only and "
                     "can move between classes (e.g. rope -> elementwise)")
    out["kernel_counts"] = _counts(bd, nd)
    out["steps"] = _steps(bd, nd)
    from .attribution import attribute

    out["attribution"] = attribute(b.data, n.data)
    _mark_reclassified(out)
    if out["attribution"].get("reason"):
        notes.append(f"no attribution: {out['attribution']['reason']}")
    out["notes"] = notes
    out["headline"] = headline(out)
    return out


def _classes(bd: Report, nd: Report, db: float, dn: float,
             threshold: float) -> list[dict[str, Any]]:
    kb, kn = bd.breakdown.class_ns, nd.breakdown.class_ns
    cat = {**bd.breakdown.class_category, **nd.breakdown.class_category}
    rows = []
    for cls in set(kb) | set(kn):
        vb, vn = float(kb.get(cls, 0)) / db, float(kn.get(cls, 0)) / dn
        change = pct_change(vb, vn)
        rows.append({"class": cls, "category": cat.get(cls, ""), "base_ns": _r(vb, 1),
                     "new_ns": _r(vn, 1), "delta_ns": _r(vn - vb, 1),
                     "change_pct": _r(change, 2), "status": _status(vb, vn, change, threshold)})
    return sorted(rows, key=lambda r: (-abs(r["delta_ns"]), r["class"]))


def _mark_reclassified(out: dict[str, Any]) -> None:
    """Classes whose kernels the other profile classifies differently say so in their status."""
    moved: dict[str, set[str]] = {}
    for p in out["attribution"].get("phases") or []:
        for r in p.get("reclassified") or []:
            moved.setdefault(r["base_class"], set()).add(r["new_class"])
            moved.setdefault(r["new_class"], set()).add(r["base_class"])
    for row in out["classes"]:
        other = moved.get(row["class"])
        if other:
            row["status"] += " (reclassified: " + ", ".join(sorted(other)) + ")"


def _detail_table(data: Report) -> dict[str, dict[str, Any]]:
    """Per kernel name over the median step of every phase (from the report's step_detail)."""
    table: dict[str, dict[str, Any]] = {}
    for detail in data.step_detail.values():
        for k in detail.kernels:
            row = table.setdefault(str(k.kernel), {
                "class": k.class_ or "", "category": k.category or "",
                "calls": 0.0, "total_ns": 0.0})
            row["calls"] += float(k.calls or 0)
            row["total_ns"] += float(k.ns or 0)
    return table


def _kernels(b: Profile, n: Profile, db: float, dn: float, threshold: float) -> dict[str, Any]:
    tb, src_b = kernel_table(b)
    tn, src_n = kernel_table(n)
    complete = src_b == src_n == "events"
    if not complete and b.report.step_detail and n.report.step_detail:
        # a stored report on one side: both sides from the median steps, every kernel aligned
        tb, tn = _detail_table(b.report), _detail_table(n.report)
        rows = _kernel_rows(tb, tn, 1.0, 1.0, threshold, True)
        return {"source": "step_detail", "unit": "per median step (all phases)",
                "note": "per-kernel rows from the median step of each phase (a JSON report "
                        "keeps that step's kernels)", "counts": _status_counts(rows),
                "rows": rows}
    rows = _kernel_rows(tb, tn, db, dn, threshold, complete)
    note = ("every kernel, from the classified events of both traces" if complete else
            "per-kernel rows from the JSON report hotspots (top kernels only): give both "
            "traces for a full per-kernel comparison")
    return {"source": "events" if complete else "hotspots", "note": note,
            "counts": _status_counts(rows), "rows": rows}


def _status_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return dict(sorted(counts.items()))


def _kernel_rows(tb: dict[str, dict[str, Any]], tn: dict[str, dict[str, Any]], db: float,
                 dn: float, threshold: float, complete: bool) -> list[dict[str, Any]]:
    rows = []
    for name in set(tb) | set(tn):
        rb, rn = tb.get(name), tn.get(name)
        vb = rb["total_ns"] / db if rb else 0.0
        vn = rn["total_ns"] / dn if rn else 0.0
        change = pct_change(vb, vn) if rb and rn else None
        status = _status(vb, vn, change, threshold)
        if not complete and (rb is None or rn is None):
            # absent from a top-N list is not "removed": it may just have dropped below it
            status = "only in base top" if rn is None else "only in new top"
        rows.append({
            "name": name, "class": (rn or rb or {}).get("class", ""),
            "category": (rn or rb or {}).get("category", ""),
            "base_calls": _r(rb["calls"] / db, 3) if rb else 0,
            "new_calls": _r(rn["calls"] / dn, 3) if rn else 0,
            # a kernel below one report's top N has an unknown time there, not 0
            "base_ns": _r(vb, 1) if rb or complete else None,
            "new_ns": _r(vn, 1) if rn or complete else None,
            "delta_ns": _r(vn - vb, 1) if (rb and rn) or complete else None,
            "change_pct": _r(change, 2), "status": status})
    rows.sort(key=lambda r: (-abs(r["delta_ns"] or 0), r["name"]))
    return rows


def _counts(bd: Report, nd: Report) -> dict[str, Any]:
    kb, kn = bd.kernel_counts, nd.kernel_counts
    ob, on = bd.overhead, nd.overhead
    out = {}
    pairs: tuple[tuple[str, Any, Any], ...] = (
        ("gemm_calls_per_forward", kb.gemm_calls_per_forward, kn.gemm_calls_per_forward),
        ("observed_gemm_calls", kb.observed_gemm_calls, kn.observed_gemm_calls),
        ("expected_gemm_calls", kb.expected_gemm_calls, kn.expected_gemm_calls),
        ("kernels_per_step", ob.kernels_per_step, on.kernels_per_step),
        ("launch_calls_per_step", ob.launch_calls_per_step, on.launch_calls_per_step),
        ("graph_launches", ob.graph_launches, on.graph_launches),
        ("sync_calls", ob.sync_calls, on.sync_calls))
    for key, vb, vn in pairs:
        delta = (_r(vn - vb, 3) if isinstance(vb, (int, float)) and isinstance(vn, (int, float))
                 else None)
        out[key] = {"base": vb, "new": vn, "delta": delta}
    return out


def _steps(bd: Report, nd: Report) -> list[dict[str, Any]]:
    sb, sn = step_stats(bd), step_stats(nd)
    rows = []
    for phase in sorted(set(sb) | set(sn)):
        pb, pn = sb.get(phase), sn.get(phase)
        div_b, div_n, unit = phase_unit(phase, bd if pb else None, nd) if pn else (1, 1,
                                                                                  "per step")
        if pb and pn and unit == "per prefill token" and not (div_b and div_n):
            div_b, div_n, unit = 1, 1, "per prefill step"
        row: dict[str, Any] = {"phase": phase, "unit": unit,
                               "base_steps": pb["steps"] if pb else 0,
                               "new_steps": pn["steps"] if pn else 0}
        for key, label in (("median_wall_ns", "wall"), ("median_gpu_busy_ns", "gpu_busy")):
            vb = pb[key] / div_b if pb and pb[key] is not None else None
            vn = pn[key] / div_n if pn and pn[key] is not None else None
            row[f"base_{label}_ns"] = _r(vb, 1)
            row[f"new_{label}_ns"] = _r(vn, 1)
            row[f"{label}_change_pct"] = _r(pct_change(vb, vn), 2)
        rows.append(row)
    return rows


# -------------------------------------------------------------------------------- headline

def _ns(ns: Any) -> str:
    from .formatting import fmt_ns

    return fmt_ns(ns) if ns is not None else "-"


def _pct(x: Any) -> str:
    return "-" if x is None else f"{x * 100:.1f}%"


def headline(cmp: dict[str, Any]) -> list[str]:
    """The few sentences that say what changed, most important first."""
    lines = [p["sentence"] for p in (cmp.get("attribution") or {}).get("phases") or []]
    m, b = cmp["mode"], cmp["bottleneck"]
    lines.append(f"mode {m['base']} -> {m['new']}" if m["changed"] else f"mode {m['new']} (same)")
    lines.append(f"bottleneck {b['base']} -> {b['new']}" if b["changed"]
                 else f"bottleneck {b['new']} (same)")
    oh = cmp["overhead_share"]
    if oh["delta_points"] is not None:
        word = "dropped" if oh["delta_points"] < 0 else "rose" if oh["delta_points"] > 0 else \
            "unchanged"
        lines.append(f"overhead share {word}: {_pct(oh['base'])} -> {_pct(oh['new'])} "
                     f"({oh['delta_points']:+.1f} points)")
    for s in cmp["steps"]:
        if s["wall_change_pct"] is not None:
            lines.append(f"{s['phase']} median wall time {s['unit']}: {_ns(s['base_wall_ns'])} "
                         f"-> {_ns(s['new_wall_ns'])} ({s['wall_change_pct']:+.1f}%)")
        if s["gpu_busy_change_pct"] is not None:
            lines.append(f"{s['phase']} median GPU busy {s['unit']}: "
                         f"{_ns(s['base_gpu_busy_ns'])} -> {_ns(s['new_gpu_busy_ns'])} "
                         f"({s['gpu_busy_change_pct']:+.1f}%)")
    g = cmp["kernel_counts"]["gemm_calls_per_forward"]
    if g["delta"]:
        lines.append(f"GEMM calls per forward {g['base']:g} -> {g['new']:g} ({g['delta']:+g})")
    k = cmp["kernels"]["counts"]
    moved = [f"{k[s]} {s}" for s in ("slower", "faster", "added", "removed") if k.get(s)]
    if moved:
        lines.append("kernels: " + ", ".join(moved) + f" (threshold {cmp['threshold_pct']:g}% "
                     f"{cmp['unit']})")
    return lines
