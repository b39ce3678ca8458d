"""The bottleneck verdict and the recommendations tied to it (advice text in rules/)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from .. import _toml as toml
from ..rules_path import rules_dir
from ..thresholds import Thresholds, load
from .hotspots import LAUNCH_BOUND_KINDS
from .model import Breakdown, Recommendation, Verdict

_COMPUTE_CLASSES = ("gemm", "gemm_reduce", "attention")
_BANDWIDTH_CLASSES = ("gemv", "kv_cache", "copy", "memcpy", "memset", "embedding")


@lru_cache(maxsize=1)
def advice() -> dict[str, dict[str, str]]:
    """Recommendation texts from rules/advice.toml, flattened to 'group.name' keys."""
    data = toml.loads((rules_dir() / "advice.toml").read_text(encoding="utf-8"))
    return {f"{g}.{k}": v for g, items in data.items() for k, v in items.items()}


def bottleneck(bd: Breakdown, mode: str, overhead_share: float, overhead_limit: float,
               median_m: int | None, prefill_min_m: int,
               compute_share_min: float | None = None) -> Verdict:
    """overhead when the idle share breaks the mode's limit; else compute vs memory."""
    if bd.busy_ns == 0:
        return Verdict("unknown", ["no device busy time"])
    if overhead_share > overhead_limit:
        return Verdict("overhead", [
            f"GPU idle {overhead_share:.1%} of the window > {overhead_limit:.0%} limit for {mode}",
            f"GPU busy only {bd.busy_share:.1%} of the window"])
    cls = bd.class_ns
    gemm_big = median_m is None or median_m >= prefill_min_m
    # Compute-category time, less the GEMMs that are skinny (weight-streaming, bandwidth-bound).
    skinny = cls.get("gemv", 0) + (0 if (gemm_big and mode != "decode") else
                                   cls.get("gemm", 0) + cls.get("gemm_reduce", 0))
    compute_ns = bd.category_ns.get("compute", 0) - skinny
    share = compute_ns / bd.busy_ns
    evidence = [f"GEMM, attention and other math is {share:.0%} of busy time"]
    if median_m is not None:
        evidence.append(f"median GEMM M = {median_m} "
                        f"({'>=' if median_m >= prefill_min_m else '<'} {prefill_min_m})")
    if mode == "decode" or not gemm_big:
        gemv = (cls.get("gemv", 0) + cls.get("gemm", 0) + cls.get("gemm_reduce", 0)) / bd.busy_ns
        bw = sum(cls.get(c, 0) for c in _BANDWIDTH_CLASSES if c != "gemv") / bd.busy_ns
        evidence = evidence[1:]
        if gemv:
            evidence.insert(0, f"decode GEMMs/GEMVs (M small: weights streamed per token) are "
                               f"{gemv:.0%} of busy time: bandwidth-bound")
        if bw:
            evidence.append(f"KV-cache, copy and transfer kernels are {bw:.0%} of busy time")
        return Verdict("memory", evidence or ["decode: one token per sequence per weight pass"])
    if compute_share_min is None:
        compute_share_min = load().verdict.compute_share_min
    if share >= compute_share_min:
        return Verdict("compute", evidence)
    bw = sum(cls.get(c, 0) for c in _BANDWIDTH_CLASSES) + sum(
        v for k, v in bd.category_ns.items() if k in ("elementwise", "normalization"))
    evidence.append(f"bandwidth-bound kernels (copies, elementwise, norms, KV) are "
                    f"{bw / bd.busy_ns:.0%} of busy time")
    return Verdict("memory", evidence)


def _low_precision(counts: dict[str, Any], share_min: float) -> str:
    """'GEMMs run MXFP4 (88% of GEMM time) ...' when most GEMM time is already below 16 bits."""
    prec = counts.get("gemm_precision") or {}
    if prec.get("low_precision_share", 0) < share_min:
        return ""
    shares = prec["shares"]
    low = [(k, v) for k, v in shares.items() if k not in ("unmarked",)]
    what = ", ".join(f"{k.upper()} ({v:.0%} of GEMM time)" for k, v in low)
    rest = shares.get("unmarked", 0.0)
    return (f"the GEMMs already run {what}"
            + (f"; the other {rest:.0%} (bf16/fp16: attention projections, router, lm_head) "
               "are what is left to quantize" if rest else ""))


def _separate_projections(counts: dict[str, Any]) -> str:
    """Evidence that the trace runs separate q/k/v or gate/up GEMMs, or ''."""
    st = counts.get("structure") or {}
    parts = []
    if st.get("fused_qkv") is False:
        parts.append("separate q, k and v projections")
    if st.get("fused_gate_up") is False:
        parts.append("separate gate and up projections")
    if not parts:
        return ""
    return (f"the trace runs {' and '.join(parts)} ({counts.get('gemms_per_layer')} GEMMs per "
            "layer: " + st.get("description", "") + ")")


def _rec(key: str, evidence: str, kernels: tuple[str, ...] = (),
         mode: str = "") -> Recommendation:
    a = advice()[key]
    # A card may word its advice for a phase (advice_prefill): the default speaks of decode.
    text = a.get(f"advice_{mode}", a["advice"]) if mode else a["advice"]
    return Recommendation(id=key, title=a["title"], evidence=evidence, advice=text,
                          kernels=kernels, bottleneck=a.get("bottleneck", ""))


def recommendations(verdict: str, bd: Breakdown, ov: dict[str, Any], options: dict[str, Any],
                    counts: dict[str, Any], hot: list[dict[str, Any]], median_m: int | None,
                    overhead_share: float, mode: str,
                    limits: Thresholds | None = None) -> list[Recommendation]:
    """Recommendations for the verdict's class, each with the numbers behind it.

    Each fires on a share in thresholds [verdict] (``limits``; the shipped ones when None)."""
    t = limits if limits is not None else load()
    lim = t.verdict
    short_us = t.overhead.short_kernel_us
    recs: list[Recommendation] = []
    busy = bd.busy_ns or 1
    # the launch-bound hotspots ("called often" or "short kernel" notes), by the note's kind
    short_names = tuple(h["name"] for h in hot
                        if h.get("_note_kind") in LAUNCH_BOUND_KINDS)[:3]
    if verdict == "overhead":
        if ov.get("graph_replayed_share", 0) < lim.graph_replayed_share_max:
            recs.append(_rec("overhead.cuda_graphs",
                             f"GPU idle {overhead_share:.0%} of the window; "
                             f"{ov.get('launch_calls_per_step') or ov['launch_calls']} launches per step, "
                             f"mean kernel {(ov['mean_kernel_ns'] or 0) / 1000:.1f} us",
                             short_names, mode=mode))
        if ov["short_kernel_share"] >= lim.short_kernel_share_min:
            recs.append(_rec("overhead.fusion",
                             f"{ov['short_kernel_share']:.0%} of {ov['kernels']} kernels run "
                             f"< {short_us:g} us; {ov.get('kernels_per_step') or ov['kernels']} kernels per step",
                             short_names))
        if ov["sync_calls"] and ov["sync_ns"] > lim.sync_window_share_min * bd.window_ns:
            recs.append(_rec("overhead.sync", f"{ov['sync_calls']} synchronising calls take "
                             f"{ov['sync_ns'] / 1e6:.2f} ms ({ov['sync_ns'] / bd.window_ns:.0%} of the window)"))
        if ov["alloc_calls"]:
            recs.append(_rec("overhead.alloc", f"{ov['alloc_calls']} device allocation calls in the "
                             f"window ({ov['alloc_ns'] / 1e6:.2f} ms)"))
        profiled = [k for k in ("record_shapes", "with_stack") if options.get(k)]
        if profiled:
            recs.append(_rec("overhead.profiling", f"trace captured with {', '.join(profiled)}; "
                             f"GPU busy {bd.busy_share:.1%} of the window"))
    elif verdict == "memory":
        gem = sum(bd.class_ns.get(c, 0) for c in ("gemv", "gemm", "gemm_reduce")) / busy
        top = tuple(h["name"] for h in hot if h["class"] in ("gemv", "gemm"))[:3]
        low = _low_precision(counts, lim.low_precision_share_min)
        if low:
            recs.append(_rec("memory.already_quantized", f"weight GEMMs/GEMVs are {gem:.0%} of "
                             f"busy time in {mode}; {low}", top))
        else:
            recs.append(_rec("memory.quantize", f"weight GEMMs/GEMVs are {gem:.0%} of busy time "
                             f"in {mode} (bytes-bound)", top))
        if median_m is not None and median_m < 64:
            recs.append(_rec("memory.batch", f"median GEMM M = {median_m} rows per weight pass"))
        kv = sum(bd.class_ns.get(c, 0) for c in ("attention", "kv_cache")) / busy
        if kv >= lim.kv_share_min:
            top_attn = tuple(h["name"] for h in hot if h["class"] in ("attention", "kv_cache"))[:3]
            recs.append(_rec("memory.kv_layout", f"attention + KV cache are {kv:.0%} of busy time",
                             top_attn))
        ew = sum(bd.category_ns.get(c, 0) for c in ("elementwise", "normalization")) / busy + sum(
            bd.class_ns.get(c, 0) for c in ("copy", "memcpy", "memset")) / busy
        if ew >= lim.elementwise_share_min:
            recs.append(_rec("memory.elementwise", f"elementwise, norm and copy kernels are "
                             f"{ew:.0%} of busy time"))
    elif verdict == "compute":
        g = (bd.class_ns.get("gemm", 0) + bd.class_ns.get("gemm_reduce", 0)) / busy
        top_gemms = tuple(h["name"] for h in hot if h["class"] == "gemm")[:3]
        recs.append(_rec("compute.gemm_tiling", f"GEMMs are {g:.0%} of busy time", top_gemms))
        att = (bd.class_ns.get("attention", 0) + bd.class_ns.get("softmax", 0)) / busy
        if att >= lim.attention_share_min:
            recs.append(_rec("compute.attention", f"attention + softmax are {att:.0%} of busy time"))
        low = _low_precision(counts, lim.low_precision_share_min)
        if not low:
            recs.append(_rec("compute.fp8", f"GEMMs are {g:.0%} of busy time at M = {median_m}"))
    diff = (counts.get("observed_gemm_calls") or 0) - (counts.get("expected_gemm_calls") or 0)
    if counts.get("expected_gemm_calls") is not None and diff > 0:
        sus = tuple(e["signature"] for e in counts.get("extra", []))[:3]
        recs.append(_rec("counts.extra_gemms", f"{diff} GEMM calls more than expected "
                         f"({counts['observed_gemm_calls']} vs {counts['expected_gemm_calls']})", sus))
    separate = _separate_projections(counts)
    if separate:
        recs.append(_rec("counts.fuse_projections", separate))
    moe = counts.get("moe_time") or {}
    if moe and busy and moe.get("moe_expert_ns", 0) + moe.get("moe_routing_ns", 0) + moe.get(
            "moe_combine_ns", 0) >= lim.moe_share_min * busy:
        total = moe["moe_expert_ns"] + moe["moe_routing_ns"] + moe["moe_combine_ns"]
        side = moe["moe_routing_ns"] + moe["moe_combine_ns"]
        recs.append(_rec("moe.expert_gemms",
                         f"MoE kernels are {total / busy:.0%} of busy time: expert GEMMs "
                         f"{moe['moe_expert_ns'] / busy:.0%} ({moe['moe_expert_calls']} calls), "
                         f"routing and combine {side / busy:.0%}",
                         tuple(h["name"] for h in hot if h["class"] == "gemm")[:3]))
        if side >= lim.moe_side_share_min * total:
            recs.append(_rec("moe.routing", f"routing and combine kernels take {side / total:.0%} "
                             f"of the MoE time ({side / 1e6:.2f} ms)"))
    if counts.get("slow_layers"):
        recs.append(_rec("layers.slow", f"layers {counts['slow_layers']} are slower than the "
                         "median layer"))
    return recs
