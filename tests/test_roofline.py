"""Roofline arithmetic (the seed lab's figures, corrected per docs/domain.md section 2) and the
GEMM/attention roofline table on real H100 traces."""

from __future__ import annotations

import dataclasses
import gzip
import json
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest

import profdiag
from profdiag import hardware, roofline as rl, schema
from profdiag.errors import UsageError

TRACES = Path("/work/shared/traces")
H100 = hardware.get("h100-sxm")
# The lab's A100 figure: 312 TFLOP/s fp16 and 2.0 TB/s (the datasheet's 2.039 rounded).
A100_LAB = dataclasses.replace(hardware.get("a100-sxm4-80gb"), bandwidth=2.0e12)

LLAMA3_8B = {"layers": 32, "hidden": 4096, "heads": 32, "kv_heads": 8, "ffn": 14336, "vocab": 128256}
LLAMA2_7B_HF = {
    "num_hidden_layers": 32,
    "hidden_size": 4096,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "intermediate_size": 11008,
    "vocab_size": 32000,
}

# --------------------------------------------------------------------------- the lab's numbers


def test_a100_ridge_point_is_156() -> None:
    assert rl.ridge_point(A100_LAB, "fp16") == pytest.approx(156.0)
    # With the datasheet's 2.039 TB/s the ridge is a little lower.
    assert rl.ridge_point(hardware.get("a100"), "fp16") == pytest.approx(153.0, abs=0.1)


def test_intensity_is_tokens_over_dtype_and_model_size_cancels() -> None:
    for n_params in (8e9, 70e9):
        for tokens in (1, 64, 2048):
            flops = rl.prefill_linear_flops(n_params, tokens)
            assert rl.arithmetic_intensity(flops, n_params * 2) == pytest.approx(tokens)
            assert rl.weight_only_intensity(tokens, 2) == pytest.approx(tokens)
    assert rl.weight_only_intensity(1, 1) == 2  # fp8 doubles it


def test_single_decode_is_bandwidth_bound_at_under_1_percent_of_compute() -> None:
    i = rl.weight_only_intensity(1, 2)
    assert rl.bound(i, A100_LAB, "fp16") == "memory"
    utilisation = rl.attainable_flops(i, A100_LAB, "fp16") / A100_LAB.peak("fp16")
    assert utilisation == pytest.approx(1 / 156)
    assert utilisation < 0.01


def test_prefill_2048_is_compute_bound() -> None:
    i = rl.weight_only_intensity(2048, 2)
    assert rl.bound(i, A100_LAB, "fp16") == "compute"
    assert rl.attainable_flops(i, A100_LAB, "fp16") == A100_LAB.peak("fp16")


def test_critical_batch_size_is_the_ridge() -> None:
    b = rl.critical_batch_size(A100_LAB, "fp16")
    assert b == pytest.approx(156.0)
    assert rl.bound(rl.weight_only_intensity(155, 2), A100_LAB, "fp16") == "memory"
    assert rl.bound(rl.weight_only_intensity(156, 2), A100_LAB, "fp16") == "compute"
    # fp8 weights: one byte per weight, so half the batch reaches the same intensity.
    assert rl.critical_batch_size(A100_LAB, "fp16", dtype_bytes=1) == pytest.approx(78.0)
    assert rl.critical_batch_size(H100, "bf16") == pytest.approx(295, abs=1)


def test_decode_speed_limit_8b_fp16() -> None:
    sol = rl.decode_speed_of_light(16e9, 0, 1, 2.0e12)
    assert sol.tokens_per_s_per_seq == pytest.approx(125.0)
    assert sol.tokens_per_s == pytest.approx(125.0)
    assert sol.step_time_s == pytest.approx(8e-3)
    assert sol.limit == "memory"
    # H100 SXM: ~209 tokens/s.
    assert rl.decode_speed_of_light(16e9, 0, 1, H100.bandwidth).tokens_per_s_per_seq == pytest.approx(
        209.4, abs=0.1
    )


def test_batching_multiplies_decode_throughput_for_free() -> None:
    sol = rl.decode_speed_of_light(16e9, 0, 64, 2.0e12)
    assert sol.tokens_per_s == pytest.approx(8000.0)
    assert sol.tokens_per_s_per_seq == pytest.approx(125.0)


def test_kv_traffic_bends_the_decode_ceiling() -> None:
    kv = rl.kv_bytes_per_token(32, 2048, 128, 8, 2)  # 256 MiB per sequence per step
    sol = rl.decode_speed_of_light(16e9, kv, 64, 2.0e12)
    assert sol.bytes_per_step == pytest.approx(16e9 + 64 * kv)
    assert sol.tokens_per_s < 8000 / 2  # 64 x 256 MiB > the 16 GB weight read
    # The compute ceiling takes over past the critical batch size.
    big = rl.decode_speed_of_light(16e9, 0, 1024, 2.0e12, flops_per_token=2 * 8e9, peak_flops=312e12)
    assert big.limit == "compute"
    assert big.tokens_per_s == pytest.approx(312e12 / (2 * 8e9))
    with pytest.raises(UsageError):
        rl.decode_speed_of_light(16e9, 0, 0, 2.0e12)


def test_kv_bytes_per_token_256_mib() -> None:
    assert rl.kv_bytes_per_token(32, 2048, 128, 8, 2) == 256 * 2**20


def test_prefill_flops_corrected_figures() -> None:
    L, H, T, d, h = 32, 4096, 2048, 128, 32
    n = 12 * L * H**2  # 4H^2 attention + 8H^2 MLP per layer: the seed's 24·L·H² FLOPs/token
    linear = rl.prefill_linear_flops(n, T)
    assert linear == 24 * L * H**2 * T
    assert linear == pytest.approx(26.4e12, rel=1e-3)
    # The seed's 12.9 GFLOP is the per-token figure: it dropped the factor T.
    assert linear / T == pytest.approx(12.88e9, rel=1e-3)
    attn_causal = rl.prefill_attention_flops(L, T, d, h, causal=True)
    assert attn_causal == pytest.approx(1.0995e12, rel=1e-4)
    assert rl.prefill_attention_flops(L, T, d, h) == pytest.approx(2 * 1.0995e12, rel=1e-4)
    assert rl.prefill_flops(n, L, T, d, h) == pytest.approx(linear + 2 * attn_causal)
    assert rl.prefill_flops(n, L, T, d, h, causal=True) == pytest.approx(linear + attn_causal)
    assert rl.decode_attention_flops(L, T, d, h) == 4 * L * T * d * h


def test_gemm_formulas() -> None:
    assert rl.gemm_flops(2048, 2048, 512) == 2 * 2048 * 2048 * 512
    assert rl.gemm_flops(4, 5, 6, batch=3) == 3 * 2 * 4 * 5 * 6
    assert rl.gemm_min_bytes(1, 2048, 2048, 2) == (2048 + 2048 * 2048 + 2048) * 2
    # Weight-only intensity for a linear layer is ~ 2·tokens/s.
    i = rl.arithmetic_intensity(rl.gemm_flops(1, 4096, 4096), rl.gemm_min_bytes(1, 4096, 4096, 2))
    assert i == pytest.approx(1.0, rel=1e-3)
    assert rl.arithmetic_intensity(1.0, 0) == float("inf")


def test_model_params_known_models() -> None:
    assert rl.model_params(LLAMA3_8B) == 8_030_261_248
    assert rl.model_params(LLAMA2_7B_HF) == 6_738_415_616
    assert rl.model_weight_bytes(LLAMA3_8B, 2) == 2 * 8_030_261_248
    cfg = rl.ModelConfig.from_dict(LLAMA2_7B_HF)
    assert cfg.d == 128 and cfg.kv_heads == 32
    # The embedding table is gathered, not streamed: a decode step reads everything else.
    parts = rl.model_params_breakdown(LLAMA3_8B)
    assert rl.streamed_weight_bytes(LLAMA3_8B, 2) == 2 * (rl.model_params(LLAMA3_8B) - parts["embedding"])
    tied = dict(LLAMA3_8B, tie_embeddings=True)
    assert rl.model_params(tied) == rl.model_params(LLAMA3_8B) - parts["lm_head"]
    assert rl.compute_params(tied) == rl.compute_params(LLAMA3_8B)
    # Objects with to_dict() (the project's ModelSpec) are accepted too.
    class _Spec:
        def to_dict(self) -> dict[str, Any]:
            return dict(LLAMA3_8B, dtype="bf16", head_dim_unused=None)

    assert rl.model_params(_Spec()) == 8_030_261_248
    with pytest.raises(UsageError, match="model config lacks"):
        rl.ModelConfig.from_dict({"hidden": 1})


def test_model_params_of_the_trace_configs() -> None:
    hf = json.loads((TRACES / "configs" / "llama_1b.json").read_text())
    cfg = rl.ModelConfig.from_dict(hf)
    assert (cfg.layers, cfg.hidden, cfg.heads, cfg.kv_heads, cfg.d) == (16, 2048, 32, 8, 64)
    # 16 x (q,o 2048² + k,v 2048x512 + 3 x 2048x8192 + 2 norms) + untied 128256x2048 twice + norm
    assert rl.model_params(cfg) == 1_498_482_688


# --------------------------------------------------------------------------- gemm_table, synthetic


def _rows(specs: list[dict[str, Any]]) -> pd.DataFrame:
    """Canonical kernel rows from short dicts (op, dims, types, dur, ext, [name, kind])."""
    cols: dict[str, list[Any]] = {
        k: []
        for k in ("name", "kind", "start_ns", "dur_ns", "device", "external_id", "op_name", "input_dims", "input_types")
    }
    for i, s in enumerate(specs):
        cols["name"].append(s.get("name", f"k{i}"))
        cols["kind"].append(s.get("kind", "kernel"))
        cols["start_ns"].append(s.get("start", i * 1000))
        cols["dur_ns"].append(s["dur"])
        cols["device"].append(0)
        cols["external_id"].append(s.get("ext", pd.NA))
        cols["op_name"].append(s["op"])
        cols["input_dims"].append(s["dims"] if isinstance(s["dims"], str) else json.dumps(s["dims"]))
        t = s.get("types", ["c10::BFloat16", "c10::BFloat16"])
        cols["input_types"].append(json.dumps(t) if t is not None else pd.NA)
    return schema.from_columns(cols)


def test_gemm_shapes_per_op() -> None:
    ev = _rows(
        [
            {"op": "aten::mm", "dims": [[8, 16], [16, 32]], "dur": 1000, "ext": 1},
            {"op": "aten::addmm", "dims": [[32], [8, 16], [16, 32], [], []], "dur": 1000, "ext": 2},
            {"op": "aten::linear", "dims": [[2, 4, 16], [32, 16], [32]], "dur": 1000, "ext": 3},
            {"op": "aten::bmm", "dims": [[3, 8, 16], [3, 16, 32]], "dur": 1000, "ext": 4},
            {"op": "aten::matmul", "dims": [[2, 4, 16], [16, 32]], "dur": 1000, "ext": 5},
            {"op": "aten::matmul", "dims": [[3, 8, 16], [1, 16, 32]], "dur": 1000, "ext": 6},
        ]
    )
    t = rl.gemm_table(ev, H100).set_index("external_id")
    assert list(t.loc[[1, 2, 3, 5], "m"]) == [8, 8, 8, 8]
    assert (t["k"] == 16).all() and (t["n"] == 32).all()
    assert t.loc[1, "flops"] == rl.gemm_flops(8, 16, 32)
    assert t.loc[1, "bytes"] == rl.gemm_min_bytes(8, 16, 32, 2)
    assert t.loc[2, "bytes"] == rl.gemm_min_bytes(8, 16, 32, 2) + 32 * 2  # the bias is read
    assert t.loc[3, "bytes"] == rl.gemm_min_bytes(8, 16, 32, 2) + 32 * 2
    assert t.loc[4, "batch"] == 3 and t.loc[4, "flops"] == 3 * rl.gemm_flops(8, 16, 32)
    assert t.loc[4, "bytes"] == rl.gemm_min_bytes(8, 16, 32, 2, batch=3)
    assert t.loc[6, "batch"] == 3 and t.loc[6, "flops"] == 3 * rl.gemm_flops(8, 16, 32)
    assert (t["op_class"] == "gemm").all()


def test_split_k_kernels_are_one_call() -> None:
    dims = [[1, 8192], [8192, 2048]]
    ev = _rows(
        [
            {"op": "aten::mm", "dims": dims, "dur": 15000, "ext": 7, "name": "nvjet_splitK"},
            {"op": "aten::mm", "dims": dims, "dur": 1000, "ext": 7, "name": "splitKreduce_kernel"},
            {"op": "aten::mm", "dims": dims, "dur": 16000, "ext": 8, "name": "nvjet_splitK"},
        ]
    )
    t = rl.gemm_table(ev, H100)
    assert len(t) == 2
    first = t.iloc[0]
    assert first["kernels"] == 2 and first["dur_ns"] == 16000
    assert first["kernel"] == "nvjet_splitK"  # the longest kernel names the call
    assert first["flops"] == rl.gemm_flops(1, 8192, 2048)
    # Without external ids each kernel stands alone.
    ev2 = ev.copy()
    ev2["external_id"] = pd.array([pd.NA] * 3, dtype="Int64")
    assert len(rl.gemm_table(ev2, H100)) == 3


def test_dtypes_bounds_and_suspects() -> None:
    big = [[4096, 4096], [4096, 4096]]
    ev = _rows(
        [
            # 137 GFLOP in 200 µs = 687 TFLOP/s: compute-bound, plausible.
            {"op": "aten::mm", "dims": big, "dur": 200_000, "ext": 1},
            # The same in 100 µs = 1374 TFLOP/s > 989.5 peak: suspect, not reported as > 100%.
            {"op": "aten::mm", "dims": big, "dur": 100_000, "ext": 2},
            {"op": "aten::mm", "dims": big, "dur": 200_000, "ext": 3, "types": ["c10::Half", "c10::Half"]},
            {"op": "aten::mm", "dims": big, "dur": 5_000_000, "ext": 4, "types": ["float", "float"]},
            {"op": "aten::mm", "dims": big, "dur": 200_000, "ext": 5, "types": None},
            {"op": "aten::mm", "dims": [[1, 4096], [4096, 4096]], "dur": 20_000, "ext": 6},
        ]
    )
    t = rl.gemm_table(ev, H100).set_index("external_id")
    assert t.loc[1, "bound"] == "compute" and not t.loc[1, "suspect"]
    assert 0.6 < t.loc[1, "efficiency"] < 0.8
    assert t.loc[2, "suspect"] and pd.isna(t.loc[2, "efficiency"]) and t.loc[2, "efficiency_raw"] > 1
    assert t.loc[3, "dtype"] == "fp16"
    assert t.loc[4, "dtype"] == "fp32" and t.loc[4, "peak_flops"] == H100.peak("fp32")
    assert t.loc[4, "bytes"] == rl.gemm_min_bytes(4096, 4096, 4096, 4)
    assert t.loc[5, "dtype"] == "bf16" and t.loc[5, "dtype_assumed"]
    assert not t.loc[1, "dtype_assumed"]
    assert t.loc[6, "bound"] == "memory"
    # 33.6 MB in 20 µs = 1.68 TB/s, against the 3.35 TB/s roof: ~50 %.
    assert t.loc[6, "achieved_bytes_s"] == pytest.approx(t.loc[6, "bytes"] / 20e-6)
    assert t.loc[6, "efficiency"] == pytest.approx(t.loc[6, "achieved_bytes_s"] / H100.bandwidth)
    # fp32 GEMMs that ran on TF32 tensor cores: rate them against TF32.
    t32 = rl.gemm_table(ev, H100, fp32_as="tf32").set_index("external_id")
    assert t32.loc[4, "peak_flops"] == H100.peak("tf32")
    # fp8 on an A100 (no fp8 peak) falls back to the default dtype's peak.
    ev8 = _rows([{"op": "aten::mm", "dims": big, "dur": 1_000_000, "types": ["c10::Float8_e4m3fn"] * 2}])
    t8 = rl.gemm_table(ev8, A100_LAB)
    assert t8.iloc[0]["dtype"] == "fp8" and t8.iloc[0]["peak_flops"] == A100_LAB.peak("bf16")


def test_attention_rows() -> None:
    ev = _rows(
        [
            {
                "op": "aten::_cudnn_attention_forward",
                "dims": [[1, 32, 2048, 64], [1, 8, 2048, 64], [1, 8, 2048, 64], [], [], [], []],
                "types": ["c10::BFloat16"] * 3 + ["", "Scalar"],
                "dur": 60_000,
                "ext": 1,
            },
            {
                # flash forward takes [B, T, H, d]
                "op": "aten::_flash_attention_forward",
                "dims": [[2, 1, 32, 64], [2, 1024, 8, 64], [2, 1024, 8, 64], [], []],
                "dur": 10_000,
                "ext": 2,
            },
            # varlen (packed 3-D) is skipped, never guessed
            {"op": "aten::_flash_attention_forward", "dims": [[100, 32, 64], [100, 8, 64], [100, 8, 64]], "dur": 1, "ext": 3},
        ]
    )
    t = rl.gemm_table(ev, H100).set_index("external_id")
    assert list(t.index) == [1, 2]
    assert (t["op_class"] == "attention").all()
    pre = t.loc[1]
    assert pre["flops"] == 4 * 1 * 32 * 2048 * 2048 * 64
    q, kv = 32 * 2048 * 64, 8 * 2048 * 64
    assert pre["bytes"] == (q + 2 * kv + q) * 2
    assert (pre["batch"], pre["m"], pre["k"], pre["n"]) == (32, 2048, 64, 2048)
    assert pre["bound"] == "compute"
    dec = t.loc[2]
    assert dec["flops"] == 4 * 2 * 32 * 1 * 1024 * 64 and dec["bound"] == "memory"
    causal = rl.gemm_table(ev, H100, causal_attention=True).set_index("external_id")
    assert causal.loc[1, "flops"] == pre["flops"] / 2
    assert causal.loc[2, "flops"] == dec["flops"]  # Tq != Tk: decode is not halved


def test_gemm_table_ignores_what_it_cannot_use() -> None:
    ev = _rows(
        [
            {"op": "aten::mul", "dims": [[4], [4]], "dur": 10},
            {"op": "aten::mm", "dims": "not json", "dur": 10},
            {"op": "aten::mm", "dims": [[4, 5], [6, 7]], "dur": 10},  # inner dims disagree
            {"op": "aten::mm", "dims": [[4, 5], [5, 7]], "dur": 10, "kind": "cpu_op"},
            {"op": "aten::mm", "dims": [[4, 5], [5, 7]], "dur": 0},  # zero duration: NaN rates
        ]
    )
    t = rl.gemm_table(ev, H100)
    assert len(t) == 1
    assert pd.isna(t.iloc[0]["achieved_flops_s"]) and not t.iloc[0]["suspect"]
    empty = rl.gemm_table(schema.empty_events(), H100)
    assert empty.empty and list(empty.columns) == rl.TABLE_COLUMNS
    s = rl.summarise(empty)
    assert s["overall"]["calls"] == 0 and s["overall"]["achieved_flops_s"] is None


def test_summarise() -> None:
    ev = _rows(
        [
            {"op": "aten::mm", "dims": [[4096, 4096], [4096, 4096]], "dur": 200_000, "ext": 1},
            {"op": "aten::mm", "dims": [[1, 4096], [4096, 4096]], "dur": 20_000, "ext": 2},
            {"op": "aten::mm", "dims": [[4096, 4096], [4096, 4096]], "dur": 100_000, "ext": 3},  # suspect
            {
                "op": "aten::_cudnn_attention_forward",
                "dims": [[1, 32, 1, 64], [1, 8, 1024, 64], [1, 8, 1024, 64]],
                "dur": 7_000,
                "ext": 4,
            },
        ]
    )
    t = rl.gemm_table(ev, H100)
    s = rl.summarise(t)
    assert set(s) == {"gemm", "attention", "overall"}
    g = s["gemm"]
    assert g["calls"] == 3 and g["suspect_calls"] == 1
    assert g["time_ns"] == 320_000
    assert g["flops"] == pytest.approx(t.loc[t["op_class"] == "gemm", "flops"].sum())
    assert g["achieved_flops_s"] == pytest.approx(g["flops"] / 320e-6)
    assert g["memory_bound_time_share"] == pytest.approx(20 / 320)
    assert g["compute_bound_calls"] == 2 and g["memory_bound_calls"] == 1
    # The suspect call does not enter the median.
    ok = t[(t["op_class"] == "gemm") & ~t["suspect"]]["efficiency"]
    assert g["median_efficiency"] == pytest.approx(ok.median())
    assert s["attention"]["calls"] == 1 and s["attention"]["memory_bound_time_share"] == 1.0
    assert s["overall"]["calls"] == 4
    json.dumps(s)  # plain types only


# --------------------------------------------------------------------------- speed of light, synthetic


def test_speed_of_light_steps_decode() -> None:
    cfg = rl.ModelConfig.from_dict(LLAMA3_8B)
    # Weights once + each sequence's KV read (1024 positions) and written (its one new token).
    ideal_bytes = (rl.streamed_weight_bytes(cfg, 2) + 4 * rl.kv_bytes_per_token(32, 1024, 128, 8, 2)
                   + 4 * rl.kv_bytes_per_token(32, 1, 128, 8, 2))
    ideal_s = ideal_bytes / A100_LAB.bandwidth
    steps = [int(ideal_s * 1e9 * 2), int(ideal_s * 1e9 * 4)]
    t = rl.speed_of_light_steps(steps, cfg, 4, 1024, A100_LAB, 2, "decode", dtype="fp16")
    assert list(t["limit"]) == ["memory", "memory"]
    assert t["ideal_ns"].iloc[0] == pytest.approx(ideal_s * 1e9)
    assert list(t["ratio"].round(3)) == [2.0, 4.0]
    assert list(t["fraction_of_sol"].round(3)) == [0.5, 0.25]
    assert t["tokens_per_s_ideal"].iloc[0] == pytest.approx(4 / ideal_s)
    assert t["tokens_per_s"].iloc[0] == pytest.approx(4 / (steps[0] * 1e-9))
    # Per-step contexts; a growing KV cache raises the ideal step time.
    t2 = rl.speed_of_light_steps(steps, cfg, 4, [1024, 8192], A100_LAB, 2, "decode")
    assert t2["ideal_ns"].iloc[1] > t2["ideal_ns"].iloc[0]
    with pytest.raises(UsageError):
        rl.speed_of_light_steps(steps, cfg, 4, [1], A100_LAB, 2, "decode")
    with pytest.raises(UsageError):
        rl.speed_of_light_steps(steps, cfg, 4, 1, A100_LAB, 2, "train")  # type: ignore[arg-type]


def test_speed_of_light_steps_prefill() -> None:
    cfg = rl.ModelConfig.from_dict(LLAMA3_8B)
    t = rl.speed_of_light_steps([100_000_000], cfg, 1, 2048, H100, 2, "prefill")
    row = t.iloc[0]
    assert row["limit"] == "compute"
    body = rl.compute_params(cfg) - cfg.vocab * cfg.hidden
    flops = 2 * body * 2048 + 2 * cfg.vocab * cfg.hidden + rl.prefill_attention_flops(32, 2048, 128, 32, True)
    assert row["flops"] == pytest.approx(flops)
    assert row["ideal_ns"] == pytest.approx(flops / H100.peak("bf16") * 1e9)
    assert row["tokens"] == 2048
    full = rl.speed_of_light_steps([100_000_000], cfg, 1, 2048, H100, 2, "prefill", lm_head_all_tokens=True)
    assert full.iloc[0]["flops"] > row["flops"]


# --------------------------------------------------------------------------- real H100 traces


def _canonical_kernels(path: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Kernel rows of a torch trace in canonical form, built directly from the JSON.

    Each kernel takes op_name / input_dims / input_types from the cpu_op whose
    ``args["External id"]`` equals its own (the op that launched it); µs floats -> int ns.
    """
    doc = orjson.loads(gzip.open(path).read())
    ops: dict[int, dict[str, Any]] = {}
    for e in doc["traceEvents"]:
        if e.get("cat") == "cpu_op":
            x = e.get("args", {}).get("External id")
            if x is not None:
                ops.setdefault(x, e)
    cols: dict[str, list[Any]] = {
        k: []
        for k in ("name", "kind", "start_ns", "dur_ns", "device", "stream", "correlation", "external_id", "op_name", "input_dims", "input_types")
    }
    for e in doc["traceEvents"]:
        if e.get("cat") != "kernel":
            continue
        a = e.get("args", {})
        x = a.get("External id")
        op = ops.get(x)
        cols["name"].append(e["name"])
        cols["kind"].append("kernel")
        cols["start_ns"].append(int(round(e["ts"] * 1000)))
        cols["dur_ns"].append(int(round(e["dur"] * 1000)))
        cols["device"].append(a.get("device"))
        cols["stream"].append(a.get("stream"))
        cols["correlation"].append(a.get("correlation"))
        cols["external_id"].append(x)
        oa = op["args"] if op else {}
        cols["op_name"].append(op["name"] if op else pd.NA)
        cols["input_dims"].append(json.dumps(oa["Input Dims"]) if "Input Dims" in oa else pd.NA)
        cols["input_types"].append(json.dumps(oa["Input type"]) if "Input type" in oa else pd.NA)
    return schema.from_columns(cols), doc


def _gpu_ranges(doc: dict[str, Any], prefix: str) -> list[int]:
    """Durations (ns) of the gpu_user_annotation ranges named ``prefix*``, in time order."""
    evs = [e for e in doc["traceEvents"] if e.get("cat") == "gpu_user_annotation" and e["name"].startswith(prefix)]
    return [int(round(e["dur"] * 1000)) for e in sorted(evs, key=lambda e: e["ts"])]


def _load_events(path: Path) -> pd.DataFrame:
    """The project's own parser's events (a parser failure fails the test)."""
    return profdiag.load(path).events


def _trace(name: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """(canonical events from profdiag.load, raw JSON document) of a real trace."""
    path = TRACES / "torch" / name
    if not path.exists():
        pytest.skip(f"{path} not available")
    _, doc = _canonical_kernels(path)
    return _load_events(path), doc


@pytest.mark.parametrize(
    "name", ["own_1b_prefill_T2048_B1.json.gz", "own_1b_decode_ctx1024_B1_steps8.json.gz"]
)
def test_parser_rows_give_the_same_table(name: str) -> None:
    """profdiag.load's kernel rows and the direct JSON construction agree call for call."""
    path = TRACES / "torch" / name
    if not path.exists():
        pytest.skip(f"{path} not available")
    # The parser keeps SDPA's is_causal (Concrete Inputs), the direct construction does not:
    # with causal_attention=True the shapes (Tq == Tk) give the same causal count.
    a = rl.gemm_table(_load_events(path), H100, causal_attention=True)
    b = rl.gemm_table(_canonical_kernels(path)[0], H100, causal_attention=True)
    cols = ["external_id", "op_class", "m", "k", "n", "kernels", "dur_ns", "flops", "bytes", "bound"]
    pd.testing.assert_frame_equal(a[cols], b[cols])


@pytest.fixture(scope="module")
def prefill_2048() -> tuple[pd.DataFrame, dict[str, Any]]:
    return _trace("own_1b_prefill_T2048_B1.json.gz")


@pytest.fixture(scope="module")
def decode_b1() -> tuple[pd.DataFrame, dict[str, Any]]:
    return _trace("own_1b_decode_ctx1024_B1_steps8.json.gz")


def test_trace_device_maps_to_h100_sxm(prefill_2048: tuple[pd.DataFrame, dict[str, Any]]) -> None:
    props = prefill_2048[1]["deviceProperties"][0]
    spec = hardware.lookup(props["name"], sm_count=props["numSms"], memory_bytes=props["totalGlobalMem"])
    assert spec is not None and spec.key == "h100-sxm"


def test_real_prefill_gemms_are_compute_bound(prefill_2048: tuple[pd.DataFrame, dict[str, Any]]) -> None:
    ev, _ = prefill_2048
    t = rl.gemm_table(ev, H100)
    gemm = t[t["op_class"] == "gemm"]
    # 7 GEMMs x 16 layers + the lm_head (manifest: gemms_per_forward 113).
    assert len(gemm) == 113
    assert not t["suspect"].any()
    assert (gemm["dtype"] == "bf16").all() and not gemm["dtype_assumed"].any()
    prompt = gemm[gemm["m"] == 2048]
    assert len(prompt) == 112
    assert (prompt["bound"] == "compute").all()
    assert (prompt["intensity"] > H100.ridge("bf16")).all()
    # Achieved rates are physical: well above 10% of peak, never above it.
    assert (prompt["achieved_flops_s"] > 0.1 * H100.peak("bf16")).all()
    assert (prompt["achieved_flops_s"] <= H100.peak("bf16")).all()
    # The lm_head runs on the last position only: m = 1, a memory-bound GEMV.
    head = gemm[gemm["m"] == 1]
    assert len(head) == 1 and head.iloc[0]["bound"] == "memory"
    s = rl.summarise(t)
    assert s["gemm"]["compute_bound_time_share"] > 0.9
    assert 0.3 < s["gemm"]["median_efficiency"] <= 1.0
    # Causal prefill attention: 16 calls, compute-bound.
    attn = t[t["op_class"] == "attention"]
    assert len(attn) == 16 and (attn["bound"] == "compute").all()


def test_real_decode_gemms_are_memory_bound(decode_b1: tuple[pd.DataFrame, dict[str, Any]]) -> None:
    ev, _ = decode_b1
    t = rl.gemm_table(ev, H100)
    gemm = t[t["op_class"] == "gemm"]
    assert len(gemm) == 113 * 8
    # Split-K down projections launch a reduce kernel too: more kernels than calls.
    assert gemm["kernels"].sum() > len(gemm)
    assert (gemm[gemm["kernels"] > 1]["kernel"].str.contains("splitK")).all()
    assert not t["suspect"].any()
    assert (gemm["m"] == 1).all()
    assert (gemm["bound"] == "memory").all()
    assert (gemm["intensity"] < 2).all()
    assert (gemm["achieved_bytes_s"] < H100.bandwidth).all()
    median_bw = gemm["achieved_bytes_s"].median()
    assert 0.1 * H100.bandwidth < median_bw < H100.bandwidth
    attn = t[t["op_class"] == "attention"]
    assert len(attn) == 16 * 8 and (attn["bound"] == "memory").all()


def test_real_decode_steps_are_slower_than_light() -> None:
    path = TRACES / "torch" / "own_1b_decode_ctx1024_B1_steps8_cudagraph.json.gz"
    if not path.exists():
        pytest.skip(f"{path} not available")
    _, doc = _canonical_kernels(path)
    steps = _gpu_ranges(doc, "decode_step_")
    assert len(steps) == 8
    cfg = json.loads((TRACES / "configs" / "llama_1b.json").read_text())
    t = rl.speed_of_light_steps(steps, cfg, 1, [1025 + i for i in range(8)], H100, 2, "decode")
    assert (t["limit"] == "memory").all()
    # Nothing beats the speed of light; a CUDA-graph decode of a 1B model is within ~10x of it.
    assert (t["ratio"] > 1).all() and (t["ratio"] < 10).all()
    # ~2.5 GB streamed per step at 3.35 TB/s: ~1300 tokens/s is the ceiling.
    assert 1000 < t["tokens_per_s_ideal"].iloc[0] < 1500


@pytest.mark.parametrize("compact", [False, True])
def test_a_call_takes_its_longest_kernel_and_first_recorded_types(compact: bool) -> None:
    """A call's kernel is its longest one (ties: the first), its dtype that of the first of
    its kernels recording input types; without kernel names a call's kernel reads ""."""
    dims = [[4, 64], [64, 128]]
    ev = _rows(
        [
            {"op": "aten::mm", "dims": dims, "dur": 500, "ext": 1, "name": "reduce", "types": None},
            {"op": "aten::mm", "dims": dims, "dur": 700, "ext": 1, "name": "gemm_a",
             "types": ["float", "float"]},
            {"op": "aten::mm", "dims": dims, "dur": 700, "ext": 1, "name": "gemm_b"},
            {"op": "aten::mm", "dims": dims, "dur": 300, "ext": 2, "name": "solo", "types": None},
        ]
    )
    if compact:
        ev = schema.compact(ev)
    t = rl.gemm_table(ev, H100).set_index("external_id")
    assert t.loc[1, "kernel"] == "gemm_a" and t.loc[1, "kernels"] == 3
    assert t.loc[1, "dur_ns"] == 1900 and t.loc[1, "start_ns"] == 0
    # the longest first: gemm_a (fp32) before gemm_b (bf16); reduce records none
    assert t.loc[1, "dtype"] == "fp32" and not t.loc[1, "dtype_assumed"]
    assert t.loc[2, "dtype"] == "bf16" and t.loc[2, "dtype_assumed"]
    assert t.loc[1, "bytes"] == rl.gemm_min_bytes(4, 64, 128, 4)
    unnamed = rl.gemm_table(ev.drop(columns=["name"]), H100)
    assert unnamed["kernel"].tolist() == ["", ""]
