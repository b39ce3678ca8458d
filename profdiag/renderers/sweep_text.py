"""Plain-text renderings of the napkin calculator (`profdiag roofline`) and a sweep summary."""

from __future__ import annotations

from typing import Any

from .text import fmt_ns, fmt_pct, fmt_si


def _bytes(x: Any) -> str:
    if x is None:
        return "-"
    v = float(x)
    for factor, unit in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if abs(v) >= factor:
            return f"{v / factor:.3g} {unit}"
    return f"{v:.0f} B"


def _batch(x: Any) -> str:
    if x is None:
        return "never (KV traffic alone keeps every batch memory-bound)"
    return f"{float(x):.0f}" if float(x) >= 10 else f"{float(x):.2f}"


def napkin_text(d: dict[str, Any]) -> str:
    """Return the calculator's figures as aligned text lines (every number has its unit)."""
    g, m, dec, pre = d["gpu"], d["model"], d["decode"], d["prefill"]
    lines = [
        f"GPU: {g['name']} ({d['dtype']}): {fmt_si(g['peak_flops_s'], 'FLOP/s')}, "
        f"{fmt_si(g['bandwidth_bytes_s'], 'B/s')}",
    ]
    if g.get("notes"):
        lines.append(f"  note: {g['notes']}")
    shape = m.get("shape")
    what = (f"{m['params']:.4g} parameters" if m["source"] == "params" else
            f"{m['params']:.4g} parameters ({shape['layers']} layers, hidden {shape['hidden']}, "
            f"{shape['heads']} heads, {shape['kv_heads']} KV heads)")
    lines += [
        f"model: {what}; weights streamed per step {_bytes(m['weight_bytes_per_step'])} "
        f"({m['weight_bytes_per_step']:.4g} B)",
        "",
        f"ridge point            {d['ridge_flop_per_byte']:.1f} FLOP/byte "
        "(peak / bandwidth)",
        f"decode speed limit     {d['decode_speed_limit_tokens_per_s']:.1f} tokens/s per "
        "sequence (bandwidth / weight bytes, batch 1, no KV)",
        f"critical batch         {_batch(d['critical_batch'])} sequences "
        "(weights only: ridge x bytes per weight / 2)",
    ]
    if m["source"] == "config":
        lines += [
            f"  with KV at context {d['context']}: {_batch(d['critical_batch_with_kv'])}",
            f"KV bytes per token     {_bytes(d['kv_bytes_per_token'])} "
            f"({d['kv_bytes_per_token']:.6g} B per cached position per sequence)",
        ]
    else:
        lines.append("KV bytes per token     - (needs --model-config or --preset)")
    lines += [
        "",
        f"decode step, batch {d['batch']}, context {d['context']}:",
        f"  arithmetic intensity {dec['arithmetic_intensity']:.4g} FLOP/byte "
        f"(weights only: {dec['weight_only_intensity']:.4g}) -> {dec['bound']}-bound, "
        f"{fmt_pct(dec['compute_utilization'])} of peak compute at best",
        f"  ideal step time      {fmt_ns(dec['ideal_step_s'] * 1e9)} "
        f"({dec['limit']} ceiling): {dec['tokens_per_s_per_seq']:.1f} tokens/s per sequence, "
        f"{dec['tokens_per_s']:.1f} tokens/s in all",
        f"prefill step, batch {d['batch']} x {d['tokens']} tokens:",
        f"  arithmetic intensity {pre['arithmetic_intensity']:.4g} FLOP/byte "
        f"(weights only: {pre['weight_only_intensity']:.4g}) -> {pre['bound']}-bound",
        f"  ideal step time      {fmt_ns(pre['ideal_step_s'] * 1e9)} ({pre['limit']} "
        f"ceiling): {pre['tokens_per_s']:.4g} tokens/s",
        f"  a prefill is compute-bound from {d['prefill_compute_bound_from_tokens']} tokens "
        f"per sequence at batch {d['batch']} (weights only)",
    ]
    return "\n".join(lines) + "\n"
