"""Plain-text report and short terminal summary of a diagnosis dict.

Also holds the small formatting and grouping helpers the HTML and Markdown renderers share,
so the three outputs word the same numbers the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

# The number/name formatters live in profdiag/formatting.py (the gate and library sentences
# use them too); re-exported here for the renderers and templates that import them from text.
from ..formatting import (
    fmt_ms,
    fmt_ns,
    fmt_num,
    fmt_pct,
    fmt_si,
    fmt_us,
    short_kernel_name,
    truncate,
)

STATUS_ORDER = {"fail": 3, "warn": 2, "pass": 1, "skip": 0}
CATEGORY_ORDER = ("compute", "memory", "normalization", "elementwise", "communication", "other",
                  "overhead")
# One letter per category for the one-line text bar.
CATEGORY_LETTER = {"compute": "C", "memory": "M", "normalization": "N", "elementwise": "E",
                   "communication": "K", "other": "x", "overhead": "."}
# The five steps of the method and the check ids that belong to each.
STEPS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("mode", "Mode", ("mode",)),
    ("categories", "Category breakdown", ("categories", "pattern", "communication")),
    ("overhead", "Overhead", ("overhead", "step_outliers")),
    ("counts", "Kernel counts", ("kernel_count", "layer_balance")),
    ("hotspots", "Hotspots", ("hotspots",)),
)


# ---------------------------------------------------------------------------- shared views

def worst_status(statuses: Iterable[str]) -> str | None:
    found = [s for s in statuses if s in STATUS_ORDER]
    return max(found, key=STATUS_ORDER.__getitem__) if found else None


def checks_for(data: dict[str, Any], prefixes: Sequence[str]) -> list[dict[str, Any]]:
    """Checks whose id is one of ``prefixes`` or starts with one of them plus '.'."""
    return [c for c in data.get("checks") or []
            if any(c.get("id") == p or str(c.get("id", "")).startswith(p + ".")
                   for p in prefixes)]


def step_checks(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per step key: its title, checks and worst status (None when no check covers it)."""
    out = {}
    for key, title, prefixes in STEPS:
        cks = checks_for(data, prefixes)
        out[key] = {"title": title, "checks": cks,
                    "status": worst_status(c.get("status", "") for c in cks)}
    return out


def headline(data: dict[str, Any]) -> str:
    """The verdict in one sentence: 'Decode, overhead-bound: GPU idle 98.6% of the window...'."""
    mode = (data.get("mode") or {}).get("value") or "unknown"
    bott = data.get("bottleneck") or {}
    value = bott.get("value") or "unknown"
    evidence = list(bott.get("evidence") or [])
    first = f"{mode.capitalize()} mode" if mode in ("unknown", "mixed") else mode.capitalize()
    kind = "bottleneck unknown" if value == "unknown" else f"{value}-bound"
    sentence = f"{first}, {kind}"
    if evidence:
        sentence += ": " + "; ".join(evidence[:2])
    return sentence.rstrip(".") + "."


def ordered_categories(shares: dict[str, Any]) -> list[tuple[str, float]]:
    """(category, share) in the fixed category order, unknown categories after, by name."""
    known = [c for c in CATEGORY_ORDER if c in shares]
    rest = sorted(c for c in shares if c not in CATEGORY_ORDER)
    rest_before_overhead = [c for c in known if c != "overhead"] + rest
    order = rest_before_overhead + (["overhead"] if "overhead" in shares else [])
    return [(c, float(shares[c] or 0.0)) for c in order]


def class_categories(data: dict[str, Any]) -> dict[str, str]:
    """class -> category: the breakdown's own map, then the hotspots (older reports)."""
    out = dict((data.get("breakdown") or {}).get("class_category") or {})
    for h in data.get("hotspots") or []:
        if h.get("class") and h.get("category"):
            out[h["class"]] = h["category"]
    return out


def class_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """breakdown.class_ns as rows, largest first: class, category, total_ns, share of busy."""
    bd = data.get("breakdown") or {}
    busy = bd.get("busy_ns") or 0
    cats = class_categories(data)
    rows = [{"class": k, "category": cats.get(k, "other"), "total_ns": int(v),
             "share": (v / busy) if busy else None}
            for k, v in (bd.get("class_ns") or {}).items()]
    rows.sort(key=lambda r: (-r["total_ns"], r["class"]))
    return rows


def options_text(options: dict[str, Any] | None) -> str:
    if not options:
        return "-"
    return ", ".join(f"{k}={v}" for k, v in sorted(options.items()))


def profiling_flags(data: dict[str, Any]) -> list[str]:
    """Profiler options that inflate host time ('record_shapes', 'with_stack') that were on."""
    opts = (data.get("source") or {}).get("options") or {}
    return [k for k in ("record_shapes", "with_stack", "profile_memory") if opts.get(k)]


def model_text(model: dict[str, Any] | None) -> str:
    if not model:
        return "-"
    keys = ("layers", "hidden", "heads", "kv_heads", "head_dim", "ffn", "vocab", "experts",
            "experts_per_tok", "dtype", "batch",
            "context", "tokens", "forwards", "phase")
    parts = [f"{k}={model[k]}" for k in keys if model.get(k) is not None]
    src = model.get("source")
    run = model.get("run_source")
    where = (f" (architecture from {src}, what ran from {run})" if run and run != "none"
             and run != src else f" (from {src})" if src else "")
    return ", ".join(parts) + where if parts else "-"


def overhead_items(data: dict[str, Any], micro: str = "us") -> list[tuple[str, str]]:
    """The overhead evidence as (label, formatted value) pairs, in reading order."""
    o = data.get("overhead") or {}

    def dur(v: Any) -> str:
        return fmt_ns(v, micro)

    items: list[tuple[str, str]] = []
    seen: set[str] = set()

    def add(label: str, key: str, fmt: Any) -> None:
        seen.add(key)
        if key in o and o[key] is not None:
            items.append((label, fmt(o[key])))

    add("overhead share", "overhead_share", fmt_pct)
    add("limit", "limit", lambda v: fmt_pct(v, 0))
    add("pathological above", "pathological", lambda v: fmt_pct(v, 0))
    add("kernels", "kernels", fmt_num)
    add("kernels per step", "kernels_per_step", fmt_num)
    add("launch calls", "launch_calls", fmt_num)
    add("launches per step", "launch_calls_per_step", fmt_num)
    add("mean launch API time", "launch_api_mean_ns", dur)
    add("mean kernel time", "mean_kernel_ns", dur)
    # the limit comes with the report (thresholds overhead.short_kernel_us; older: 10 us)
    seen.add("short_kernel_ns")
    short_us = float(o.get("short_kernel_ns") or 10_000) / 1e3
    add(f"short kernel share (< {short_us:g} {micro})", "short_kernel_share", fmt_pct)
    add("sync calls", "sync_calls", fmt_num)
    add("sync time", "sync_ns", dur)
    add("alloc calls", "alloc_calls", fmt_num)
    add("alloc time", "alloc_ns", dur)
    add("graph launches", "graph_launches", fmt_num)
    add("graph-replayed share of kernels", "graph_replayed_share", fmt_pct)
    for k in sorted(o):
        if k not in seen and isinstance(o[k], (int, float, str, bool)):
            items.append((k.replace("_", " "), fmt_num(o[k])))
    return items


def counts_lines(data: dict[str, Any]) -> list[str]:
    """Observed vs expected GEMM calls and where layers/forwards came from, as sentences."""
    kc = data.get("kernel_counts") or {}
    out = []
    obs, exp = kc.get("observed_gemm_calls"), kc.get("expected_gemm_calls")
    if obs is not None or exp is not None:
        diff = f" (difference {obs - exp:+d})" if isinstance(obs, int) and isinstance(
            exp, int) else ""
        out.append(f"GEMM calls: {fmt_num(obs)} observed, {fmt_num(exp)} expected{diff}")
    if kc.get("layers") is not None:
        src = kc.get("layers_source") or "?"
        inf = kc.get("layers_inferred_from")
        out.append(f"layers: {kc['layers']} ("
                   + (f"inferred from {inf})" if src == "inferred" and inf else
                      "inferred)" if src == "inferred" else f"from {src})"))
    st = kc.get("structure") or {}
    if st.get("description"):
        out.append(f"block structure ({st.get('evidence', '')}): {st['description']}")
        out.extend(str(n) for n in st.get("notes") or [])
    if kc.get("gemms_per_layer") is not None:
        per_fwd = fmt_num(kc.get("gemm_calls_per_forward"))
        phases = kc.get("phases") or {}
        if kc.get("gemm_calls_per_forward") is None and len(phases) > 1:
            # each phase's forwards have their own shapes: no average across phases
            per_fwd = ", ".join(f"{k} {fmt_num(v.get('gemm_calls_per_forward'))} "
                                f"({v.get('forwards')} forwards)" for k, v in phases.items())
        out.append(f"GEMMs per layer: {kc['gemms_per_layer']}, lm_head per forward: "
                   f"{fmt_num(kc.get('lm_head_per_forward'))}, observed per forward: {per_fwd}")
    if kc.get("forwards") is not None:
        out.append(f"forwards: {kc['forwards']} (from {kc.get('forwards_source') or '?'})")
    if kc.get("missing"):
        out.append(f"missing: {kc['missing']}")
    if kc.get("slow_layers"):
        out.append("slow layers: " + ", ".join(str(x) for x in kc["slow_layers"]))
    return out


def steps_with_ideal(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The steps joined with the speed-of-light ideal per step (by step index) if any."""
    sol = ((data.get("roofline") or {}).get("speed_of_light") or {})
    # older reports have no step index on these rows: join them by (phase, name)
    ideal = {s["step"] if "step" in s else (s.get("phase"), s.get("name")): s
             for s in sol.get("steps") or []}
    rows = []
    for s in data.get("steps") or []:
        m = ideal.get(s.get("step"), ideal.get((s.get("phase"), s.get("name"))))
        rows.append({**s, "ideal_ns": m.get("ideal_ns") if m else None,
                     "ratio": m.get("ratio") if m else None})
    return rows


# The batch a step annotation states (engines.py): shown when any step has one.
COMPOSITION_KEYS = ("prefill_tokens", "decode_tokens", "kv_tokens", "requests")
COMPOSITION_HEADERS = ("prefill tok", "decode tok", "KV tok", "requests", "engine")


def has_composition(rows: list[dict[str, Any]]) -> bool:
    """True when any step row states a batch composition."""
    return any(r.get(k) is not None for r in rows for k in COMPOSITION_KEYS)


def composition_cells(row: dict[str, Any]) -> tuple[str, ...]:
    """prefill/decode/KV tokens, requests and engine of one step row ('-' when unstated)."""
    return (*(fmt_num(row.get(k)) if row.get(k) is not None else "-" for k in COMPOSITION_KEYS),
            str(row.get("engine") or "-"))


def batch_line(steps: list[dict[str, Any]]) -> str:
    """What the step annotations say the batch was: one step's figures, else medians."""
    rows = [r for r in steps if any(r.get(k) is not None for k in COMPOSITION_KEYS)]
    if not rows:
        return ""

    def med(key: str) -> int | None:
        vals = sorted(int(r[key]) for r in rows if r.get(key) is not None)
        return vals[len(vals) // 2] if vals else None

    engines = sorted({str(r.get("engine")) for r in rows if r.get("engine")})
    n = len(rows)
    head = f"{n} {'/'.join(engines) or 'annotated'} step{'' if n == 1 else 's'}"
    head += ": " if n == 1 else ", median per step: "
    p, d, req, kv = med("prefill_tokens"), med("decode_tokens"), med("requests"), med("kv_tokens")
    parts = []
    if p is not None or d is not None:
        parts.append(" + ".join(f"{v} {k}" for v, k in ((p, "prefill"), (d, "decode"))
                                if v is not None) + " tokens")
    if req is not None:
        parts.append(f"{req} request{'' if req == 1 else 's'}")
    if kv is not None:
        parts.append(f"{kv} KV tokens read")
    return head + ", ".join(parts)


def roofline_rows(summary: dict[str, Any] | None) -> list[dict[str, Any]]:
    """roofline.summary per class as rows, 'overall' last."""
    if not summary:
        return []
    keys = sorted(k for k in summary if k != "overall") + (["overall"] if "overall" in summary
                                                           else [])
    return [{"class": k, **(summary[k] or {})} for k in keys if (summary[k] or {}).get("calls")]


SHAPE_ROWS = 20  # per-shape roofline rows shown in a report (the JSON has up to 300)


def shape_rows(points: list[dict[str, Any]] | None, limit: int = SHAPE_ROWS) -> list[dict[str, Any]]:
    """roofline.points as report rows, by time: phase, class, op, shape text, calls, time,
    intensity, achieved FLOP/s, efficiency (achieved / the roof at that intensity), bound."""
    rows = []
    for p in sorted(points or [], key=lambda r: -(r.get("time_ns") or 0))[:limit]:
        m, k, n = p.get("m"), p.get("k"), p.get("n")
        if p.get("op_class") == "attention":
            shape = f"Tq {fmt_num(m)} x Tk {fmt_num(n)}, d {fmt_num(k)}"
        else:
            shape = f"{fmt_num(m)} x {fmt_num(k)} x {fmt_num(n)}"
        rows.append({**p, "shape": shape})
    return rows


def shape_table_text(points: list[dict[str, Any]] | None, indent: str = "  ") -> list[str]:
    rows = shape_rows(points)
    if not rows:
        return []
    return ["", f"{indent}Per shape (M x K x N; median per call, top {len(rows)} by time):",
            *table(("phase", "class", "op", "shape", "calls", "time ms", "FLOP/byte",
                    "achieved FLOP/s", "of roof", "bound"),
                   [(r.get("phase") or "", r.get("op_class") or "", r.get("op_name") or "",
                     r["shape"], fmt_num(r.get("calls")), fmt_ms(r.get("time_ns")),
                     fmt_num(r.get("intensity")), fmt_si(r.get("achieved_flops_s"), "FLOP/s"),
                     fmt_pct(r.get("efficiency")), r.get("bound") or "") for r in rows],
                   right=(4, 5, 6, 7, 8), indent=indent)]


def sol_inputs_lines(sol: dict[str, Any] | None) -> list[str]:
    """One line per phase: what the speed of light assumed, and where each input came from."""
    out = []
    for name, p in sorted(((sol or {}).get("phases") or {}).items()):
        if p.get("available") is False or p.get("tokens") is None:
            continue
        src = p.get("sources") or {}
        out.append(
            f"{name}: {fmt_num(p.get('tokens'))} tokens ({fmt_num(p.get('batch'))} sequence(s) x "
            f"{fmt_num(p.get('query_tokens'))}; from {src.get('tokens', '?')}), context "
            f"{fmt_num(p.get('context_tokens'))} per sequence (from "
            f"{src.get('context_tokens', '?')}), {p.get('dtype') or '?'} (from "
            f"{src.get('dtype', '?')}), attention {p.get('attention') or '?'} "
            f"({src.get('attention', '?')}), lm_head on {fmt_num(p.get('lm_head_tokens'))} "
            f"token(s) ({src.get('lm_head_tokens', '?')}); {fmt_si(p.get('flops'), 'FLOP')} "
            f"(attention {fmt_si(p.get('attention_flops'), 'FLOP')}), "
            f"{fmt_si(p.get('bytes'), 'B')} (weights {fmt_si(p.get('weight_bytes'), 'B')}, KV read "
            f"{fmt_si(p.get('kv_read_bytes'), 'B')}, written {fmt_si(p.get('kv_write_bytes'), 'B')})"
            f" per step; {p.get('limit') or '?'}-limited; architecture from "
            f"{src.get('architecture', '?')}")
    return out


def device_word(data: dict[str, Any]) -> str:
    """'CPU' for a CPU-only trace (no GPU events), else 'GPU': labels say what was measured."""
    return "CPU" if (data.get("source") or {}).get("device") == "cpu" else "GPU"


COMM_HEADERS = ("collective", "calls", "time ms", "exposed ms", "overlapped ms", "mean msg",
                "bus bw", "of link")


def communication_rows(data: dict[str, Any]) -> list[tuple[str, ...]]:
    """One row per collective type of the communication section (empty without collectives)."""
    comm = data.get("communication") or {}
    link = comm.get("interconnect") or {}
    rows: list[tuple[str, ...]] = []
    for kind, v in (comm.get("by_type") or {}).items():
        rows.append((kind, str(v.get("calls", 0)), fmt_ms(v.get("total_ns")),
                     fmt_ms(v.get("exposed_ns")), fmt_ms(v.get("overlapped_ns")),
                     fmt_si(v.get("mean_message_bytes"), "B"),
                     fmt_si(v.get("busbw_bytes_per_s"), "B/s"),
                     fmt_pct(v.get("busbw_share")) if v.get("busbw_share") is not None
                     else "-"))
    if rows and link:
        rows.append((f"link: {link.get('link', '?')}", "", "", "", "", "",
                     fmt_si(link.get("bytes_per_s"), "B/s"), ""))
    return rows


def status_counts(data: dict[str, Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in data.get("checks") or []:
        out[c.get("status", "?")] = out.get(c.get("status", "?"), 0) + 1
    return out


# ---------------------------------------------------------------------------- text tables

def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], right: Sequence[int] = (),
          max_width: dict[int, int] | None = None, indent: str = "  ") -> list[str]:
    """A fixed-width table: header, dashes, rows; ``right`` columns right-aligned."""
    max_width = max_width or {}
    body = [[truncate(c, max_width[i]) if i in max_width else str(c) for i, c in enumerate(r)]
            for r in rows]
    widths = [len(h) for h in headers]
    for r in body:
        for i, c in enumerate(r):
            widths[i] = max(widths[i], len(c))

    def line(cells: Sequence[str]) -> str:
        out = [c.rjust(widths[i]) if i in right else c.ljust(widths[i])
               for i, c in enumerate(cells)]
        return (indent + "  ".join(out)).rstrip()

    rule = (indent + "  ".join("-" * w for w in widths)).rstrip()
    return [line(headers), rule, *map(line, body)]


def _section(title: str, status: str | None = None) -> list[str]:
    head = title + (f"  [{status.upper()}]" if status else "")
    return ["", head, "-" * len(head)]


def render(data: dict[str, Any]) -> str:
    """The full plain-text report: the five steps, steps, roofline, phases, advice, checks."""
    src = data.get("source") or {}
    mode = data.get("mode") or {}
    steps = step_checks(data)
    out = ["profdiag report", "===============",
           f"Trace:    {src.get('path', '-')} ({src.get('format', '?')})",
           f"Device:   {src.get('device') or '-'}",
           f"Options:  {options_text(src.get('options'))}",
           f"Model:    {model_text(data.get('model'))}",
           "", f"Verdict:  {headline(data)}"]
    if src.get("salvaged"):
        out.append("Note:     the trace was truncated and salvaged; numbers may be partial.")

    def summaries(key: str) -> None:
        for c in steps[key]["checks"]:
            out.append(f"  [{c.get('status', '?')}] {c.get('summary', '')}")

    # 1. mode
    out += _section("1. Mode", steps["mode"]["status"])
    out.append(f"  {mode.get('value', 'unknown')} (confidence {fmt_num(mode.get('confidence'))})")
    out += [f"  - {e}" for e in mode.get("evidence") or []]

    # 2. categories
    out += _section("2. Category breakdown", steps["categories"]["status"])
    summaries("categories")
    bd = data.get("breakdown") or {}
    cat_ns = bd.get("category_ns") or {}
    idle = bd.get("idle_ns")
    rows = []
    for cat, share in ordered_categories(data.get("categories") or {}):
        ns = (idle or 0) + cat_ns.get("overhead", 0) if cat == "overhead" else cat_ns.get(cat)
        rows.append((cat, fmt_pct(share), fmt_ms(ns)))
    out += ["", *table(("category", "share of window", "time ms"), rows, right=(1, 2))]
    crow = [(r["class"], r["category"], fmt_ms(r["total_ns"]), fmt_pct(r["share"]))
            for r in class_rows(data)]
    if crow:
        out += ["", *table(("class", "category", "busy ms", "share of busy"), crow,
                           right=(2, 3))]
    comm = communication_rows(data)
    if comm:
        out += ["", *table(COMM_HEADERS, comm, right=(1, 2, 3, 4, 5, 6, 7))]

    # 3. overhead
    out += _section("3. Overhead", steps["overhead"]["status"])
    summaries("overhead")
    items = overhead_items(data)
    if items:
        w = max(len(k) for k, _ in items)
        out += [""] + [f"  {k.ljust(w)}  {v}" for k, v in items]
    flags = profiling_flags(data)
    if flags:
        out.append(f"  Note: captured with {' and '.join(flags)}; host gaps may be inflated.")
    from .idle_view import text_block

    out += text_block(data)

    # 4. counts
    kc = data.get("kernel_counts") or {}
    out += _section("4. Kernel counts", steps["counts"]["status"])
    summaries("counts")
    out += [f"  {line}" for line in counts_lines(data)]
    if kc.get("by_shape"):
        out += ["", *table(("signature", "role", "kernel", "calls", "per forward", "total ms"),
                           [(r.get("signature", ""),
                             str(r.get("role") or "") + (f" ({r['phase']})" if r.get("phase")
                                                        not in (None, "", "all") else ""),
                             r.get("kernel", ""), r.get("calls", ""),
                             fmt_num(r.get("calls_per_forward")), fmt_ms(r.get("total_ns")))
                            for r in kc["by_shape"]], right=(3, 4, 5),
                           max_width={0: 50, 1: 30, 2: 50})]
    if kc.get("extra"):
        out += ["", "  Extra-call suspects:"]
        out += [f"  - {truncate(r.get('signature', ''), 80)}: {fmt_num(r.get('calls'))} calls; "
                f"{r.get('reason', '')}" for r in kc["extra"]]
    if kc.get("per_layer"):
        slow = set(kc.get("slow_layers") or [])
        fw = kc.get("forwards")
        out += ["", f"  Per layer: totals over all {fmt_num(fw) + ' ' if fw else ''}forwards",
                *table(("layer", f"{device_word(data)} ms (total)", "GEMM calls (total)", ""),
                           [(r.get("layer"), fmt_ms(r.get("gpu_ns")), r.get("gemm_calls", ""),
                             "slow" if r.get("layer") in slow else "")
                            for r in kc["per_layer"]], right=(0, 1, 2))]

    # 5. hotspots
    out += _section("5. Hotspots", steps["hotspots"]["status"])
    summaries("hotspots")
    hot = data.get("hotspots") or []
    if hot:
        out += table(("#", "name", "class", "calls", "total ms", "mean us", "share", "note"),
                     [(i + 1, short_kernel_name(h.get("name", "")), h.get("class", ""),
                       h.get("calls", ""),
                       fmt_ms(h.get("total_ns")), fmt_us(h.get("mean_ns")),
                       fmt_pct(h.get("share")), h.get("note") or "")
                      for i, h in enumerate(hot)], right=(0, 3, 4, 5, 6),
                     max_width={1: 60, 7: 70})
    else:
        out.append("  (no kernels)")

    # steps
    srows = steps_with_ideal(data)
    if srows:
        out += _section("Steps")
        comp = has_composition(srows)
        out += table(("step", "name", "phase", "wall ms", f"{device_word(data)} busy ms", "busy",
                      "kernels", "ideal ms", "x ideal", *(COMPOSITION_HEADERS if comp else ())),
                     [(s.get("step", ""), s.get("name", ""), s.get("phase", ""),
                       fmt_ms(s.get("wall_ns")), fmt_ms(s.get("gpu_busy_ns")),
                       fmt_pct(s["gpu_busy_ns"] / s["wall_ns"]) if s.get("wall_ns") and
                       s.get("gpu_busy_ns") is not None else "-", s.get("kernels", "-"),
                       fmt_ms(s.get("ideal_ns")), fmt_num(s.get("ratio")),
                       *(composition_cells(s) if comp else ()))
                      for s in srows], right=(0, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12),
                     max_width={1: 40})

    out += _roofline_text(data)
    out += _phases_text(data)

    recs = data.get("recommendations") or []
    out += _section("Recommendations")
    if not recs:
        out.append("  (none)")
    for i, r in enumerate(recs, 1):
        out.append(f"  {i}. {r.get('title', '')}"
                   + (f" [{r['bottleneck']}]" if r.get("bottleneck") else ""))
        if r.get("evidence"):
            out.append(f"     Evidence: {r['evidence']}")
        if r.get("advice"):
            out.append(f"     Advice:   {r['advice']}")
        for k in r.get("kernels") or []:
            out.append(f"     - {truncate(k, 100)}")

    warns = data.get("warnings") or []
    out += _section(f"Warnings ({len(warns)})")
    out += [f"  - {w}" for w in warns] or ["  (none)"]

    if data.get("extras"):
        out += _section("Extras")
        out.append("  " + ", ".join(sorted(data["extras"])) + " (figures in the JSON output)")

    out += _section("Checks")
    out += table(("id", "status", "summary"),
                 [(c.get("id", ""), c.get("status", ""), c.get("summary", ""))
                  for c in data.get("checks") or []])
    out += ["", f"schema_version {data.get('schema_version', '?')}"]
    return "\n".join(out) + "\n"


def _roofline_text(data: dict[str, Any]) -> list[str]:
    roof = data.get("roofline")
    out = _section("Roofline")
    if not roof:
        return out + ["  not computed"]
    if not roof.get("available"):
        return out + [f"  not available: {roof.get('reason', 'no reason given')}"]
    gpu = roof.get("gpu") or {}
    out.append(f"  GPU: {gpu.get('name', '?')}: {fmt_si(gpu.get('bandwidth_bytes_s'), 'B/s')}, "
               f"{fmt_si(gpu.get('peak_bf16_flops_s'), 'FLOP/s')} bf16, ridge "
               f"{fmt_num(gpu.get('ridge_bf16'))} FLOP/byte")
    if roof.get("reason"):
        out.append(f"  {roof['reason']}")
    rows = roofline_rows(roof.get("summary"))
    if rows:
        out += ["", *table(("class", "calls", "time ms", "FLOP/byte", "achieved FLOP/s",
                            "achieved B/s", "median eff.", "mem-bound time"),
                           [(r["class"], fmt_num(r.get("calls")), fmt_ms(r.get("time_ns")),
                             fmt_num(r.get("intensity")),
                             fmt_si(r.get("achieved_flops_s"), "FLOP/s"),
                             fmt_si(r.get("achieved_bytes_s"), "B/s"),
                             fmt_pct(r.get("median_efficiency")),
                             fmt_pct(r.get("memory_bound_time_share")))
                            for r in rows], right=(1, 2, 3, 4, 5, 6, 7))]
    out += shape_table_text(roof.get("points"))
    out += _sol_text(roof.get("speed_of_light"))
    return out


def _sol_text(sol: dict[str, Any] | None) -> list[str]:
    if not sol:
        return []
    if not sol.get("available"):
        return ["", f"  Speed of light: not available: {sol.get('reason', '')}"]
    rows = []
    for name, p in sorted((sol.get("phases") or {}).items()):
        if p.get("available") is False:
            rows.append((name, "-", "-", "-", "-", "-", "-", p.get("reason", "")))
            continue
        rows.append((name, fmt_num(p.get("steps")), fmt_ns(p.get("median_measured_ns")),
                     fmt_ns(p.get("ideal_ns")), f"{fmt_num(p.get('median_ratio'))}x",
                     fmt_num(p.get("tokens_per_s")), fmt_num(p.get("tokens_per_s_ideal")),
                     p.get("limit", "")))
    if not rows:
        return []
    return ["", "  Speed of light per phase (median step; ideal = max(FLOPs / peak, bytes / "
            "bandwidth)):",
            *table(("phase", "steps", "median step", "ideal", "ratio", "tokens/s",
                    "ideal tokens/s", "limit"), rows, right=(1, 2, 3, 4, 5, 6)),
            *[f"  {line}" for line in sol_inputs_lines(sol)]]


def _phases_text(data: dict[str, Any]) -> list[str]:
    phases = data.get("phases") or []
    if not phases:
        return []
    out = _section("Phases")
    out += table(("phase", "mode", "steps", "median step", "overhead", "bottleneck",
                  "categories"),
                 [(p.get("name", ""), f"{(p.get('mode') or {}).get('value', '?')} "
                   f"({fmt_num((p.get('mode') or {}).get('confidence'))})",
                   fmt_num(p.get("steps")), fmt_ns(p.get("median_step_ns")),
                   fmt_pct(p.get("overhead_share")),
                   (p.get("bottleneck") or {}).get("value", "?"),
                   " ".join(f"{c} {fmt_pct(s, 0)}"
                            for c, s in ordered_categories(p.get("categories") or {})))
                  for p in phases], right=(2, 3, 4))
    return out


# ---------------------------------------------------------------------------- summary

def category_bar(shares: dict[str, Any], width: int) -> str:
    """A one-line bar, one letter per category (C compute, M memory, ... '.' overhead)."""
    cats = ordered_categories(shares)
    total = sum(s for _, s in cats) or 1.0
    cells = []
    acc = 0.0
    done = 0
    for cat, s in cats:
        acc += s / total
        upto = round(acc * width)
        cells.append(CATEGORY_LETTER.get(cat, "?") * (upto - done))
        done = upto
    return "[" + "".join(cells).ljust(width) + "]"


def _wrap(parts: Sequence[str], indent: str, width: int) -> list[str]:
    """Join ``parts`` with two spaces into lines of at most ``width`` characters."""
    lines: list[str] = []
    cur = ""
    for p in parts:
        if cur and len(indent) + len(cur) + 2 + len(p) > width:
            lines.append(indent + cur)
            cur = p
        else:
            cur = f"{cur}  {p}" if cur else p
    if cur:
        lines.append(indent + cur)
    return lines


def summary(data: dict[str, Any], width: int = 100) -> str:
    """A short terminal summary (about 20 lines, each at most ``width`` characters)."""
    src = data.get("source") or {}
    mode = data.get("mode") or {}
    bott = data.get("bottleneck") or {}
    steps = step_checks(data)
    path = str(src.get("path") or "-").rsplit("/", 1)[-1]
    device = src.get("device") or "unknown device"
    lines = [f"profdiag: {path} ({src.get('format', '?')}, {device})"]
    lines.append(f"Mode:        {mode.get('value', 'unknown')} "
                 f"(confidence {fmt_num(mode.get('confidence'))})")
    batch = batch_line(data.get("steps") or [])
    if batch:
        lines.append(truncate(f"Batch:       {batch}", width))
    ev = (bott.get("evidence") or [""])[0]
    lines.append(f"Bottleneck:  {bott.get('value', 'unknown')}" + (f": {ev}" if ev else ""))
    shares = data.get("categories") or {}
    if shares:
        lines.append(f"Categories:  {category_bar(shares, max(10, min(50, width - 16)))}")
        parts = [f"{CATEGORY_LETTER.get(c, '?')} {c} {fmt_pct(s)}"
                 for c, s in sorted(ordered_categories(shares), key=lambda cs: -cs[1])]
        lines += _wrap(parts, "             ", width)
    o = data.get("overhead") or {}
    ost = steps["overhead"]["status"]
    if "overhead_share" in o:
        per_phase = [f"{p.get('name')} {fmt_pct(p.get('overhead_share'))}"
                     for p in data.get("phases") or [] if p.get("overhead_share") is not None]
        lines.append(f"Overhead:    {fmt_pct(o.get('overhead_share'))} of the window"
                     + (f"; per phase: {', '.join(per_phase)} (each against its own limit)"
                        if per_phase else f" (limit {fmt_pct(o.get('limit'), 0)})")
                     + (f" [{ost}]" if ost else ""))
    from .idle_view import summary_line

    lines += summary_line(data)
    kc = data.get("kernel_counts") or {}
    cst = steps["counts"]["status"]
    lines.append(f"Kernels:     {fmt_num(kc.get('observed_gemm_calls'))} GEMM calls observed / "
                 f"{fmt_num(kc.get('expected_gemm_calls'))} expected"
                 + (f" [{cst}]" if cst else ""))
    sol = ((data.get("roofline") or {}).get("speed_of_light") or {})
    for name, p in sorted((sol.get("phases") or {}).items()):
        if p.get("ideal_ns") is None:
            continue
        lines.append(f"Ideal step:  {name} {fmt_ns(p['ideal_ns'])} ({p.get('limit')}, "
                     f"{fmt_num(p.get('tokens'))} tok); measured "
                     f"{fmt_ns(p.get('median_measured_ns'))} ({fmt_num(p.get('median_ratio'))}x), "
                     f"{fmt_num(p.get('tokens_per_s'))} tok/s")
    hot = (data.get("hotspots") or [])[:5]
    if hot:
        lines.append("Top hotspots:")
        name_w = max(20, width - 40)
        for h in hot:
            lines.append(f"  {fmt_pct(h.get('share')):>6}  {fmt_ms(h.get('total_ns')):>9} ms  "
                         f"{h.get('calls', 0):>6}x  "
                         f"{truncate(short_kernel_name(h.get('name', '')), name_w)}")
    recs = (data.get("recommendations") or [])[:3]
    if recs:
        lines.append("Recommendations:")
        lines += [f"  {i}. {r.get('title', '')}" for i, r in enumerate(recs, 1)]
    counts = status_counts(data)
    lines.append(f"Warnings: {len(data.get('warnings') or [])}   Checks: " + ", ".join(
        f"{counts[s]} {s}" for s in ("fail", "warn", "pass", "skip") if s in counts))
    return "\n".join(truncate(line, width) for line in lines) + "\n"
