"""`profdiag compare` as plain text and Markdown (and the format dispatch): views of the
dict ``profdiag.compare.compare`` returns. The HTML page is renderers/compare_html.py."""

from __future__ import annotations

from typing import Any

from ..compare import _ns, _pct
from ..errors import UsageError

TEXT_KERNEL_ROWS = 25
HTML_KERNEL_ROWS = 500
FORMATS = {"txt": "txt", "text": "txt", "md": "md", "markdown": "md", "html": "html",
           "htm": "html", "json": "json"}


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
    """The comparison in ``fmt`` (txt, md, html or json)."""
    fmt = format_for(None, fmt)
    if fmt == "json":
        from .json_ import dumps

        return dumps(cmp)
    if fmt == "md":
        return render_markdown(cmp)
    if fmt == "html":
        from .compare_html import render_html

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
    from .text import short_kernel_name, table, truncate

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
    from .markdown import code, esc, table

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




# the compare page's filters (renderers/templating.py registers them with a cmp_ prefix)
fmt_ns_or_dash = _ns
fmt_share = _pct
fmt_change = _chg
fmt_count = _num
