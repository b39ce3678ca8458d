"""The napkin calculator behind `profdiag roofline`: the roofline lab's numbers for one model
on one GPU, from the public functions of :mod:`profdiag.roofline` (no formula of its own
beyond combining them).

    napkin(spec, dtype, params=None, config=None, batch=1, tokens=1, context=0) -> dict

Either ``params`` (a parameter count: every weight read once per step, 2 FLOPs per weight per
token; no KV, no attention) or ``config`` (a model shape: streamed weights without the
embedding table, the KV cache and attention FLOPs) must be given. See docs/sweep.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from . import roofline
from .errors import UsageError
from .hardware import DTYPE_BYTES, GpuSpec, normalize_dtype

NAPKIN_VERSION = 1


def _positive(name: str, value: float, minimum: float = 1) -> None:
    if value < minimum:
        raise UsageError(f"--{name} must be >= {minimum:g}, got {value:g}")


def critical_batch_with_kv(ridge: float, flops_per_token: float, weight_bytes: float,
                           kv_bytes_per_seq: float) -> float | None:
    """Return the decode batch at which a step's intensity B·F / (W + B·KV) reaches ``ridge``:
    B = ridge·W / (F − ridge·KV). None when F <= ridge·KV: the KV traffic alone keeps every
    batch memory-bound (the long-context wall). Without KV it is ridge·W/F = ridge·s/2."""
    denom = flops_per_token - ridge * kv_bytes_per_seq
    if denom <= 0:
        return None
    return ridge * weight_bytes / denom


def napkin(spec: GpuSpec, dtype: str = "bf16", *, params: float | None = None,
           config: roofline.ConfigLike | None = None, batch: int = 1, tokens: int = 1,
           context: int = 0) -> dict[str, Any]:
    """Return the calculator's figures (JSON-ready; units in the key names).

    ``tokens`` is the prefill length per sequence (1: a decode step); ``context`` the KV
    positions each sequence holds before the step (decode reads them, prefill adds ``tokens``).
    """
    d = normalize_dtype(dtype) or dtype
    if d not in DTYPE_BYTES:
        raise UsageError(f"unknown dtype {dtype!r} (known: {', '.join(DTYPE_BYTES)})")
    model: float | roofline.ConfigLike
    if params is not None and config is None:
        model = params
    elif config is not None and params is None:
        model = config
    else:
        raise UsageError("give the model as --params N or --model-config FILE (one of them)")
    _positive("batch", batch)
    _positive("tokens", tokens)
    _positive("context", context, 0)
    s = float(DTYPE_BYTES[d])
    peak = spec.peak(d)
    bw = spec.bandwidth
    ridge = roofline.ridge_point(spec, d)

    shape: dict[str, Any] | None = None
    if not isinstance(model, (roofline.ModelConfig, Mapping)):  # a parameter count
        if not (model > 0 and math.isfinite(model)):
            raise UsageError(f"--params must be a positive number, got {model!r}")
        n_compute = float(model)
        weight_bytes = float(model) * s  # the lab: every parameter streamed once per step
        total_params = float(model)
        kv_per_position = None
        attn_decode = 0.0
        attn_prefill = 0.0
        kv_read = 0.0
        kv_prefill = 0.0
    else:
        c = (model if isinstance(model, roofline.ModelConfig)
             else roofline.ModelConfig.from_dict(model))
        m = c.dims()  # UsageError naming the first shape field the config lacks
        n_compute = float(roofline.compute_params(c))
        weight_bytes = roofline.streamed_weight_bytes(c, s)
        total_params = float(roofline.model_params(c))
        L, hd, kvh = m.layers, m.head_dim, m.kv_heads
        kv_per_position = roofline.kv_bytes_per_token(L, 1, hd, kvh, s)
        kv_read = roofline.kv_bytes_per_token(L, context, hd, kvh, s)
        kv_prefill = roofline.kv_bytes_per_token(L, tokens, hd, kvh, s)
        attn_decode = roofline.decode_attention_flops(L, context, hd, m.heads)
        # A prompt of T tokens after `context` cached ones: causal T² part + T·context part.
        attn_prefill = (roofline.prefill_attention_flops(L, tokens, hd, m.heads, causal=True)
                        + tokens * roofline.decode_attention_flops(L, context, hd, m.heads))
        shape = {"layers": m.layers, "hidden": m.hidden, "heads": m.heads,
                 "kv_heads": m.kv_heads, "head_dim": m.head_dim, "ffn": c.ffn,
                 "vocab": m.vocab}

    flops_per_token = roofline.prefill_linear_flops(n_compute, 1)  # 2·N
    # Decode step: B tokens share one trip through the weights; each reads its own KV.
    sol = roofline.decode_speed_of_light(weight_bytes, kv_read, batch, bw,
                                         flops_per_token=flops_per_token + attn_decode,
                                         peak_flops=peak)
    dec_flops = batch * (flops_per_token + attn_decode)
    dec_bytes = sol.bytes_per_step
    sol1 = roofline.decode_speed_of_light(weight_bytes, 0.0, 1, bw)  # the lab's speed limit
    # Prefill step: B·T tokens share the weights; writes B·T positions of KV.
    pre_flops = batch * (roofline.prefill_linear_flops(n_compute, tokens) + attn_prefill)
    pre_bytes = weight_bytes + batch * (kv_prefill + kv_read)
    pre_t_mem, pre_t_cmp = pre_bytes / bw, pre_flops / peak

    def phase(flops: float, nbytes: float, t: float, tok: int,
              weight_only_tokens: int) -> dict[str, Any]:
        ai = roofline.arithmetic_intensity(flops, nbytes)
        wo = roofline.weight_only_intensity(weight_only_tokens, s)
        return {
            "tokens_per_step": tok,
            "flops": flops,
            "bytes": nbytes,
            "arithmetic_intensity": ai,
            "weight_only_intensity": wo,
            "bound": roofline.bound(ai, spec, d),
            "ideal_step_s": t,
            "tokens_per_s": tok / t,
            "compute_utilization": min(1.0, ai / ridge),
        }

    decode = phase(dec_flops, dec_bytes, sol.step_time_s, batch, batch)
    decode["tokens_per_s_per_seq"] = sol.tokens_per_s_per_seq
    decode["limit"] = sol.limit
    prefill = phase(pre_flops, pre_bytes, max(pre_t_mem, pre_t_cmp), batch * tokens,
                    batch * tokens)
    prefill["limit"] = "compute" if pre_t_cmp > pre_t_mem else "memory"

    crit = roofline.critical_batch_size(spec, d, s)
    crit_kv = (critical_batch_with_kv(ridge, flops_per_token + attn_decode, weight_bytes,
                                      kv_read) if config is not None else crit)
    return {
        "napkin_version": NAPKIN_VERSION,
        "gpu": {"key": spec.key, "name": spec.name, "peak_flops_s": peak,
                "bandwidth_bytes_s": bw, "source": spec.source, "notes": spec.notes},
        "dtype": d,
        "dtype_bytes": s,
        "model": {"params": total_params, "compute_params": n_compute,
                  "weight_bytes_per_step": weight_bytes, "shape": shape,
                  "source": "params" if params is not None else "config"},
        "batch": batch,
        "tokens": tokens,
        "context": context,
        "ridge_flop_per_byte": ridge,
        "decode_speed_limit_tokens_per_s": sol1.tokens_per_s_per_seq,
        "kv_bytes_per_token": kv_per_position,
        "kv_bytes_read_per_seq": kv_read if config is not None else None,
        "critical_batch": crit,
        "critical_batch_with_kv": crit_kv,
        "decode": decode,
        "prefill": prefill,
        # The prompt length at which one sequence's prefill reaches the ridge (weights only).
        "prefill_compute_bound_from_tokens": math.ceil(ridge * s / 2.0 / batch),
    }
