"""GitHub-flavoured Markdown report: the HTML report's content as headings, lists and tables."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from . import text as t

NAME_CHARS = 120  # kernel names longer than this are cut, with an ellipsis
# '_' only matters at a word edge (GFM ignores intraword underscores), so 'kv_heads' stays.
_SPECIAL = re.compile(r"([\\|*`\[\]<>#]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9]))")


def esc(value: Any) -> str:
    """Plain text safe in a GFM table cell or paragraph: '|', '*', '_', '<'... escaped,
    newlines folded (a raw '<' would start inline HTML on GitHub)."""
    s = " ".join(str(value).split())
    return _SPECIAL.sub(r"\\\1", s)


def code(value: Any, width: int = NAME_CHARS, cell: bool = True) -> str:
    """Inline code span for a (truncated) name. Backticks inside are fenced by a longer
    backtick run (CommonMark); in a table cell '|' is written '\\|', which GFM unescapes
    before it parses the code span."""
    s = t.truncate(" ".join(str(value).split()), width)
    if not s:
        return ""
    runs = [len(m) for m in re.findall(r"`+", s)]
    fence = "`" * (max(runs) + 1 if runs else 1)
    if runs or s.startswith(" ") or s.endswith(" "):
        s = f" {s} "
    if cell:
        s = s.replace("|", "\\|")
    return f"{fence}{s}{fence}"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]],
          right: Sequence[int] = ()) -> list[str]:
    """A GFM table; cells must already be escaped (use esc/code)."""
    align = ["---:" if i in right else "---" for i in range(len(headers))]
    out = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def _status(s: str | None) -> str:
    return f"**{s.upper()}**" if s else "info"


def render(data: dict[str, Any]) -> str:
    """The full Markdown report (no charts; every number the HTML report shows as text)."""
    src = data.get("source") or {}
    mode = data.get("mode") or {}
    steps = t.step_checks(data)
    out = ["# profdiag report", "",
           f"**{esc(t.headline(data))}**", "",
           f"- Trace: {code(src.get('path', '-'), 400, cell=False)} "
           f"({esc(src.get('format', '?'))})",
           f"- Device: {esc(src.get('device') or '-')}",
           f"- Profiler options: {esc(t.options_text(src.get('options')))}",
           f"- Model: {esc(t.model_text(data.get('model')))}"]
    counts = t.status_counts(data)
    out.append("- Checks: " + ", ".join(f"{counts[s]} {s}" for s in ("fail", "warn", "pass",
                                                                      "skip") if s in counts))
    if src.get("salvaged"):
        out.append("- Note: the trace was truncated and salvaged; numbers may be partial.")

    def section(title: str, key: str | None = None) -> None:
        status = f" — {_status(steps[key]['status'])}" if key else ""
        out.extend(["", f"## {title}{status}", ""])
        if key:
            for c in steps[key]["checks"]:
                out.append(f"- {_status(c.get('status'))} {esc(c.get('summary', ''))}")
            if steps[key]["checks"]:
                out.append("")

    section("1. Mode", "mode")
    out.append(f"**{esc(mode.get('value', 'unknown'))}** (confidence "
               f"{t.fmt_num(mode.get('confidence'))}). Evidence, strongest first:")
    out.append("")
    out += [f"1. {esc(e)}" for e in mode.get("evidence") or []] or ["(none)"]

    section("2. Category breakdown", "categories")
    bd = data.get("breakdown") or {}
    cat_ns = bd.get("category_ns") or {}
    rows = []
    for cat, share in t.ordered_categories(data.get("categories") or {}):
        ns = ((bd.get("idle_ns") or 0) + cat_ns.get("overhead", 0) if cat == "overhead"
              else cat_ns.get(cat))
        rows.append((esc(cat), t.fmt_pct(share), t.fmt_ms(ns)))
    out += table(("category", "share of window", "time ms"), rows, right=(1, 2))
    crows = t.class_rows(data)
    if crows:
        out.append("")
        out += table(("class", "category", "busy ms", "share of busy"),
                     [(esc(r["class"]), esc(r["category"]), t.fmt_ms(r["total_ns"]),
                       t.fmt_pct(r["share"])) for r in crows], right=(2, 3))
    comm = t.communication_rows(data)
    if comm:
        out.append("")
        out += table(t.COMM_HEADERS, [tuple(esc(c) for c in r) for r in comm],
                     right=(1, 2, 3, 4, 5, 6, 7))

    section("3. Overhead", "overhead")
    items = t.overhead_items(data, "µs")
    if items:
        out += table(("measure", "value"), [(esc(k), esc(v)) for k, v in items], right=(1,))
    flags = t.profiling_flags(data)
    if flags:
        out += ["", f"> Captured with {esc(' and '.join(flags))}: these slow the host, so the "
                "gaps between kernels may be inflated by profiling."]
    from .idle_view import markdown_block

    out += markdown_block(data, esc)

    kc = data.get("kernel_counts") or {}
    section("4. Kernel counts", "counts")
    out += [f"- {esc(line)}" for line in t.counts_lines(data)]
    if kc.get("by_shape"):
        out += ["", "GEMM calls by shape:", ""]
        out += table(("signature", "role", "kernel", "calls", "per forward", "total ms"),
                     [(code(r.get("signature", "")),
                       esc(str(r.get("role") or "") + (f" ({r['phase']})" if r.get("phase")
                                                      not in (None, "", "all") else "")),
                       code(r.get("kernel", "")),
                       t.fmt_num(r.get("calls")), t.fmt_num(r.get("calls_per_forward")),
                       t.fmt_ms(r.get("total_ns"))) for r in kc["by_shape"]],
                     right=(3, 4, 5))
    if kc.get("extra"):
        out += ["", "Extra-call suspects:", ""]
        out += [f"- {code(r.get('signature', r.get('kernel', '')), cell=False)}: "
                f"{t.fmt_num(r.get('calls'))} calls; {esc(r.get('reason', ''))}"
                for r in kc["extra"]]
    if kc.get("per_layer"):
        slow = set(kc.get("slow_layers") or [])
        fw = kc.get("forwards")
        out += ["", f"{t.device_word(data)} time per layer, totals over all "
                f"{t.fmt_num(fw) + ' ' if fw else ''}forwards:", ""]
        out += table(("layer", f"{t.device_word(data)} ms (total)", "GEMM calls (total)", "slow"),
                     [(r.get("layer"), t.fmt_ms(r.get("gpu_ns")), t.fmt_num(r.get("gemm_calls")),
                       "**slow**" if r.get("layer") in slow else "")
                      for r in kc["per_layer"]], right=(0, 1, 2))

    section("5. Hotspots", "hotspots")
    hot = data.get("hotspots") or []
    if hot:
        out += table(("#", "name", "class", "calls", "total ms", "mean µs", "share", "note"),
                     [(i, code(h.get("name", "")), esc(h.get("class", "")),
                       t.fmt_num(h.get("calls")), t.fmt_ms(h.get("total_ns")),
                       t.fmt_us(h.get("mean_ns")), t.fmt_pct(h.get("share")),
                       esc(h.get("note") or ""))
                      for i, h in enumerate(hot, 1)], right=(0, 3, 4, 5, 6))
    else:
        out.append("No kernels.")

    srows = t.steps_with_ideal(data)
    if srows:
        section("Steps")
        comp = t.has_composition(srows)
        out += table(("step", "name", "phase", "wall ms", f"{t.device_word(data)} busy ms",
                      "kernels", "ideal ms", "× ideal", *(t.COMPOSITION_HEADERS if comp else ())),
                     [(s.get("step", ""), esc(s.get("name", "")), esc(s.get("phase", "")),
                       t.fmt_ms(s.get("wall_ns")), t.fmt_ms(s.get("gpu_busy_ns")),
                       t.fmt_num(s.get("kernels")), t.fmt_ms(s.get("ideal_ns")),
                       t.fmt_num(s.get("ratio")),
                       *((esc(c) for c in t.composition_cells(s)) if comp else ()))
                      for s in srows], right=(0, 3, 4, 5, 6, 7, 8, 9, 10, 11))

    out += _roofline(data)
    out += _phases(data)

    section("Recommendations")
    recs = data.get("recommendations") or []
    if not recs:
        out.append("None.")
    for i, r in enumerate(recs, 1):
        bott = f" ({esc(r['bottleneck'])})" if r.get("bottleneck") else ""
        out += [f"### {i}. {esc(r.get('title', ''))}{bott}", ""]
        if r.get("evidence"):
            out += [f"*Evidence:* {esc(r['evidence'])}", ""]
        if r.get("advice"):
            out += [esc(r["advice"]), ""]
        if r.get("kernels"):
            out += [f"- {code(k, cell=False)}" for k in r["kernels"]] + [""]

    warns = data.get("warnings") or []
    section(f"Warnings ({len(warns)})")
    out += [f"- {esc(w)}" for w in warns] or ["None."]

    if data.get("extras"):
        section("Extras")
        out.append(", ".join(esc(k) for k in sorted(data["extras"])) + " (figures in the JSON "
                   "output).")

    section("All checks")
    out += table(("id", "status", "summary"),
                 [(code(c.get("id", "")), _status(c.get("status")), esc(c.get("summary", "")))
                  for c in data.get("checks") or []])
    out += ["", "---", f"profdiag report · schema_version {esc(data.get('schema_version', '?'))}"]
    text = "\n".join(out)
    return re.sub(r"\n{3,}", "\n\n", text).rstrip() + "\n"


def _roofline(data: dict[str, Any]) -> list[str]:
    roof = data.get("roofline")
    out = ["", "## Roofline", ""]
    if not roof:
        return out + ["Not computed."]
    if not roof.get("available"):
        return out + [f"Not available: {esc(roof.get('reason', 'no reason given'))}"]
    gpu = roof.get("gpu") or {}
    out.append(f"{esc(gpu.get('name', 'GPU'))}: memory roof "
               f"{t.fmt_si(gpu.get('bandwidth_bytes_s'), 'B/s')}, compute roof "
               f"{t.fmt_si(gpu.get('peak_bf16_flops_s'), 'FLOP/s')} bf16, ridge "
               f"{t.fmt_num(gpu.get('ridge_bf16'))} FLOP/byte.")
    if roof.get("reason"):
        out += ["", f"> {esc(roof['reason'])}"]
    rows = t.roofline_rows(roof.get("summary"))
    if rows:
        out.append("")
        out += table(("class", "calls", "time ms", "FLOP/byte", "achieved FLOP/s",
                      "achieved B/s", "median efficiency", "memory-bound time"),
                     [(esc(r["class"]), t.fmt_num(r.get("calls")), t.fmt_ms(r.get("time_ns")),
                       t.fmt_num(r.get("intensity")),
                       t.fmt_si(r.get("achieved_flops_s"), "FLOP/s"),
                       t.fmt_si(r.get("achieved_bytes_s"), "B/s"),
                       t.fmt_pct(r.get("median_efficiency")),
                       t.fmt_pct(r.get("memory_bound_time_share"))) for r in rows],
                     right=(1, 2, 3, 4, 5, 6, 7))
    shapes = t.shape_rows(roof.get("points"))
    if shapes:
        out += ["", f"Per shape (M x K x N; median per call, top {len(shapes)} by time):", ""]
        out += table(("phase", "class", "op", "shape", "calls", "time ms", "FLOP/byte",
                      "achieved FLOP/s", "of roof", "bound"),
                     [(esc(r.get("phase") or ""), esc(r.get("op_class") or ""),
                       esc(r.get("op_name") or ""), esc(r["shape"]), t.fmt_num(r.get("calls")),
                       t.fmt_ms(r.get("time_ns")), t.fmt_num(r.get("intensity")),
                       t.fmt_si(r.get("achieved_flops_s"), "FLOP/s"),
                       t.fmt_pct(r.get("efficiency")), esc(r.get("bound") or ""))
                      for r in shapes], right=(4, 5, 6, 7, 8))
    sol = roof.get("speed_of_light") or {}
    out += ["", "### Speed of light", ""]
    if not sol.get("available") or not sol.get("phases"):
        return out + [f"Not available{': ' + esc(sol['reason']) if sol.get('reason') else ''}."]
    srows = []
    for name, p in sorted(sol["phases"].items()):
        if p.get("available") is False:
            srows.append((esc(name), "-", "-", "-", "-", "-", "-",
                          esc(f"not available: {p.get('reason', '')}")))
            continue
        srows.append((esc(name), t.fmt_num(p.get("steps")),
                      t.fmt_ns(p.get("median_measured_ns"), "µs"),
                      t.fmt_ns(p.get("ideal_ns"), "µs"), f"{t.fmt_num(p.get('median_ratio'))}×",
                      t.fmt_num(p.get("tokens_per_s")), t.fmt_num(p.get("tokens_per_s_ideal")),
                      esc(p.get("limit", ""))))
    out += table(("phase", "steps", "median step", "ideal step", "ratio", "tokens/s",
                  "ideal tokens/s", "limit"), srows, right=(1, 2, 3, 4, 5, 6))
    inputs = t.sol_inputs_lines(sol)
    if inputs:
        out += ["", "Ideal = max(FLOPs / peak, bytes / bandwidth), from:", ""]
        out += [f"- {esc(line)}" for line in inputs]
    return out


def _phases(data: dict[str, Any]) -> list[str]:
    phases = data.get("phases") or []
    if not phases:
        return []
    out = ["", "## Phases", ""]
    out += table(("phase", "mode", "steps", "median step", "overhead", "bottleneck",
                  "categories"),
                 [(esc(p.get("name", "")),
                   f"{esc((p.get('mode') or {}).get('value', '?'))} "
                   f"({t.fmt_num((p.get('mode') or {}).get('confidence'))})",
                   t.fmt_num(p.get("steps")), t.fmt_ns(p.get("median_step_ns"), "µs"),
                   t.fmt_pct(p.get("overhead_share")),
                   esc((p.get("bottleneck") or {}).get("value", "?")),
                   ", ".join(f"{esc(c)} {t.fmt_pct(s)}"
                             for c, s in t.ordered_categories(p.get("categories") or {})))
                  for p in phases], right=(2, 3, 4))
    return out
