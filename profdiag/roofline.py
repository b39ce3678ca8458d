"""Roofline and speed-of-light arithmetic (pure functions over numbers and DataFrames).

Units everywhere: FLOPs, bytes, seconds, FLOP/s, bytes/s (SI, no tera-), durations from the
event table in integer ns. Nothing here renders or prints; ``docs/roofline.md`` explains the
method and the formulas.

Public API (see each docstring for what it returns)::

    gemm_flops(m, k, n, batch=1)                       2·b·m·k·n
    gemm_min_bytes(m, k, n, dtype_bytes, batch=1)      b·(mk + kn + mn)·s
    arithmetic_intensity(flops, nbytes)
    weight_only_intensity(tokens, dtype_bytes)         2·tokens / s
    ridge_point(spec, dtype)
    bound(intensity, spec, dtype)                      "memory" | "compute"
    attainable_flops(intensity, spec, dtype)           min(peak, intensity·bw)
    critical_batch_size(spec, dtype, dtype_bytes)      ridge·s / 2
    decode_speed_of_light(weight_bytes, kv_bytes_per_seq, batch, bandwidth, ...)
    kv_bytes_per_token(layers, context, head_dim, kv_heads, dtype_bytes)   2·L·T·d·h_kv·s
    prefill_linear_flops(n_params, tokens)             2·N·T
    prefill_attention_flops(layers, tokens, head_dim, heads, causal=False) 4·L·T²·d·h (/2 causal)
    prefill_flops(n_params, layers, tokens, head_dim, heads, causal=False)
    decode_attention_flops(layers, context, head_dim, heads)                4·L·T·d·h
    ModelConfig / model_params(config) / model_weight_bytes(config, s) / streamed_weight_bytes
    gemm_table(kernels, spec, default_dtype="bf16", ...) -> DataFrame
    summarise(table) -> dict
    speed_of_light_steps(step_times_ns, config, batch, context, spec, dtype_bytes, phase)
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from . import strcols
from .errors import UsageError
from .gemm import (
    GEMM_OPS,
    Shape as _Shape,
    gemm_flops as gemm_flops,  # re-exported: part of the roofline API
    gemm_shape as _gemm_shape,
    prod as _prod,
)
from .hardware import DTYPE_BYTES, GpuSpec, dtype_of_size, normalize_dtype
from .modelspec import ModelDims, ModelSpec

Bound = Literal["memory", "compute"]

# --------------------------------------------------------------------------- scalar formulas


def gemm_min_bytes(m: float, k: float, n: float, dtype_bytes: float, batch: float = 1) -> float:
    """Return the compulsory DRAM traffic of ``batch`` GEMMs: read A [m,k] and B [k,n] once,
    write C [m,n] once, (mk + kn + mn)·dtype_bytes each. Real kernels move at least this."""
    return float(batch) * (m * k + k * n + m * n) * dtype_bytes


def arithmetic_intensity(flops: float, nbytes: float) -> float:
    """Return FLOPs per byte moved (inf when no bytes move)."""
    return flops / nbytes if nbytes else math.inf


def weight_only_intensity(tokens: float, dtype_bytes: float) -> float:
    """Return the intensity of a transformer step that reads every weight once and does 2 FLOPs
    per weight per token: 2·N·tokens / (N·dtype_bytes) = 2·tokens/dtype_bytes. N cancels, which
    is why prefill (thousands of tokens per weight trip) and decode (batch tokens) sit at the
    two ends of the roofline whatever the model size."""
    return 2.0 * tokens / dtype_bytes


def ridge_point(spec: GpuSpec, dtype: str = "bf16") -> float:
    """Return the ridge point, peak FLOP/s / bandwidth (FLOP/byte), of ``spec`` for ``dtype``."""
    return spec.ridge(dtype)


def bound(intensity: float, spec: GpuSpec, dtype: str = "bf16") -> Bound:
    """Return "compute" when ``intensity`` >= the ridge point, else "memory".

    At exactly the ridge both ceilings meet; the lab counts that as compute-bound (its critical
    batch size 156 on an A100 is the first compute-bound batch), so do we.
    """
    return "compute" if intensity >= spec.ridge(dtype) else "memory"


def attainable_flops(intensity: float, spec: GpuSpec, dtype: str = "bf16") -> float:
    """Return the roofline ceiling min(peak, intensity·bandwidth) in FLOP/s."""
    return min(spec.peak(dtype), intensity * spec.bandwidth)


def critical_batch_size(spec: GpuSpec, dtype: str = "bf16", dtype_bytes: float | None = None) -> float:
    """Return the decode batch (tokens per weight trip) at which the weight-only intensity
    2·B/s reaches the ridge: B* = ridge·s/2 (= the ridge for fp16/bf16). KV traffic is ignored,
    so real decode needs somewhat more than this to be compute-bound."""
    s = dtype_bytes if dtype_bytes is not None else DTYPE_BYTES[normalize_dtype(dtype) or dtype]
    return spec.ridge(dtype) * s / 2.0


@dataclass(frozen=True)
class DecodeSpeedOfLight:
    """The fastest a decode step can go given the bytes it must read (and optionally FLOPs)."""

    bytes_per_step: float  # weights once + KV of every sequence
    step_time_s: float  # ideal seconds per step
    tokens_per_s_per_seq: float  # = steps/s: each sequence gains one token per step
    tokens_per_s: float  # whole batch
    limit: Bound  # which ceiling set the step time


def decode_speed_of_light(
    weight_bytes: float,
    kv_bytes_per_seq: float,
    batch: int,
    bandwidth: float,
    *,
    flops_per_token: float = 0.0,
    peak_flops: float | None = None,
) -> DecodeSpeedOfLight:
    """Return the decode speed of light: one step must stream the weights once (shared by the
    batch) plus each sequence's KV cache, so step time >= (W + B·KV)/bandwidth.

    Tokens/s per sequence = 1/step time; per batch = B/step time. Pass ``flops_per_token`` and
    ``peak_flops`` to also apply the compute ceiling (B·flops_per_token/peak), which takes over
    past the critical batch size; by default only the memory ceiling applies, as in the lab
    (8B fp16 on 2.0 TB/s: 125 tokens/s per sequence; batch 64: 8000 tokens/s).
    """
    if batch < 1:
        raise UsageError(f"batch must be >= 1, got {batch}")
    nbytes = float(weight_bytes) + batch * float(kv_bytes_per_seq)
    t_mem = nbytes / bandwidth
    t_cmp = batch * flops_per_token / peak_flops if peak_flops else 0.0
    t = max(t_mem, t_cmp)
    return DecodeSpeedOfLight(
        bytes_per_step=nbytes,
        step_time_s=t,
        tokens_per_s_per_seq=1.0 / t,
        tokens_per_s=batch / t,
        limit="compute" if t_cmp > t_mem else "memory",
    )


def kv_bytes_per_token(
    layers: int, context: int, head_dim: int, kv_heads: int, dtype_bytes: float
) -> float:
    """Return the KV-cache bytes one sequence reads to decode one token at ``context`` tokens:
    K and V (2) x L layers x T positions x d x h_kv heads x s bytes.
    (256 MiB for L=32, T=2048, d=128, h_kv=8, bf16.)"""
    return 2.0 * layers * context * head_dim * kv_heads * dtype_bytes


def prefill_linear_flops(n_params: float, tokens: float) -> float:
    """Return 2·N·T: every (non-embedding) weight does one multiply-add per token."""
    return 2.0 * n_params * tokens


def prefill_attention_flops(
    layers: int, tokens: int, head_dim: int, heads: int, causal: bool = False, batch: int = 1
) -> float:
    """Return the attention FLOPs of a T-token prefill: QKᵀ and PV are each 2·T²·d per head,
    so 4·L·T²·d·h per sequence. ``causal=True`` halves it (only the lower triangle is computed
    by flash-style kernels that skip masked tiles): 2·L·T²·d·h, e.g. 1.0995e12 for L=32,
    T=2048, d=128, h=32 (the seed's 1.112e12 is an arithmetic slip)."""
    f = 4.0 * batch * layers * float(tokens) ** 2 * head_dim * heads
    return f / 2.0 if causal else f


def prefill_flops(
    n_params: float,
    layers: int,
    tokens: int,
    head_dim: int,
    heads: int,
    causal: bool = False,
) -> float:
    """Return the prefill FLOPs of one T-token sequence: 2·N·T + 4·L·T²·d·h (attention halved
    when ``causal``). N should exclude the embedding table (a gather, no FLOPs). For L=32,
    H=4096 (N ≈ 12·L·H²), T=2048 the linear term is 24·L·H²·T ≈ 26.4 TFLOP: the seed note's
    12.9 GFLOP drops the factor T."""
    return prefill_linear_flops(n_params, tokens) + prefill_attention_flops(
        layers, tokens, head_dim, heads, causal
    )


def decode_attention_flops(layers: int, context: int, head_dim: int, heads: int) -> float:
    """Return one sequence's attention FLOPs to decode one token at ``context``: 4·L·T·d·h."""
    return 4.0 * layers * context * head_dim * heads


# --------------------------------------------------------------------------- model configs


# The one model-shape class (profdiag.modelspec); the old name stays as an alias.
ModelConfig = ModelSpec

ConfigLike = ModelSpec | Mapping[str, Any]


def _cfg(config: ConfigLike | Any) -> ModelSpec:
    """Accept a ModelSpec, a mapping of short keys or a Hugging Face dict (strict)."""
    if isinstance(config, ModelSpec):
        config.dims()  # UsageError naming the first shape field it lacks
        return config
    if not isinstance(config, Mapping) and hasattr(config, "to_dict"):
        config = config.to_dict()
    return ModelSpec.from_dict(config)


def model_params_breakdown(config: ConfigLike) -> dict[str, int]:
    """Return parameter counts by part: attention (q, k, v, o: q/o are hidden x heads·d and
    k/v hidden x kv_heads·d, so head_dim != hidden/heads changes them), mlp (gate, up, down;
    for MoE every expert, the shared expert and the router), norms (2 per layer + final),
    embedding, lm_head (0 when tied to the embedding)."""
    c = _cfg(config)
    m = c.dims()
    q_dim = m.heads * m.head_dim
    kv_dim = m.kv_heads * m.head_dim
    attn = m.hidden * q_dim + 2 * m.hidden * kv_dim + q_dim * m.hidden
    per_expert, fixed = _mlp_parts(c, m)
    return {
        "attention": m.layers * attn,
        "mlp": m.layers * (m.experts * per_expert + fixed),
        "norms": (2 * m.layers + 1) * m.hidden,
        "embedding": m.vocab * m.hidden,
        "lm_head": 0 if c.tie_embeddings else m.vocab * m.hidden,
    }


def _mlp_parts(c: ModelSpec, m: ModelDims) -> tuple[int, int]:
    """MLP weights of one layer: (one routed expert's gate, up, down, or the dense MLP's;
    what every token uses besides the routed experts: the shared expert and the router, 0
    for a dense MLP). A layer counting n experts holds n·first + second (dense: n = 1)."""
    per_expert = 3 * m.hidden * m.ffn
    if not c.is_moe:
        return per_expert, 0
    shared = 3 * m.hidden * c.shared_expert_ffn if c.shared_expert_ffn else 0
    return per_expert, shared + m.hidden * m.experts


def model_params(config: ConfigLike) -> int:
    """Return the total parameter count (embedding and lm_head counted once each unless tied)."""
    return sum(model_params_breakdown(config).values())


def model_weight_bytes(config: ConfigLike, dtype_bytes: float) -> float:
    """Return the bytes of all weights at ``dtype_bytes`` per parameter."""
    return model_params(config) * float(dtype_bytes)


def compute_params(config: ConfigLike) -> int:
    """Return the parameters that do FLOPs per token: everything but the embedding gather
    (the lm_head matrix counts, also when it is the tied embedding). For MoE only the top-k
    experts (and the shared expert) of each layer count."""
    b = model_params_breakdown(config)
    c = _cfg(config)
    m = c.dims()
    per_expert, fixed = _mlp_parts(c, m)
    mlp = m.layers * (m.experts_per_tok * per_expert + fixed)  # dense: top-1 of 1, = b["mlp"]
    return b["attention"] + mlp + b["norms"] + m.vocab * m.hidden


def streamed_weight_bytes(config: ConfigLike, dtype_bytes: float,
                          tokens: float | None = None) -> float:
    """Return the weight bytes one step must read from DRAM: every matrix once (lm_head
    included), but not the embedding table, of which a step gathers only its tokens' rows.
    For MoE, the experts ``tokens`` tokens are expected to touch, min(experts, tokens·k) per
    layer (all experts when ``tokens`` is None)."""
    c = _cfg(config)
    if not c.is_moe:
        return compute_params(c) * float(dtype_bytes)
    m = c.dims()
    b = model_params_breakdown(c)
    per_expert, fixed = _mlp_parts(c, m)
    touched = m.experts if tokens is None else min(m.experts, tokens * m.experts_per_tok)
    mlp = m.layers * (touched * per_expert + fixed)
    return (b["attention"] + mlp + b["norms"] + m.vocab * m.hidden) * float(dtype_bytes)


# --------------------------------------------------------------------------- trace GEMM table

# op -> layout of q/k/v in Input Dims: "bhtd" ([B, H, T, d]) or "bthd" ([B, T, H, d]).
ATTENTION_OPS: Mapping[str, str] = {
    "aten::scaled_dot_product_attention": "bhtd",
    "aten::_scaled_dot_product_flash_attention": "bhtd",
    "aten::_scaled_dot_product_efficient_attention": "bhtd",
    "aten::_scaled_dot_product_cudnn_attention": "bhtd",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "bhtd",
    "aten::_cudnn_attention_forward": "bhtd",
    # The low-level kernels' entry points take the transposed layout.
    "aten::_flash_attention_forward": "bthd",
    "aten::_efficient_attention_forward": "bthd",
}

TABLE_COLUMNS = [
    "external_id", "device", "op_class", "op_name", "kernel", "kernels", "start_ns", "dur_ns",
    "dtype", "dtype_assumed", "batch", "m", "k", "n", "flops", "bytes", "intensity",
    "achieved_flops_s", "achieved_bytes_s", "peak_flops", "ridge", "bound",
    "attainable_flops_s", "efficiency", "efficiency_raw", "suspect",
]  # fmt: skip


def _attention_shape(op: str, dims: list[Any]) -> _Shape | None:
    """Derive B·H, Tq, Tk, d and compulsory elements of an SDPA-family op from its Input Dims.

    FLOPs = 2·B·H·Tq·Tk·(d + d_v) (QKᵀ then PV), i.e. 4·B·H·Tq·Tk·d when d_v = d, counted
    dense (no causal halving: the canonical table does not carry is_causal; see gemm_table).
    Bytes = q + k + v read once + out written once (GQA: K/V have h_kv heads).
    """
    layout = ATTENTION_OPS[op]
    mats = [d for d in dims[:3] if isinstance(d, list)]
    if len(mats) < 3 or any(len(x) != 4 for x in mats):
        return None  # varlen (3-D packed) or unknown: do not guess
    q, k, v = mats
    if layout == "bhtd":
        b, h, tq, d = q
        tk, dv = k[2], v[3]
    else:
        b, tq, h, d = q
        tk, dv = k[1], v[3]
    if k[-1] != d or min(b, h, tq, tk, d, dv) <= 0:
        return None
    flops = 2.0 * b * h * tq * tk * (d + dv)
    elems = _prod(q) + _prod(k) + _prod(v) + b * h * tq * dv
    return _Shape("attention", b * h, tq, d, tk, flops, elems)


def _parse_dtype(types_json: Any) -> str | None:
    """Return the dtype of the first tensor input in an ``Input type`` JSON list."""
    if types_json is None or types_json is pd.NA:
        return None
    try:
        types = json.loads(types_json) if isinstance(types_json, str) else list(types_json)
    except (ValueError, TypeError):
        return None
    for t in types:
        d = normalize_dtype(t) if isinstance(t, str) else None
        if d:
            return d
    return None


def _shape_of(op: str, dims_json: Any) -> _Shape | None:
    if dims_json is None or dims_json is pd.NA:
        return None
    try:
        dims = json.loads(dims_json) if isinstance(dims_json, str) else dims_json
    except (ValueError, TypeError):
        return None
    if not isinstance(dims, list):
        return None
    try:
        if op in GEMM_OPS:
            return _gemm_shape(op, dims)
        if op in ATTENTION_OPS:
            return _attention_shape(op, dims)
    except (TypeError, ValueError, IndexError):
        return None  # odd Input Dims (nested scalars, strings): skip, never crash
    return None


# Position of the causal flag in each attention op's Concrete Inputs (aten schemas): is_causal,
# or _efficient_attention_forward's custom_mask_type (0 none, 1/2 causal top-left/bottom-right).
CAUSAL_ARG: dict[str, int] = {
    "aten::scaled_dot_product_attention": 5,
    "aten::_scaled_dot_product_flash_attention": 4,
    "aten::_scaled_dot_product_flash_attention_for_cpu": 4,
    "aten::_scaled_dot_product_efficient_attention": 6,
    "aten::_scaled_dot_product_cudnn_attention": 6,
    "aten::_cudnn_attention_forward": 10,
    "aten::_flash_attention_forward": 8,
    "aten::_efficient_attention_forward": 9,
}


def causal_arg(op: str, concrete: Any) -> bool | None:
    """The op's own causal flag from its Concrete Inputs; None when not recorded."""
    idx = CAUSAL_ARG.get(op)
    try:
        vals = json.loads(concrete) if isinstance(concrete, str) else concrete
    except (TypeError, ValueError):
        return None
    if not isinstance(vals, list):
        return None
    if idx is None or not vals or idx >= len(vals):
        return None
    v = str(vals[idx]).strip()
    if op == "aten::_efficient_attention_forward":
        return None if not v.isdigit() else v != "0"
    if v in ("True", "true", "1"):
        return True
    if v in ("False", "false", "0"):
        return False
    return None


def _causal_flag(op: str, concrete: Any) -> bool | None:
    if concrete is None or concrete is pd.NA:
        return None
    return causal_arg(op, concrete)


def empty_table() -> pd.DataFrame:
    """Return a zero-row table with gemm_table's columns."""
    return pd.DataFrame({c: pd.Series(dtype="object") for c in TABLE_COLUMNS})


def gemm_table(
    kernels: pd.DataFrame,
    spec: GpuSpec,
    default_dtype: str = "bf16",
    *,
    fp32_as: str = "fp32",
    causal_attention: bool = False,
    suspect_above: float = 1.0,
) -> pd.DataFrame:
    """Return one row per GEMM/attention *call* found in canonical kernel rows, with its roofline.

    Input: canonical event rows (other kinds are ignored) whose ``op_name`` is a GEMM op
    (gemm.GEMM_OPS: aten::mm, addmm, matmul, linear, bmm, _scaled_mm) or an attention op (aten::_scaled_dot_product_*,
    _cudnn/_flash/_efficient_attention_forward) and whose ``input_dims`` parses.

    Kernels launched by one op call (a split-K GEMM and its reduce kernel; flash-decoding and
    its reduction) share ``external_id``: they are summed into one call. Rows without an
    external_id stand alone.

    Columns: external_id, device, op_class ("gemm" | "attention"), op_name, kernel (the longest
    kernel's name), kernels (count), start_ns, dur_ns (summed), dtype, dtype_assumed (no usable
    input_types: ``default_dtype`` used), batch, m, k, n (attention: batch = B·H, m = Tq,
    k = d, n = Tk), flops, bytes (compulsory minimum), intensity, achieved_flops_s,
    achieved_bytes_s, peak_flops, ridge, bound ("memory" | "compute"), attainable_flops_s
    (min(peak, intensity·bw)), efficiency (achieved / attainable; NaN when suspect),
    efficiency_raw, suspect (efficiency_raw > ``suspect_above``: the spec or the shape is wrong,
    e.g. TF32 math on an fp32 GEMM, or the wrong GPU; never reported as >100%).

    ``fp32_as="tf32"`` rates fp32 GEMMs against the TF32 peak (torch allow_tf32).
    ``causal_attention=True`` halves attention FLOPs where Tq == Tk (causal prefill; flash
    kernels skip the masked half); by default attention FLOPs are dense, so a causal prefill's
    achieved FLOP/s reads as the usual "dense-equivalent" figure (up to 2x the real rate).
    """
    need = {"op_name", "input_dims", "dur_ns"}
    if kernels is None or len(kernels) == 0 or not need.issubset(kernels.columns):
        return empty_table()
    df = kernels
    # one mask, matched once per distinct op (a compact column's categories), not per row;
    # the kept rows' fields taken as arrays and codes (no copy of the frame's rows)
    keep = strcols.isin(df["op_name"], GEMM_OPS | set(ATTENTION_OPS)) & df[
        "input_dims"].notna().to_numpy(dtype=bool)
    if "kind" in df.columns:
        keep &= strcols.isin(df["kind"], ("kernel",))
    rows = np.flatnonzero(keep)
    if not len(rows):
        return empty_table()

    n_rows = len(rows)
    ext = (pd.array(df["external_id"].array[rows], dtype="Int64") if "external_id" in df.columns
           else pd.array([pd.NA] * n_rows, dtype="Int64"))
    dev = (pd.array(df["device"].array[rows], dtype="Int64") if "device" in df.columns
           else pd.array([pd.NA] * n_rows, dtype="Int64"))
    ext_np = np.asarray(ext.fillna(-1), dtype=np.int64)
    has_ext = ~np.asarray(ext.isna(), dtype=bool)
    # Group key: (device, external_id) when linked; a unique negative id otherwise.
    group = np.where(has_ext, ext_np, -1 - np.arange(n_rows, dtype=np.int64))
    device = np.asarray(dev.fillna(-1), dtype=np.int64)
    dur = np.asarray(df["dur_ns"].to_numpy()[rows], dtype=np.int64)
    start = (np.asarray(df["start_ns"].to_numpy()[rows], dtype=np.int64)
             if "start_ns" in df.columns else np.zeros(n_rows, dtype=np.int64))
    # each string field as codes of the kept rows into its distinct values (-1: missing)
    fields: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for c in ("op_name", "input_dims", "input_types", "input_concrete", "name"):
        if c in df.columns:
            codes, values = strcols.codes_values(df[c])
            fields[c] = (codes[rows], values)
        elif c == "name":  # no kernel names: the calls' kernel reads ""
            fields[c] = (np.zeros(n_rows, dtype=np.int64), np.array([""], dtype=object))
        else:  # no such inputs: missing (no dtype, no causal flag)
            fields[c] = (np.full(n_rows, -1, dtype=np.int64), np.empty(0, dtype=object))

    # The call's representative kernel is its longest one (the GEMM, not the split-K reduce):
    # rows in (device, group, longest first) order, ties in row order (a stable sort).
    order = np.lexsort((-dur, group, device))
    device, group, dur, start = device[order], group[order], dur[order], start[order]
    new = np.ones(n_rows, dtype=bool)
    new[1:] = (device[1:] != device[:-1]) | (group[1:] != group[:-1])
    first = np.flatnonzero(new)  # each call's first row (sorted order), calls in key order
    call_of = np.cumsum(new) - 1
    n_calls = len(first)

    def first_code(c: str) -> np.ndarray:
        """Each call's first non-missing code of field ``c`` in its rows (-1: none)."""
        codes = fields[c][0][order]
        out = np.full(n_calls, -1, dtype=np.int64)
        valid = np.flatnonzero(codes >= 0)
        calls_with, at = np.unique(call_of[valid], return_index=True)
        out[calls_with] = codes[valid[at]]
        return out

    op_c, dims_c = first_code("op_name"), first_code("input_dims")
    types_c, conc_c, name_c = (first_code("input_types"), first_code("input_concrete"),
                               first_code("name"))
    call_ext = ext[order[first]]
    call_dev = device[first]
    kernels_n = np.diff(np.append(first, n_rows))
    call_start = np.minimum.reduceat(start, first)
    call_dur = np.add.reduceat(dur, first)

    def value(c: str, code: int) -> Any:
        return fields[c][1][code] if code >= 0 else pd.NA  # pd.NA: a string column's missing

    # Each distinct (op, dims, types, concrete) computed once: a decode trace repeats a
    # handful of shapes.
    combo = np.zeros(n_calls, dtype=np.int64)
    for codes in (op_c, dims_c, types_c, conc_c):
        combo = np.asarray(pd.factorize(combo * (int(codes.max()) + 2) + codes + 1)[0],
                           dtype=np.int64)
    combo_first = np.unique(combo, return_index=True)[1]
    shapes: dict[tuple[Any, Any], _Shape | None] = {}
    dtypes: dict[Any, str | None] = {}
    per_combo: list[tuple[Any, ...] | None] = []
    for i in combo_first.tolist():
        op, dims = value("op_name", int(op_c[i])), value("input_dims", int(dims_c[i]))
        types, concrete = value("input_types", int(types_c[i])), value("input_concrete",
                                                                         int(conc_c[i]))
        if (op, dims) not in shapes:
            shapes[(op, dims)] = _shape_of(op, dims)
        shp = shapes[(op, dims)]
        if shp is None:
            per_combo.append(None)
            continue
        if types not in dtypes:
            dtypes[types] = _parse_dtype(types)
        dt = dtypes[types]
        assumed = dt is None
        dt = dt or (normalize_dtype(default_dtype) or default_dtype)
        flops = shp.flops
        if shp.op_class == "attention" and shp.m > 1:
            # The op's own is_causal when the trace records it; else (causal_attention) the
            # shapes: Tq == Tk is a prompt attending to itself. Causal query i of Tq sees
            # Tk - Tq + i + 1 keys: on average Tk - Tq/2 of the Tk (half when Tq == Tk).
            flag = _causal_flag(op, concrete)
            if flag or (flag is None and causal_attention and shp.m == shp.n):
                flops *= max(shp.n - shp.m / 2.0, 0.0) / shp.n
        nbytes = shp.elems * DTYPE_BYTES.get(dt, 2)
        # Which peak to rate against: fp32 GEMMs may run on TF32 tensor cores; a dtype the GPU
        # lacks (fp8 on an A100) falls back to default_dtype, the best such a kernel can do.
        peak_dtype = fp32_as if dt == "fp32" else dt
        if not spec.has_peak(peak_dtype):
            peak_dtype = default_dtype
        per_combo.append((shp.op_class, op, dt, assumed, shp.batch, shp.m, shp.k, shp.n, flops,
                          nbytes, spec.peak(peak_dtype)))
    valid = np.array([f is not None for f in per_combo], dtype=bool)
    sel = np.flatnonzero(valid[combo])  # the calls with a usable shape, in key order
    if not len(sel):
        return empty_table()
    facts = np.empty((len(per_combo), 11), dtype=object)
    for j, f in enumerate(per_combo):
        if f is not None:
            facts[j] = f
    facts = facts[combo[sel]]
    names = np.append(fields["name"][1], np.array([pd.NA], dtype=object))
    dev_sel = call_dev[sel]
    # column by column, each inferred from its values as records of them would be
    # (int64 for ints, float64 for ints and floats, str for names)
    out = pd.DataFrame({
        "external_id": call_ext[sel],
        "device": pd.arrays.IntegerArray(np.where(dev_sel >= 0, dev_sel, 0), dev_sel < 0),
        "op_class": pd.Series(facts[:, 0].tolist()), "op_name": pd.Series(facts[:, 1].tolist()),
        "kernel": pd.Series(names[name_c[sel]].tolist()),
        "kernels": kernels_n[sel].astype(np.int64), "start_ns": call_start[sel],
        "dur_ns": call_dur[sel], "dtype": pd.Series(facts[:, 2].tolist()),
        **{c: pd.Series(facts[:, j].tolist()) for j, c in
           ((3, "dtype_assumed"), (4, "batch"), (5, "m"), (6, "k"), (7, "n"), (8, "flops"),
            (9, "bytes"), (10, "peak_flops"))},
    })
    secs = out["dur_ns"].astype("float64") * 1e-9
    # A zero-duration call has no meaningful rate: NaN, not inf.
    secs = secs.where(secs > 0)
    out["intensity"] = out["flops"] / out["bytes"]
    out["achieved_flops_s"] = out["flops"] / secs
    out["achieved_bytes_s"] = out["bytes"] / secs
    out["ridge"] = out["peak_flops"] / spec.bandwidth
    out["bound"] = np.where(out["intensity"] >= out["ridge"], "compute", "memory")
    out["attainable_flops_s"] = np.minimum(out["peak_flops"], out["intensity"] * spec.bandwidth)
    out["efficiency_raw"] = out["achieved_flops_s"] / out["attainable_flops_s"]
    out["suspect"] = (out["efficiency_raw"] > suspect_above).fillna(False).astype(bool)
    out["efficiency"] = out["efficiency_raw"].where(~out["suspect"])
    out = out.sort_values("start_ns", kind="stable").reset_index(drop=True)
    return out[TABLE_COLUMNS]


# the columns summarise reads
SUMMARY_COLUMNS = ["op_class", "dur_ns", "flops", "bytes", "bound", "efficiency", "kernels",
                   "suspect"]


def _summary_of(t: pd.DataFrame) -> dict[str, Any]:
    time_ns = int(t["dur_ns"].sum()) if len(t) else 0
    secs = time_ns * 1e-9
    flops = float(t["flops"].sum()) if len(t) else 0.0
    nbytes = float(t["bytes"].sum()) if len(t) else 0.0
    mem_time = int(t.loc[t["bound"] == "memory", "dur_ns"].sum()) if len(t) else 0
    eff = t["efficiency"].dropna().astype("float64") if len(t) else pd.Series(dtype="float64")
    return {
        "calls": int(len(t)),
        "kernels": int(t["kernels"].sum()) if len(t) else 0,
        "flops": flops,
        "bytes": nbytes,
        "time_ns": time_ns,
        "intensity": flops / nbytes if nbytes else None,
        "achieved_flops_s": flops / secs if secs else None,
        "achieved_bytes_s": nbytes / secs if secs else None,
        "memory_bound_calls": int((t["bound"] == "memory").sum()) if len(t) else 0,
        "compute_bound_calls": int((t["bound"] == "compute").sum()) if len(t) else 0,
        # Shares are by time: what fraction of this class's GPU time sits under each roof.
        "memory_bound_time_share": mem_time / time_ns if time_ns else None,
        "compute_bound_time_share": (time_ns - mem_time) / time_ns if time_ns else None,
        "median_efficiency": float(eff.median()) if len(eff) else None,
        "suspect_calls": int(t["suspect"].sum()) if len(t) else 0,
    }


def summarise(table: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Return {"gemm": {...}, "attention": {...}, "overall": {...}} aggregates of a gemm_table.

    Each holds: calls, kernels, flops, bytes, time_ns (summed kernel time), intensity,
    achieved_flops_s and achieved_bytes_s (totals over total time), memory_/compute_bound_calls,
    memory_/compute_bound_time_share (fractions of the class's time), median_efficiency (over
    non-suspect calls) and suspect_calls. Rates and shares are None when there is no time.
    """
    if table is None or len(table) == 0:
        table = empty_table()
    table = table[SUMMARY_COLUMNS]  # the subsets below copy only what _summary_of reads
    return {
        "gemm": _summary_of(table[table["op_class"] == "gemm"]),
        "attention": _summary_of(table[table["op_class"] == "attention"]),
        "overall": _summary_of(table),
    }


# --------------------------------------------------------------------------- speed of light

@dataclass(frozen=True)
class StepLight:
    """The speed of light of one step (see :func:`step_speed_of_light`)."""

    tokens: float  # tokens the step processed (batch x query tokens)
    flops: float
    linear_flops: float
    lm_head_flops: float
    attention_flops: float
    bytes: float
    weight_bytes: float
    kv_read_bytes: float
    kv_write_bytes: float
    ideal_s: float
    limit: Bound


def attention_flops(layers: int, heads: int, head_dim: int, batch: float, query_tokens: float,
                    context: float, causal: bool) -> float:
    """Return the attention FLOPs of a step: QKᵀ and PV are 2·d FLOPs each per (query, key)
    pair per head, so 4·L·h·d·B·Σ keys seen. Dense: each of the Tq queries sees all C keys;
    causal: query i sees C - Tq + i + 1 keys (the cache before the step plus its own prefix),
    on average C - Tq/2 (a T-token prefill from empty: T²/2 pairs, so 2·L·T²·d·h)."""
    keys = context if not causal else max(context - query_tokens / 2.0, 0.0)
    return 4.0 * layers * heads * head_dim * batch * query_tokens * keys


def _window_keys(query_tokens: float, context: float, causal: bool, window: float) -> float:
    """Average keys a query sees under a sliding window of ``window`` positions: dense,
    min(C, W); causal, the mean of min(p + 1, W) over the step's positions p = C − Tq .. C − 1."""
    if not causal:
        return min(context, window)
    a, b = max(context - query_tokens + 1, 1.0), float(context)  # key counts p + 1, a .. b
    if b < a:
        return 0.0
    lo_end = min(b, window)  # x <= W: sum of x from a to lo_end
    below = (lo_end - a + 1) * (a + lo_end) / 2.0 if lo_end >= a else 0.0
    above = max(0.0, b - max(a, window + 1) + 1) * window
    return (below + above) / (b - a + 1)


def sliding_layers(c: ModelSpec) -> int:
    """Layers whose attention is windowed: those ``layer_types`` calls sliding, or every layer
    when the config sets a sliding_window without layer types; 0 without a window."""
    if not c.sliding_window:
        return 0
    if c.layer_types:
        return sum(1 for t in c.layer_types if "sliding" in t)
    return int(c.layers or 0)


def step_speed_of_light(
    config: ConfigLike,
    spec: GpuSpec,
    *,
    batch: float,
    query_tokens: float,
    context: float,
    lm_head_tokens: float | None = None,
    causal: bool = True,
    dtype: str = "bf16",
    dtype_bytes: float | None = None,
    kv_dtype_bytes: float | None = None,
) -> StepLight:
    """Return the ideal time of one step and the ceiling that sets it.

    ``batch`` sequences each run ``query_tokens`` new tokens (prefill: the prompt or chunk;
    decode: 1) against ``context`` KV positions per sequence *after* the step (the cache the
    step reads plus what it writes). ``lm_head_tokens``: the tokens whose logits are computed
    (default batch: the last position of each sequence).

      tokens  = B·Tq
      FLOPs   = 2·N_body·tokens + 2·N_lm_head·lm_head_tokens + attention (causal or dense)
      bytes   = weights once (lm_head in, embedding out; at the quantization_config's width
                when there is one) + KV read B·(C - Tq)·kv + KV written B·Tq·kv, with
                kv = 2·L·h_kv·d·s bytes per position
      ideal   = max(FLOPs / peak(dtype), bytes / bandwidth)
    """
    c = _cfg(config)
    m = c.dims()
    s = dtype_bytes if dtype_bytes is not None else DTYPE_BYTES.get(normalize_dtype(dtype) or dtype, 2)
    s_kv = kv_dtype_bytes if kv_dtype_bytes is not None else s
    tokens = float(batch) * float(query_tokens)
    head_tokens = float(batch) if lm_head_tokens is None else float(lm_head_tokens)
    lm = m.vocab * m.hidden
    body = compute_params(c) - lm
    linear = prefill_linear_flops(body, tokens)
    head = prefill_linear_flops(lm, head_tokens)
    n_sw = sliding_layers(c)
    window = float(c.sliding_window or 0)  # n_sw > 0 only with a window
    n_full = m.layers - n_sw
    attn = attention_flops(n_full, m.heads, m.head_dim, batch, query_tokens, context, causal)
    if n_sw:
        attn += (4.0 * n_sw * m.heads * m.head_dim * batch * query_tokens
                 * _window_keys(query_tokens, context, causal, window))
    flops = linear + head + attn
    per_pos = kv_bytes_per_token(m.layers, 1, m.head_dim, m.kv_heads, s_kv)
    cached = max(float(context) - float(query_tokens), 0.0)
    kv_read = float(batch) * cached * per_pos
    if n_sw:
        # A windowed layer reads at most its last W positions of the cache.
        per_layer = per_pos / float(m.layers)
        kv_read -= float(batch) * n_sw * per_layer * max(cached - window, 0.0)
    kv_write = float(batch) * float(query_tokens) * per_pos
    # Quantized weights (quantization_config) stream at their own width, not the activations'.
    w = streamed_weight_bytes(c, c.weight_bytes_per_param or s, tokens)
    nbytes = w + kv_read + kv_write
    t_mem = nbytes / spec.bandwidth
    t_cmp = flops / spec.peak(dtype)
    return StepLight(tokens, flops, linear, head, attn, nbytes, w, kv_read, kv_write,
                     max(t_mem, t_cmp), "compute" if t_cmp > t_mem else "memory")


def speed_of_light_steps(
    step_times_ns: Sequence[int] | pd.Series,
    config: ConfigLike,
    batch: int,
    context: int | Sequence[int],
    spec: GpuSpec,
    dtype_bytes: float,
    phase: Literal["decode", "prefill"],
    *,
    dtype: str | None = None,
    causal: bool = True,
    lm_head_all_tokens: bool = False,
) -> pd.DataFrame:
    """Return, per measured step, how far it is from the hardware's speed of light.

    ``context``: decode: the tokens in each sequence's KV cache before each step (one int for
    all steps, or one per step); prefill: the prompt length T of each sequence.

    Each step is :func:`step_speed_of_light` with decode: Tq = 1, C = context + 1; prefill:
    Tq = C = T (attention causal unless ``causal=False``), the lm_head on the last token only
    unless ``lm_head_all_tokens``. The peak is ``spec.peak(dtype)``, dtype defaulting from
    ``dtype_bytes`` (2 -> bf16, 1 -> fp8, 4 -> fp32).

    Columns: step, context, measured_ns, ideal_ns, ratio (measured / ideal, >= 1 on a correct
    spec), fraction_of_sol (ideal / measured), tokens, tokens_per_s, tokens_per_s_ideal,
    bytes, flops, limit ("memory" | "compute": the ceiling that sets the ideal).
    """
    if phase not in ("decode", "prefill"):
        raise UsageError(f"phase must be 'decode' or 'prefill', got {phase!r}")
    if batch < 1:
        raise UsageError(f"batch must be >= 1, got {batch}")
    c = _cfg(config)
    times = [int(t) for t in step_times_ns]
    ctxs = [int(context)] * len(times) if isinstance(context, (int, np.integer)) else list(context)
    if len(ctxs) != len(times):
        raise UsageError(f"{len(ctxs)} context values for {len(times)} steps")
    dt = dtype or dtype_of_size(dtype_bytes) or "bf16"

    rows: list[dict[str, Any]] = []
    for i, (t_ns, ctx) in enumerate(zip(times, ctxs)):
        if phase == "decode":
            sl = step_speed_of_light(c, spec, batch=batch, query_tokens=1, context=ctx + 1,
                                     causal=causal, dtype=dt, dtype_bytes=dtype_bytes)
        else:
            sl = step_speed_of_light(c, spec, batch=batch, query_tokens=ctx, context=ctx,
                                     lm_head_tokens=batch * ctx if lm_head_all_tokens else batch,
                                     causal=causal, dtype=dt, dtype_bytes=dtype_bytes)
        rows.append(_sol_row(i, ctx, t_ns, sl))
    cols = [
        "step", "context", "measured_ns", "ideal_ns", "ratio", "fraction_of_sol", "tokens",
        "tokens_per_s", "tokens_per_s_ideal", "bytes", "flops", "limit",
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=cols)


def _sol_row(i: int, ctx: float, t_ns: int, sl: StepLight) -> dict[str, Any]:
    ideal_s = sl.ideal_s
    meas_s = t_ns * 1e-9
    return {
        "step": i,
        "context": ctx,
        "measured_ns": t_ns,
        "ideal_ns": ideal_s * 1e9,
        "ratio": meas_s / ideal_s if ideal_s else math.nan,
        "fraction_of_sol": ideal_s / meas_s if meas_s else math.nan,
        "tokens": sl.tokens,
        "tokens_per_s": sl.tokens / meas_s if meas_s else math.nan,
        "tokens_per_s_ideal": sl.tokens / ideal_s if ideal_s else math.nan,
        "bytes": sl.bytes,
        "flops": sl.flops,
        "limit": sl.limit,
    }
