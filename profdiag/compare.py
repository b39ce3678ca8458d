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

from functools import lru_cache
from typing import Any

from .errors import UsageError
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

SCHEMA_VERSION = 1
DEFAULT_THRESHOLD_PCT = 5.0  # a kernel or class within +-5% is "same"
TEXT_KERNEL_ROWS = 25
HTML_KERNEL_ROWS = 500
FORMATS = {"txt": "txt", "text": "txt", "md": "md", "markdown": "md", "html": "html",
           "htm": "html", "json": "json"}


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
    bd, nd = b.data, n.data
    db, dn, unit = kernel_unit(bd, nd)
    notes: list[str] = []

    def side(p: Profile, divisor: float) -> dict[str, Any]:
        d = p.data
        return {"path": p.path, "kind": p.kind, "mode": mode_of(d),
                "bottleneck": (d.get("bottleneck") or {}).get("value", "unknown"),
                "forwards": forwards_of(d), "divisor": divisor,
                "device": (d.get("source") or {}).get("device")}

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
    busy_b = (bd.get("breakdown") or {}).get("busy_share")
    busy_n = (nd.get("breakdown") or {}).get("busy_share")
    out["busy_share"] = {"base": busy_b, "new": busy_n,
                         "delta_points": _r((busy_n - busy_b) * 100, 3)
                         if busy_b is not None and busy_n is not None else None}
    cb, cn = bd.get("categories") or {}, nd.get("categories") or {}
    out["categories"] = [
        {"category": c, "base": _r(cb.get(c, 0.0)), "new": _r(cn.get(c, 0.0)),
         "delta_points": _r((float(cn.get(c, 0) or 0) - float(cb.get(c, 0) or 0)) * 100, 3)}
        for c in sorted(set(cb) | set(cn))]
    out["classes"] = _classes(bd, nd, db, dn, threshold_pct)
    out["kernels"] = _kernels(b, n, db, dn, threshold_pct)
    if out["kernels"]["source"] == "hotspots":
        notes.append(out["kernels"]["note"])
    gb = float((bd.get("overhead") or {}).get("graph_replayed_share") or 0)
    gn = float((nd.get("overhead") or {}).get("graph_replayed_share") or 0)
    if (gb > 0.5) != (gn > 0.5):
        notes.append("one profile replays CUDA graphs and the other does not: graph replays "
                     "carry no CPU-op links, so some kernels are classified by name only and "
                     "can move between classes (e.g. rope -> elementwise)")
    out["kernel_counts"] = _counts(bd, nd)
    out["steps"] = _steps(bd, nd)
    from .attribution import attribute

    out["attribution"] = attribute(bd, nd)
    _mark_reclassified(out)
    if out["attribution"].get("reason"):
        notes.append(f"no attribution: {out['attribution']['reason']}")
    out["notes"] = notes
    out["headline"] = headline(out)
    return out


def _classes(bd: dict[str, Any], nd: dict[str, Any], db: float, dn: float,
             threshold: float) -> list[dict[str, Any]]:
    kb = (bd.get("breakdown") or {}).get("class_ns") or {}
    kn = (nd.get("breakdown") or {}).get("class_ns") or {}
    cat = {**((bd.get("breakdown") or {}).get("class_category") or {}),
           **((nd.get("breakdown") or {}).get("class_category") or {})}
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


def _detail_table(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per kernel name over the median step of every phase (from the report's step_detail)."""
    table: dict[str, dict[str, Any]] = {}
    for detail in (data.get("step_detail") or {}).values():
        for k in detail.get("kernels") or []:
            row = table.setdefault(str(k.get("kernel")), {
                "class": str(k.get("class") or ""), "category": str(k.get("category") or ""),
                "calls": 0.0, "total_ns": 0.0})
            row["calls"] += float(k.get("calls") or 0)
            row["total_ns"] += float(k.get("ns") or 0)
    return table


def _kernels(b: Profile, n: Profile, db: float, dn: float, threshold: float) -> dict[str, Any]:
    tb, src_b = kernel_table(b)
    tn, src_n = kernel_table(n)
    complete = src_b == src_n == "events"
    if not complete and b.data.get("step_detail") and n.data.get("step_detail"):
        # a stored report on one side: both sides from the median steps, every kernel aligned
        tb, tn = _detail_table(b.data), _detail_table(n.data)
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


def _counts(bd: dict[str, Any], nd: dict[str, Any]) -> dict[str, Any]:
    kb, kn = bd.get("kernel_counts") or {}, nd.get("kernel_counts") or {}
    ob, on = bd.get("overhead") or {}, nd.get("overhead") or {}
    out = {}
    for key, vb, vn in (
            ("gemm_calls_per_forward", kb.get("gemm_calls_per_forward"),
             kn.get("gemm_calls_per_forward")),
            ("observed_gemm_calls", kb.get("observed_gemm_calls"), kn.get("observed_gemm_calls")),
            ("expected_gemm_calls", kb.get("expected_gemm_calls"), kn.get("expected_gemm_calls")),
            ("kernels_per_step", ob.get("kernels_per_step"), on.get("kernels_per_step")),
            ("launch_calls_per_step", ob.get("launch_calls_per_step"),
             on.get("launch_calls_per_step")),
            ("graph_launches", ob.get("graph_launches"), on.get("graph_launches")),
            ("sync_calls", ob.get("sync_calls"), on.get("sync_calls"))):
        both = isinstance(vb, (int, float)) and isinstance(vn, (int, float))
        out[key] = {"base": vb, "new": vn, "delta": _r(vn - vb, 3) if both else None}
    return out


def _steps(bd: dict[str, Any], nd: dict[str, Any]) -> list[dict[str, Any]]:
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
    from .renderers.text import fmt_ns

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


# ------------------------------------------------------------------------------- rendering

def format_for(output: str | None, fmt: str | None) -> str:
    """txt, md, html or json: --format wins, else the output suffix, else txt."""
    if fmt:
        if fmt not in FORMATS:
            raise UsageError(f"unknown format {fmt!r}; choose from txt, md, html, json")
        return FORMATS[fmt]
    if output:
        suffix = output.rsplit(".", 1)[-1].lower() if "." in output else ""
        if suffix in FORMATS:
            return FORMATS[suffix]
        raise UsageError(f"cannot tell the format from {output!r}; use .txt, .md, .html or "
                         ".json, or pass --format")
    return "txt"


def render(cmp: dict[str, Any], fmt: str = "txt") -> str:
    fmt = format_for(None, fmt)
    if fmt == "json":
        from .renderers.json_ import dumps

        return dumps(cmp)
    if fmt == "md":
        return render_markdown(cmp)
    if fmt == "html":
        return render_html(cmp)
    return render_text(cmp)


def _chg(x: Any) -> str:
    return "" if x is None else f"{x:+.1f}%"


def _pts(x: Any) -> str:
    return "" if x is None else f"{x:+.1f} pt"


def _num(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and not x.is_integer():
        return f"{x:.2f}".rstrip("0").rstrip(".")
    return f"{int(x)}"


def _sections(cmp: dict[str, Any], name: Any, max_kernels: int | None) -> list[tuple[str,
                                                                                   list[str],
                                                                                   list[list[str]],
                                                                                   set[int]]]:
    """(title, headers, rows, right-aligned columns) of each table, shared by text and md."""
    u = cmp["unit"]
    out = []
    rows = [["mode", cmp["mode"]["base"], cmp["mode"]["new"],
             "changed" if cmp["mode"]["changed"] else ""],
            ["bottleneck", cmp["bottleneck"]["base"], cmp["bottleneck"]["new"],
             "changed" if cmp["bottleneck"]["changed"] else ""],
            ["overhead share", _pct(cmp["overhead_share"]["base"]),
             _pct(cmp["overhead_share"]["new"]), _pts(cmp["overhead_share"]["delta_points"])],
            ["GPU busy share", _pct(cmp["busy_share"]["base"]), _pct(cmp["busy_share"]["new"]),
             _pts(cmp["busy_share"]["delta_points"])]]
    out.append(("Summary", ["", "base", "new", "change"], rows, {1, 2, 3}))
    rows = [[s["phase"], s["unit"], f"{s['base_steps']}/{s['new_steps']}",
             _ns(s["base_wall_ns"]), _ns(s["new_wall_ns"]), _chg(s["wall_change_pct"]),
             _ns(s["base_gpu_busy_ns"]), _ns(s["new_gpu_busy_ns"]),
             _chg(s["gpu_busy_change_pct"])] for s in cmp["steps"]]
    if rows:
        out.append(("Steps (medians)", ["phase", "unit", "steps", "wall base", "wall new",
                                        "change", "GPU busy base", "GPU busy new", "change"],
                    rows, {2, 3, 4, 5, 6, 7, 8}))
    rows = [[c["category"], _pct(c["base"]), _pct(c["new"]), _pts(c["delta_points"])]
            for c in cmp["categories"]]
    out.append(("Category shares of the window", ["category", "base", "new", "change"], rows,
                {1, 2, 3}))
    rows = [[c["class"], c["category"], _ns(c["base_ns"]), _ns(c["new_ns"]), _chg(
        c["change_pct"]), c["status"]] for c in cmp["classes"]]
    out.append((f"Time per class ({u})", ["class", "category", "base", "new", "change",
                                           "status"], rows, {2, 3, 4}))
    rows = [[k.replace("_", " "), _num(v["base"]), _num(v["new"]),
             "" if v["delta"] is None else f"{v['delta']:+g}"]
            for k, v in cmp["kernel_counts"].items()]
    out.append(("Kernel counts", ["", "base", "new", "change"], rows, {1, 2, 3}))
    for p in (cmp.get("attribution") or {}).get("phases") or []:
        rows = [[r["what"], r["kind"], _signed_ns(r["delta_ns"]),
                 "" if r["share_of_delta"] is None else f"{r['share_of_delta'] * 100:.1f}%"]
                for r in p["rows"]]
        rows.append(["total: median step change", "", _signed_ns(p["delta_ns"]),
                     "100.0%" if p["delta_ns"] else ""])
        out.insert(1, (f"Why the {p['phase']} median step changed ({p['unit']}; steps "
                       f"{_steps_of(p['base_steps'])} vs {_steps_of(p['new_steps'])}, aligned by "
                       f"{p['aligned_by']})", ["contributor", "kind", "change", "share"], rows,
                       {2, 3}))
        if p["reclassified"]:
            rows = [[name(r["what"]), r["base_class"], r["new_class"]] for r in p["reclassified"]]
            out.append((f"Kernels classified differently in the two profiles ({p['phase']})",
                        ["kernel", "class in base", "class in new"], rows, set()))
    krows = cmp["kernels"]["rows"]
    u = cmp["kernels"].get("unit", u)
    shown = krows if max_kernels is None else krows[:max_kernels]
    if max_kernels is not None:
        # every kernel the headline counts as changed is among the rows shown
        shown = shown + [k for k in krows[max_kernels:] if k["status"] != "same"][:100]
    rows = [[name(k["name"]), k["class"], _num(k["base_calls"]), _num(k["new_calls"]),
             _ns(k["base_ns"]), _ns(k["new_ns"]), _chg(k["change_pct"]), k["status"]]
            for k in shown]
    title = f"Kernels ({u}; largest change first"
    title += f", {len(shown)} of {len(krows)})" if len(shown) < len(krows) else ")"
    out.append((title, ["kernel", "class", "calls base", "calls new", "base", "new", "change",
                        "status"], rows, {2, 3, 4, 5, 6}))
    return out


def _signed_ns(ns: Any) -> str:
    if ns is None:
        return "-"
    return ("+" if ns >= 0 else "-") + _ns(abs(ns))


def _steps_of(steps: list[int]) -> str:
    return "+".join(str(s) for s in steps) or "-"


def render_text(cmp: dict[str, Any]) -> str:
    from .renderers.text import short_kernel_name, table, truncate

    lines = [f"profdiag compare: {cmp['base']['path']} -> {cmp['new']['path']}", ""]
    lines += [f"  {h}" for h in cmp["headline"]]
    for title, headers, rows, right in _sections(
            cmp, lambda s: truncate(short_kernel_name(s), 70), TEXT_KERNEL_ROWS):
        lines += ["", title, "-" * len(title)]
        lines += table(headers, rows, right=sorted(right), indent="") if rows else ["(none)"]
    if cmp["notes"]:
        lines += ["", "Notes", "-----", *[f"- {n}" for n in cmp["notes"]]]
    return "\n".join(lines) + "\n"


def render_markdown(cmp: dict[str, Any]) -> str:
    from .renderers.markdown import code, esc, table

    lines = ["## profdiag compare", "",
             f"{code(cmp['base']['path'], cell=False)} → {code(cmp['new']['path'], cell=False)}",
             ""]
    lines += [f"- {esc(h)}" for h in cmp["headline"]]
    for title, headers, rows, right in _sections(cmp, lambda s: code(s, 100),
                                                 TEXT_KERNEL_ROWS):
        lines += ["", f"### {esc(title)}", ""]
        # kernel cells are already code spans; everything else is escaped text
        esc_rows = [[c if title.startswith("Kernels") and i == 0 else esc(c)
                     for i, c in enumerate(r)] for r in rows]
        lines += table([esc(h) for h in headers], esc_rows, right=sorted(right)) \
            if rows else ["(none)"]
    if cmp["notes"]:
        lines += ["", "### Notes", "", *[f"- {esc(n)}" for n in cmp["notes"]]]
    return "\n".join(lines) + "\n"


@lru_cache(maxsize=1)
def _env() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("profdiag.renderers", "templates"),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
        lstrip_blocks=True, keep_trailing_newline=True)
    from .renderers.text import short_kernel_name

    env.filters.update(ns=_ns, pct=_pct, chg=_chg, pts=_pts, num=_num, short=short_kernel_name)
    return env


BAR_LEFT, BAR_SCALE = 50, 7.0  # SVG px: label column, px per percentage point
CATEGORY_COLORS = {
    "compute": "#4e79a7", "memory": "#f28e2b", "normalization": "#76b7b2",
    "elementwise": "#59a14f", "communication": "#b07aa1", "other": "#bab0ac",
    "overhead": "#e15759",
}


def render_html(cmp: dict[str, Any]) -> str:
    """One self-contained page (inline CSS, inline SVG bars; no scripts, no network)."""
    bars = []
    for key in ("base", "new"):
        x = 0.0
        segs = []
        for c in cmp["categories"]:
            w = max(float(c[key] or 0), 0.0) * 100
            segs.append({"category": c["category"], "x": round(BAR_LEFT + x * BAR_SCALE, 2),
                         "w": round(w * BAR_SCALE, 2),
                         "color": CATEGORY_COLORS.get(c["category"], "#bab0ac"),
                         "share": c[key]})
            x += w
        bars.append({"label": key, "segments": segs})
    sections = _sections(cmp, lambda s: s, HTML_KERNEL_ROWS)
    return str(_env().get_template("compare.html.j2").render(
        cmp=cmp, bars=bars, sections=sections, colors=CATEGORY_COLORS))
