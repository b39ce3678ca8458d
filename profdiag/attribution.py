"""Why a step got slower or faster: attribute the change of each phase's median step to causes.

Both sides come from the ``step_detail`` of a diagnosis (a trace or a stored JSON report give
the same figures): the median step's busy time split over kernel signatures and its idle time
split by cause. For one phase the change of the median step time is

    delta = sum over signatures (new_ns - base_ns) + sum over idle causes (new - base)

and each signature's change is split once more into a *count* part (calls added or removed,
priced at the baseline's time per call) and a *kernel* part (the same calls running faster or
slower, or another kernel behind the same op). Rows are emitted so that they add up exactly to
``delta_ns``: the largest signature changes as their own rows, the rest of each class as one
``class`` row, every idle cause as one ``idle_cause`` row.

Signatures are aligned by launching op and input shapes when both sides link kernels to ops
(so FlashInfer -> Triton behind the same attention op shows as one kernel change); otherwise
(CUDA-graph replays carry no op links) by kernel name, with the baseline's class kept so that a
kernel classified by name alone on one side does not appear to move between classes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

ATTRIBUTION_VERSION = 1
MAX_KERNEL_ROWS = 8  # signature rows per phase; the rest folds into its class
MIN_ROW_SHARE = 0.02  # a signature needs 2% of |delta| to get a row of its own
MIN_ROW_NS = 1.0


def _num(x: Any) -> float:
    return float(x) if isinstance(x, (int, float)) and x == x else 0.0


def _linked_share(kernels: list[Mapping[str, Any]]) -> float:
    total = sum(_num(k.get("ns")) for k in kernels)
    linked = sum(_num(k.get("ns")) for k in kernels if k.get("op"))
    return linked / total if total else 0.0


def _short(name: str, width: int = 60) -> str:
    from .formatting import short_kernel_name, truncate

    return truncate(short_kernel_name(name), width)


def _group(kernels: list[Mapping[str, Any]],
           by_op: bool) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Signature -> {calls, ns, class, category, kernels: {name: ns}}.

    A signature is ("op", op, shapes) when aligning by op and the kernel has one, else
    ("kernel", name, "").
    """
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    for k in kernels:
        op = str(k.get("op") or "")
        name = str(k.get("kernel") or "")
        key = ("op", op, str(k.get("shapes") or "")) if by_op and op else ("kernel", name, "")
        row = out.setdefault(key, {"calls": 0.0, "ns": 0.0, "class": str(k.get("class") or ""),
                                   "category": str(k.get("category") or ""), "kernels": {}})
        row["calls"] += _num(k.get("calls"))
        row["ns"] += _num(k.get("ns"))
        row["kernels"][name] = row["kernels"].get(name, 0.0) + _num(k.get("ns"))
    return out


def _merge_shape_changes(gb: dict[tuple[str, str, str], dict[str, Any]],
                         gn: dict[tuple[str, str, str], dict[str, Any]]) -> None:
    """Signatures of one op found on one side only (the KV length grows every decode step, so
    attention's shapes differ between two median steps) are pooled per op on both sides."""
    only_b = {k for k in gb if k not in gn and k[0] == "op"}
    only_n = {k for k in gn if k not in gb and k[0] == "op"}
    for op in {k[1] for k in only_b} & {k[1] for k in only_n}:
        for table, keys in ((gb, only_b), (gn, only_n)):
            pooled: dict[str, Any] | None = None
            for k in sorted(x for x in keys if x[1] == op):
                row = table.pop(k)
                if pooled is None:
                    pooled = {**row, "kernels": dict(row["kernels"])}
                    continue
                pooled["calls"] += row["calls"]
                pooled["ns"] += row["ns"]
                for name, ns in row["kernels"].items():
                    pooled["kernels"][name] = pooled["kernels"].get(name, 0.0) + ns
            if pooled is not None:
                table[("op", op, "(shapes vary)")] = pooled


def _main_kernel(row: dict[str, Any] | None) -> str | None:
    kernels = (row or {}).get("kernels") or {}
    return max(kernels.items(), key=lambda kv: kv[1])[0] if kernels else None


def _label(key: tuple[str, str, str], b: dict[str, Any] | None,
           n: dict[str, Any] | None) -> str:
    kind, what, shapes = key
    if kind == "kernel":
        return _short(what)
    label = f"{what} {shapes}" if shapes else what
    # the same op running another kernel (a backend switch, a graph capture)
    kb, kn = _main_kernel(b), _main_kernel(n)
    if kb and kn and kb != kn:
        return f"{label} ({_short(kb, 40)} -> {_short(kn, 40)})"
    return label


def _divisor(phase: str, data: Mapping[str, Any], detail: Mapping[str, Any]) -> int | None:
    """Prefill tokens of the median step(s) (for per-token prefill figures), when known."""
    if phase != "prefill":
        return None
    picks = set(detail.get("steps") or [])
    toks = [r.get("prefill_tokens") for r in data.get("steps") or []
            if r.get("step") in picks and isinstance(r.get("prefill_tokens"), int)]
    if toks and len(toks) == len(picks):
        return max(round(sum(toks) / len(toks)), 1)
    from .gate import prefill_tokens

    return prefill_tokens(data)


def attribute_phase(phase: str, base: Mapping[str, Any], new: Mapping[str, Any],
                    db: Mapping[str, Any], dn: Mapping[str, Any]) -> dict[str, Any]:
    """The attribution of one phase (see the module docstring); ``db``/``dn`` its details."""
    tb, tn = _divisor(phase, base, db), _divisor(phase, new, dn)
    if tb and tn:
        div_b, div_n, unit = float(tb), float(tn), "per prefill token"
    else:
        div_b = div_n = 1.0
        unit = f"per {phase} step" if phase in ("prefill", "decode", "mixed") else "per step"
    kb_list, kn_list = list(db.get("kernels") or []), list(dn.get("kernels") or [])
    by_op = _linked_share(kb_list) > 0.5 and _linked_share(kn_list) > 0.5
    gb, gn = _group(kb_list, by_op), _group(kn_list, by_op)
    if by_op:
        _merge_shape_changes(gb, gn)
    base_ns = _num(db.get("wall_ns")) / div_b
    new_ns = _num(dn.get("wall_ns")) / div_n
    delta = new_ns - base_ns

    sigs = []
    reclassified = []
    for key in set(gb) | set(gn):
        b, n = gb.get(key), gn.get(key)
        nsb = b["ns"] / div_b if b else 0.0
        nsn = n["ns"] / div_n if n else 0.0
        cb = b["calls"] / div_b if b else 0.0
        cn = n["calls"] / div_n if n else 0.0
        if b and n and b["calls"] > 0:
            count_part = (cn - cb) * (nsb / cb) if abs(cn - cb) > 1e-9 else 0.0
        else:
            count_part = nsn - nsb  # added or removed outright
        cls = (b or n or {}).get("class", "")
        if b and n and b["class"] != n["class"]:
            reclassified.append({"what": _label(key, b, n), "base_class": b["class"],
                                 "new_class": n["class"]})
        sigs.append({"key": key, "label": _label(key, b, n), "class": cls,
                     "category": (b or n or {}).get("category", ""), "count": count_part,
                     "kernel": (nsn - nsb) - count_part, "calls_base": cb, "calls_new": cn,
                     "added": b is None, "removed": n is None})

    floor = max(abs(delta) * MIN_ROW_SHARE, MIN_ROW_NS)
    rows: list[dict[str, Any]] = []
    rest: dict[str, float] = {}

    def add(what: str, kind: str, ns: float, **extra: Any) -> None:
        rows.append({"what": what, "kind": kind, "delta_ns": ns, **extra})

    count_rows = sorted((s for s in sigs if abs(s["count"]) >= floor),
                        key=lambda s: -abs(s["count"]))[:MAX_KERNEL_ROWS]
    for s in count_rows:
        if s["added"]:
            what = f"{s['label']}: added ({s['calls_new']:g} calls {unit})"
        elif s["removed"]:
            what = f"{s['label']}: removed ({s['calls_base']:g} calls {unit})"
        else:
            what = (f"{s['label']}: {s['calls_base']:g} -> {s['calls_new']:g} calls {unit}")
        add(what, "count", s["count"], **{"class": s["class"]})
        s["count"] = 0.0
    kernel_rows = sorted((s for s in sigs if abs(s["kernel"]) >= floor),
                         key=lambda s: -abs(s["kernel"]))[:MAX_KERNEL_ROWS]
    for s in kernel_rows:
        add(s["label"], "kernel", s["kernel"], **{"class": s["class"]})
        s["kernel"] = 0.0
    for s in sigs:
        left = s["count"] + s["kernel"]
        if left:
            rest[s["class"] or "unclassified"] = rest.get(s["class"] or "unclassified", 0) + left
    shown_classes = {r.get("class") for r in rows}
    for cls, ns in rest.items():
        if abs(ns) < 0.05:
            continue
        what = f"{cls} (other kernels)" if cls in shown_classes else cls
        add(what, "class", ns, **{"class": cls})
    ib, inew = db.get("idle") or {}, dn.get("idle") or {}
    small, n_small = 0.0, 0
    for cause in sorted(set(ib) | set(inew)):
        ns = _num(inew.get(cause)) / div_n - _num(ib.get(cause)) / div_b
        if abs(ns) >= floor:
            add(f"idle: {cause}", "idle_cause", ns)
        elif abs(ns) >= 0.05:
            small, n_small = small + ns, n_small + 1
    if n_small:
        add(f"idle: {n_small} smaller cause{'s' if n_small > 1 else ''}", "idle_cause", small)
    rows.sort(key=lambda r: (-abs(r["delta_ns"]), r["what"]))
    for r in rows:
        r["delta_ns"] = round(r["delta_ns"], 1)
        r["share_of_delta"] = round(r["delta_ns"] / delta, 4) if delta else None
    change = delta / base_ns * 100 if base_ns else None
    return {"phase": phase, "unit": unit, "aligned_by": "op+shapes" if by_op else "kernel name",
            "base_ns": round(base_ns, 1), "new_ns": round(new_ns, 1),
            "delta_ns": round(delta, 1), "change_pct": None if change is None else round(change, 2),
            "base_steps": list(db.get("steps") or []), "new_steps": list(dn.get("steps") or []),
            "rows": rows, "reclassified": sorted(reclassified, key=lambda r: r["what"]),
            "sentence": sentence(phase, unit, delta, change, rows)}


def sentence(phase: str, unit: str, delta: float, change: float | None,
             rows: Sequence[Mapping[str, Any]], top: int = 3) -> str:
    """'decode median step -95.6% (-72.54 ms per decode step): idle: ... -44.1 ms, ...'."""
    from .formatting import fmt_ns

    sign = "+" if delta >= 0 else "-"
    head = (f"{phase} median step {change:+.1f}% ({sign}{fmt_ns(abs(delta))} {unit})"
            if change is not None else f"{phase} median step {sign}{fmt_ns(abs(delta))} {unit}")
    parts = [f"{r['what']} {'+' if r['delta_ns'] >= 0 else '-'}{fmt_ns(abs(r['delta_ns']))}"
             for r in rows[:top]]
    return head + (": " + ", ".join(parts) if parts else "")


def attribute(base: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """Attribution of every phase present in both diagnosis dicts (their ``step_detail``)."""
    sb, sn = base.get("step_detail") or {}, new.get("step_detail") or {}
    phases = sorted(set(sb) & set(sn))
    out: dict[str, Any] = {"version": ATTRIBUTION_VERSION, "phases": []}
    if not phases:
        missing = [side for side, d in (("base", sb), ("new", sn)) if not d]
        out["reason"] = ("no phase with step ranges in both profiles" if not missing else
                         f"no step detail in the {' and '.join(missing)} profile (a report "
                         "written before profdiag 0.2, or a trace without step ranges)")
        return out
    out["phases"] = [attribute_phase(p, base, new, sb[p], sn[p]) for p in phases]
    return out


def top_contributors(att: Mapping[str, Any], phase: str, top: int = 3) -> str:
    """'attention +0.9 ms (flash -> triton), idle: ... +0.3 ms' for one phase, or ''."""
    from .formatting import fmt_ns

    for p in att.get("phases") or []:
        if p["phase"] == phase:
            return ", ".join(f"{r['what']} {'+' if r['delta_ns'] >= 0 else '-'}"
                             f"{fmt_ns(abs(r['delta_ns']))}" for r in p["rows"][:top])
    return ""
