"""`profdiag compare S1 S2` for two sweeps: point by point, prefill and decode step times.

A sweep is given as its folder (holding sweep.report.json) or that file. Points are matched
by id (T128_N8_B4, ctx512_N8_B1); the change is (new − base) / base of the median step time
of each phase, "slower"/"faster" past the threshold, "same" within it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import UsageError
from .grid import read_json

SWEEP_COMPARE_VERSION = 1


def sweep_report_path(path: str | Path) -> Path | None:
    """Return the sweep.report.json of a sweep folder or file, None when it is not a sweep."""
    p = Path(path)
    if p.is_dir():
        q = p / "sweep.report.json"
        return q if q.is_file() else None
    if p.name.endswith("sweep.report.json") and p.is_file():
        return p
    return None


def load_sweep(path: str | Path) -> dict[str, Any]:
    q = sweep_report_path(path)
    if q is None:
        raise UsageError("not a sweep folder (no sweep.report.json)", str(path))
    rep = read_json(q)
    if not isinstance(rep, dict) or rep.get("sweep_report_version") != 1:
        raise UsageError("not a version-1 sweep report", str(q))
    rep["_path"] = str(path)
    return rep


def _status(b: float | None, n: float | None, thr: float) -> tuple[float | None, str]:
    if b is None or n is None:
        return None, "missing" if (b is None) != (n is None) else "-"
    if b <= 0:
        return None, "-"
    ch = (n - b) / b * 100.0
    return ch, "slower" if ch > thr else "faster" if ch < -thr else "same"


def compare_sweeps(base: dict[str, Any], new: dict[str, Any], threshold_pct: float = 5.0
                   ) -> dict[str, Any]:
    """Return the point-by-point comparison (JSON-ready)."""
    bp = {p["id"]: p for p in base["points"]}
    np_ = {p["id"]: p for p in new["points"]}
    rows = []
    for pid in [i for i in bp if i in np_]:
        b, n = bp[pid], np_[pid]
        row: dict[str, Any] = {"id": pid, "base_status": b["status"], "new_status": n["status"]}
        for ph in ("prefill", "decode"):
            bv, nv = b.get(f"{ph}_ns"), n.get(f"{ph}_ns")
            ch, st = _status(bv, nv, threshold_pct)
            row.update({f"{ph}_base_ns": bv, f"{ph}_new_ns": nv, f"{ph}_change_pct": ch,
                        f"{ph}_status": st, f"{ph}_base_regime": b.get(f"{ph}_regime"),
                        f"{ph}_new_regime": n.get(f"{ph}_regime"),
                        f"{ph}_base_ratio": b.get(f"{ph}_ratio"),
                        f"{ph}_new_ratio": n.get(f"{ph}_ratio")})
        rows.append(row)
    headline = []
    for ph in ("prefill", "decode"):
        chs = [r[f"{ph}_change_pct"] for r in rows if r[f"{ph}_change_pct"] is not None]
        if chs:
            slower = sum(r[f"{ph}_status"] == "slower" for r in rows)
            faster = sum(r[f"{ph}_status"] == "faster" for r in rows)
            chs.sort()
            med = chs[len(chs) // 2] if len(chs) % 2 else (chs[len(chs) // 2 - 1]
                                                          + chs[len(chs) // 2]) / 2
            headline.append(f"{ph}: median change {med:+.1f}% over {len(chs)} point(s); "
                            f"{slower} slower, {faster} faster (threshold {threshold_pct:g}%)")
        flips = [r["id"] for r in rows if r[f"{ph}_base_regime"] and r[f"{ph}_new_regime"]
                 and r[f"{ph}_base_regime"] != r[f"{ph}_new_regime"]]
        if flips:
            headline.append(f"{ph} regime changed at {', '.join(flips)}")
    only_b = [i for i in bp if i not in np_]
    only_n = [i for i in np_ if i not in bp]
    if only_b or only_n:
        headline.append(f"{len(only_b)} point(s) only in base, {len(only_n)} only in new")
    return {"sweep_compare_version": SWEEP_COMPARE_VERSION,
            "base": {"path": base["_path"], "target": base.get("target"),
                     "settings": base.get("settings")},
            "new": {"path": new["_path"], "target": new.get("target"),
                    "settings": new.get("settings")},
            "threshold_pct": threshold_pct, "headline": headline, "points": rows,
            "only_in_base": only_b, "only_in_new": only_n}


def _ms(ns: Any) -> str:
    return "-" if ns is None else f"{ns / 1e6:.3f}"


def _pct(x: Any) -> str:
    return "-" if x is None else f"{x:+.1f}%"


def render(cmp: dict[str, Any], fmt: str) -> str:
    """Return the comparison as txt, md, json or html."""
    if fmt == "json":
        import orjson

        return orjson.dumps(cmp, option=orjson.OPT_INDENT_2).decode() + "\n"
    head = ["point", "prefill base ms", "new ms", "change", "decode base ms", "new ms", "change",
            "decode regime"]
    body = [[r["id"], _ms(r["prefill_base_ns"]), _ms(r["prefill_new_ns"]),
             _pct(r["prefill_change_pct"]) + f" {r['prefill_status']}",
             _ms(r["decode_base_ns"]), _ms(r["decode_new_ns"]),
             _pct(r["decode_change_pct"]) + f" {r['decode_status']}",
             f"{r['decode_base_regime'] or '-'} -> {r['decode_new_regime'] or '-'}"]
            for r in cmp["points"]]
    if fmt == "html":
        from ..renderers.templating import render

        return render("sweep_compare.html.j2", cmp=cmp, head=head, body=body)
    lines = [f"sweep compare: {cmp['base']['path']} -> {cmp['new']['path']}"]
    lines += [f"  {h}" for h in cmp["headline"]]
    if fmt == "md":
        lines = [f"# {lines[0]}", ""] + [f"- {h}" for h in cmp["headline"]] + [""]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines) + "\n"
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    lines.append("")
    for row in [head, *body]:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
    return "\n".join(lines) + "\n"
