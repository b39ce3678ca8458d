"""Speed of light from what each step ran; one model shape; config vs manifest precedence.

Every expected number is computed by hand in the test from the formulas of docs/roofline.md:
  FLOPs = 2·N_body·tokens + 2·N_lm_head·lm_head_tokens + attention
  attention (causal) = 4·L·h·d·B·Tq·(C − Tq/2)   (= 2·L·T²·d·h for a T-token prefill)
  bytes = weights once (embedding excluded) + KV read B·(C − Tq)·kv + KV written B·Tq·kv,
          kv = 2·L·h_kv·d·s per position
  ideal = max(FLOPs / peak, bytes / bandwidth)
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from profdiag import hardware, roofline as rl
from profdiag.diagnosis.sol import speed_of_light
from profdiag.errors import UsageError
from profdiag.modelspec import ModelSpec, from_hf_config, merge, read_hf_config

from helpers import FIXTURES, SHARED, diagnosed, shared_or_skip

H100 = hardware.get("h100-sxm")
PEAK = 989.5e12  # H100 SXM dense bf16 (rules/hardware.toml)
BW = 3.35e12

# Llama 1b of the shared traces, counted by hand.
L, HID, HEADS, KVH, FFN, VOCAB = 16, 2048, 32, 8, 8192, 128256
D = HID // HEADS  # 64
PER_LAYER = HID * HEADS * D * 2 + HID * KVH * D * 2 + 3 * HID * FFN  # q,o + k,v + gate,up,down
NORMS = (2 * L + 1) * HID
BODY = L * PER_LAYER + NORMS  # 973,146,112
LM = VOCAB * HID  # 262,668,288
KV_PER_POS = 2 * L * KVH * D * 2  # 32,768 bytes


def test_hand_constants() -> None:
    assert BODY == 973_146_112 and LM == 262_668_288
    # "2.47 GB of weights" of the issue: every matrix once, bf16, embedding gathered not read.
    assert (BODY + LM) * 2 == pytest.approx(2.47e9, rel=0.01)
    # "32 x 33.5 MB of KV" at context 1024.
    assert 1024 * KV_PER_POS == pytest.approx(33.5e6, rel=0.01)


def _sol(path: Path, **kw: object) -> dict:
    return diagnosed(str(path), **kw).to_dict()["roofline"]["speed_of_light"]


def test_prefill_T2048_hand_computation() -> None:
    path = shared_or_skip("traces", "torch", "own_1b_prefill_T2048_B1.json.gz")
    T = 2048
    attn = 2 * L * T * T * D * HEADS  # causal: half of 4·L·T²·d·h
    assert attn == pytest.approx(2.75e11, rel=0.01)
    # The trace's lm_head GEMM is [1, 2048] x [2048, 128256]: the last position only.
    flops = 2 * BODY * T + 2 * LM * 1 + attn
    hand = flops / PEAK
    assert 4e-3 < hand < 5e-3
    for kw in ({}, {"model_config": str(SHARED / "traces/configs/llama_1b.json")},
               {"model_config": str(SHARED / "traces/configs/llama_1b.json"),
                "use_manifest": False}):
        p = _sol(path, **kw)["phases"]["prefill"]
        assert p["limit"] == "compute"
        assert p["ideal_ns"] * 1e-9 == pytest.approx(hand, rel=0.10)
        assert p["tokens"] == T and p["batch"] == 1 and p["lm_head_tokens"] == 1
        assert p["attention"] == "causal"
        assert p["attention_flops"] == pytest.approx(attn, rel=0.01)
        assert p["tokens_per_s"] == pytest.approx(T / (p["median_measured_ns"] * 1e-9), rel=1e-3)


def test_decode_B32_hand_computation() -> None:
    path = shared_or_skip("traces", "torch", "own_1b_decode_ctx1024_B32_steps8.json.gz")
    B, C = 32, 1024
    nbytes = (BODY + LM) * 2 + B * C * KV_PER_POS + B * 1 * KV_PER_POS
    hand = nbytes / BW
    assert hand == pytest.approx(1.06e-3, rel=0.01)
    for kw in ({}, {"model_config": str(SHARED / "traces/configs/llama_1b.json")},
               {"model_config": str(SHARED / "traces/configs/llama_1b.json"),
                "use_manifest": False}):
        s = _sol(path, **kw)
        p = s["phases"]["decode"]
        assert s["batch"] == 32 and p["batch"] == 32 and p["tokens"] == 32  # not 1
        assert p["limit"] == "memory"
        assert p["ideal_ns"] * 1e-9 == pytest.approx(hand, rel=0.10)
        assert 1024 < p["context_tokens"] < 1040  # K length 1025..1032 over the 8 steps
        assert p["attention"] == "dense"
        assert p["tokens_per_s"] == pytest.approx(32 / (p["median_measured_ns"] * 1e-9), rel=1e-3)


def _hand_ideal(entry: dict) -> float:
    cfg = entry["config"]
    layers, hidden, heads, kvh, ffn, vocab = (cfg[k] for k in
                                              ("layers", "hidden", "heads", "kv_heads", "ffn", "vocab"))
    d = hidden // heads
    body = layers * (2 * hidden * heads * d + 2 * hidden * kvh * d + 3 * hidden * ffn) + (2 * layers + 1) * hidden
    lm = vocab * hidden
    kv = 2 * layers * kvh * d * 2
    B = entry["batch"]
    if entry["phase"] == "prefill":
        T = entry["tokens"]
        flops = 2 * body * B * T + 2 * lm * B + 2 * layers * B * T * T * d * heads
        nbytes = (body + lm) * 2 + B * T * kv
    else:
        C = entry["context"] + entry["steps"] / 2 + 0.5  # the median step's cache
        flops = 2 * (body + lm) * B + 4 * layers * heads * d * B * C
        nbytes = (body + lm) * 2 + B * (C - 1) * kv + B * kv
    return max(flops / PEAK, nbytes / BW)


def test_every_shared_trace_config_equals_manifest() -> None:
    torch_dir = shared_or_skip("traces", "torch")
    captures = json.loads((torch_dir / "manifest.json").read_text())["captures"]
    assert captures
    for entry in captures:
        path = torch_dir / entry["file"]
        cfg = SHARED / "traces" / "configs" / f"llama_{entry['config']['name']}.json"
        plain = _sol(path)["phases"][entry["phase"]]
        with_cfg = _sol(path, model_config=str(cfg))["phases"][entry["phase"]]
        assert with_cfg["ideal_ns"] == pytest.approx(plain["ideal_ns"], rel=0.05), entry["file"]
        assert with_cfg["tokens"] == plain["tokens"] == entry["batch"] * (
            entry["tokens"] if entry["phase"] == "prefill" else 1), entry["file"]
        hand = _hand_ideal(entry)
        assert plain["ideal_ns"] * 1e-9 == pytest.approx(hand, rel=0.10), entry["file"]


def test_cuda_graph_trace_without_manifest_says_why() -> None:
    path = shared_or_skip("traces", "torch", "own_tiny_decode_ctx512_B1_steps8_cudagraph.json.gz")
    cfg = shared_or_skip("traces", "configs", "llama_tiny.json")  # fixtures/ holds a copy
    s = _sol(path, model_config=str(cfg), use_manifest=False)
    assert s["available"] is False
    assert "no attention/GEMM shapes" in s["reason"]  # not a silent batch of 1


# --------------------------------------------------------------------------- one model shape


def test_head_dim_changes_flops_and_bytes() -> None:
    # Qwen3/Gemma style: head_dim 128 although hidden / heads = 64.
    base = {"num_hidden_layers": 2, "hidden_size": 2048, "num_attention_heads": 32,
            "num_key_value_heads": 8, "intermediate_size": 4096, "vocab_size": 1000}
    plain = from_hf_config(base)
    wide = from_hf_config({**base, "head_dim": 128})
    assert plain.d == 64 and wide.d == 128
    # q/o: hidden x heads·d; k/v: hidden x kv_heads·d (per layer), by hand:
    def params(d: int) -> int:
        return 2 * (2 * 2048 * 32 * d + 2 * 2048 * 8 * d + 3 * 2048 * 4096) + 5 * 2048 + 2 * 1000 * 2048
    assert rl.model_params(plain) == params(64)
    assert rl.model_params(wide) == params(128)
    T = 512
    a = rl.step_speed_of_light(plain, H100, batch=1, query_tokens=T, context=T, causal=True)
    b = rl.step_speed_of_light(wide, H100, batch=1, query_tokens=T, context=T, causal=True)
    assert b.attention_flops == pytest.approx(2 * 2 * T * T * 128 * 32)
    assert b.attention_flops == 2 * a.attention_flops
    body_wide = rl.compute_params(wide) - 1000 * 2048
    assert b.linear_flops == pytest.approx(2 * body_wide * T)
    assert b.kv_write_bytes == pytest.approx(T * 2 * 2 * 8 * 128 * 2)  # 2 x L x h_kv x d x s
    assert b.kv_write_bytes == 2 * a.kv_write_bytes
    assert b.weight_bytes - a.weight_bytes == pytest.approx(
        2 * (2 * 2048 * 32 * 64 + 2 * 2048 * 8 * 64) * 2)


def test_moe_counts_active_experts_for_flops_all_touched_for_bytes() -> None:
    cfg = from_hf_config({"num_hidden_layers": 1, "hidden_size": 64, "num_attention_heads": 4,
                          "num_key_value_heads": 4, "intermediate_size": 256,
                          "moe_intermediate_size": 32, "num_experts": 8,
                          "num_experts_per_tok": 2, "vocab_size": 100})
    assert cfg.is_moe and cfg.expert_ffn == 32
    attn = 4 * 64 * 64
    expert = 3 * 64 * 32
    router = 64 * 8
    assert rl.compute_params(cfg) == attn + 2 * expert + router + 3 * 64 + 100 * 64
    # One token touches 2 experts; 16 tokens touch all 8.
    assert rl.streamed_weight_bytes(cfg, 2, tokens=1) == 2 * (attn + 2 * expert + router + 3 * 64 + 6400)
    assert rl.streamed_weight_bytes(cfg, 2, tokens=16) == 2 * (attn + 8 * expert + router + 3 * 64 + 6400)


def test_one_class_and_readers() -> None:
    from profdiag.capture import config as cap

    assert rl.ModelConfig is ModelSpec and cap.ModelConfig is ModelSpec
    hf = {"num_hidden_layers": 4, "hidden_size": 512, "num_attention_heads": 8,
          "intermediate_size": 1536, "vocab_size": 32000, "tie_word_embeddings": True,
          "torch_dtype": "bfloat16", "num_local_experts": 4, "num_experts_per_tok": 2,
          "sliding_window": 4096, "layer_types": ["sliding_attention", "full_attention"],
          "quantization_config": {"quant_method": "fp8"}, "shared_expert_intermediate_size": 64}
    s = from_hf_config(hf)
    assert (s.kv_heads, s.tie_embeddings, s.dtype, s.experts, s.experts_per_tok,
            s.sliding_window, s.shared_expert_ffn) == (8, True, "bfloat16", 4, 2, 4096, 64)
    assert s.layer_types == ("sliding_attention", "full_attention")
    assert s.quantization == {"quant_method": "fp8"}
    # Lenient (diagnosis) drops what it cannot use; strict (capture) refuses.
    lenient = from_hf_config({"num_hidden_layers": 2, "hidden_size": "big"})
    assert lenient.hidden is None and lenient.missing_shape()
    with pytest.raises(UsageError, match="hidden_size must be a positive integer"):
        from_hf_config({"num_hidden_layers": 2, "hidden_size": "big"}, strict=True)
    with pytest.raises(UsageError, match="lacks hidden_size"):
        from_hf_config({"num_hidden_layers": 2}, strict=True)
    spec = read_hf_config(FIXTURES / "configs" / "llama_1b.json", strict=True)
    assert spec.name == "llama_1b" and spec.d == 64


def test_dims_are_the_checked_shape_fields() -> None:
    # Dense Llama 1b: head_dim falls back to hidden / heads = 2048 / 32 = 64; one "expert".
    dense = read_hf_config(FIXTURES / "configs" / "llama_1b.json", strict=True).dims()
    assert (dense.layers, dense.hidden, dense.heads, dense.kv_heads, dense.ffn, dense.vocab,
            dense.head_dim, dense.experts, dense.experts_per_tok) == (
        L, HID, HEADS, KVH, FFN, VOCAB, D, 1, 1)
    # MoE: the MLP width is one expert's (moe_intermediate_size 32, not intermediate_size).
    moe = ModelSpec(1, 64, 4, 4, 256, 100, moe_ffn=32, experts=8, experts_per_tok=2).dims()
    assert (moe.ffn, moe.experts, moe.experts_per_tok, moe.head_dim) == (32, 8, 2, 16)
    # 8 experts but no top-k: not a mixture of experts, so the dense width and 1 expert.
    odd = ModelSpec(1, 64, 4, 4, 256, 100, moe_ffn=32, experts=8).dims()
    assert (odd.ffn, odd.experts, odd.experts_per_tok) == (256, 1, 1)
    # The first missing field, in missing_shape()'s order, as one UsageError.
    partial = ModelSpec(layers=2, hidden=64, ffn=128)
    assert partial.missing_shape() == ["heads", "kv_heads", "vocab"]
    with pytest.raises(UsageError, match="model config lacks 'heads'"):
        partial.dims()


def test_config_never_erases_what_ran() -> None:
    arch = ModelSpec(16, 2048, 32, 8, 8192, 128256, source="config")
    run = ModelSpec(4, 512, 8, 8, 1536, 32000, batch=32, tokens=1, context=1024, phase="decode",
                    forwards=8, source="manifest", run_source="manifest")
    m = merge(arch, run)
    assert (m.layers, m.hidden, m.vocab) == (16, 2048, 128256)  # architecture: the config
    assert (m.batch, m.context, m.forwards, m.phase) == (32, 1024, 8, "decode")  # ran: manifest
    assert m.source == "config" and m.run_source == "manifest"


# --------------------------------------------------------------------------- annotation columns


def test_engine_annotation_columns_take_precedence() -> None:
    """Issue 12a's per-step columns win over shapes and manifest when non-null."""
    spec = ModelSpec(L, HID, HEADS, KVH, FFN, VOCAB, batch=1, tokens=1, context=10,
                     phase="decode", source="config", run_source="manifest")
    steps = pd.DataFrame({
        "step": [0, 1], "name": ["s0", "s1"], "phase": ["decode", "decode"],
        "wall_ns": [2_000_000, 2_000_000],
        "prefill_tokens": pd.array([0, pd.NA], dtype="Int64"),
        "decode_tokens": pd.array([64, pd.NA], dtype="Int64"),
        "kv_tokens": pd.array([64 * 2048, pd.NA], dtype="Int64"),
        "requests": pd.array([64, pd.NA], dtype="Int64"),
    })
    s = speed_of_light(steps, pd.DataFrame(), spec, H100)
    rows = {r["step"]: r for r in s["steps"]}
    # Step 0: 64 sequences at 2048 cached positions each, from the annotation.
    assert rows[0]["tokens"] == 64 and rows[0]["context_tokens"] == 2048
    nbytes = (BODY + LM) * 2 + 64 * 2047 * KV_PER_POS + 64 * KV_PER_POS
    assert rows[0]["ideal_ns"] == pytest.approx(nbytes / BW * 1e9, rel=1e-6)
    # Step 1: null annotation -> the manifest (batch 1, context 10 + 2nd step + 1).
    assert rows[1]["tokens"] == 1 and rows[1]["context_tokens"] == 12
    assert s["phases"]["decode"]["sources"]["tokens"] == "engine annotation (1 step); manifest (1 step)"


def test_is_causal_from_concrete_inputs() -> None:
    # aten::_cudnn_attention_forward records is_causal at position 10 (the shared prefill).
    cudnn = '["","","","","","","2048","2048","False","0.","True","False",""]'
    assert rl.causal_arg("aten::_cudnn_attention_forward", cudnn) is True
    sdpa_decode = '["","","","","0.","False","","True"]'  # SDPA(q, k, v, mask, p, is_causal, ...)
    assert rl.causal_arg("aten::scaled_dot_product_attention", sdpa_decode) is False
    assert rl.causal_arg("aten::_efficient_attention_forward",
                         '["","","","","","","","","0.","1"]') is True  # custom_mask_type 1
    assert rl.causal_arg("aten::mm", '["",""]') is None
    assert rl.causal_arg("aten::scaled_dot_product_attention", None) is None


def test_prefill_report_names_is_causal() -> None:
    path = shared_or_skip("traces", "torch", "own_1b_prefill_T2048_B1.json.gz")
    p = _sol(path)["phases"]["prefill"]
    assert p["sources"]["attention"] == "the attention op's is_causal=True"
    # The per-call roofline counts the causal half too: 2·B·H·T²·d per call, not 4·B·H·T²·d.
    summ = diagnosed(str(path)).to_dict()["roofline"]["summary"]["attention"]
    assert summ["flops"] == pytest.approx(16 * 2 * 32 * 2048**2 * 64)
    assert 0.25 < summ["median_efficiency"] < 0.40  # ~31%, not the dense-equivalent 62%


def test_sliding_window_layers_cap_attention_and_kv() -> None:
    base = {"num_hidden_layers": 4, "hidden_size": 256, "num_attention_heads": 4,
            "num_key_value_heads": 2, "intermediate_size": 512, "vocab_size": 100}
    full = from_hf_config(base)
    # Gemma-style: 2 of 4 layers see only the last 1024 positions.
    sw = from_hf_config({**base, "sliding_window": 1024,
                         "layer_types": ["sliding_attention", "full_attention"] * 2})
    assert rl.sliding_layers(sw) == 2
    # Qwen-style configs carry a window that is switched off.
    assert from_hf_config({**base, "sliding_window": 1024, "use_sliding_window": False}).sliding_window is None
    d, h, hkv = 64, 4, 2
    # Decode at 4096 cached positions: full layers see 4097 keys, windowed ones 1024.
    a = rl.step_speed_of_light(full, H100, batch=1, query_tokens=1, context=4097, causal=False)
    b = rl.step_speed_of_light(sw, H100, batch=1, query_tokens=1, context=4097, causal=False)
    assert a.attention_flops == pytest.approx(4 * 4 * h * d * 4097)
    assert b.attention_flops == pytest.approx(4 * h * d * (2 * 4097 + 2 * 1024))
    per_layer_pos = 2 * hkv * d * 2
    assert a.kv_read_bytes == pytest.approx(4 * 4096 * per_layer_pos)
    assert b.kv_read_bytes == pytest.approx((2 * 4096 + 2 * 1024) * per_layer_pos)
    # Causal prefill of T = 2048 from empty: a windowed query sees min(p + 1, 1024) keys.
    T, W = 2048, 1024
    keys_sw = (sum(range(1, W + 1)) + (T - W) * W) / T
    c = rl.step_speed_of_light(sw, H100, batch=1, query_tokens=T, context=T, causal=True)
    assert c.attention_flops == pytest.approx(4 * h * d * T * (2 * (T - T / 2) + 2 * keys_sw))


def test_quantized_weights_stream_at_their_width() -> None:
    base = {"num_hidden_layers": 2, "hidden_size": 256, "num_attention_heads": 4,
            "intermediate_size": 512, "vocab_size": 100}
    bf16 = from_hf_config(base)
    awq = from_hf_config({**base, "quantization_config": {"quant_method": "awq", "bits": 4}})
    fp8 = from_hf_config({**base, "quantization_config": {"quant_method": "fp8"}})
    ct = from_hf_config({**base, "quantization_config": {
        "quant_method": "compressed-tensors",
        "config_groups": {"group_0": {"weights": {"num_bits": 8, "type": "int"}}}}})
    assert (bf16.weight_bytes_per_param, awq.weight_bytes_per_param,
            fp8.weight_bytes_per_param, ct.weight_bytes_per_param) == (None, 0.5, 1.0, 1.0)
    n = rl.compute_params(bf16)
    a = rl.step_speed_of_light(bf16, H100, batch=1, query_tokens=1, context=1, causal=False)
    q = rl.step_speed_of_light(awq, H100, batch=1, query_tokens=1, context=1, causal=False)
    assert a.weight_bytes == pytest.approx(2 * n) and q.weight_bytes == pytest.approx(0.5 * n)
    assert q.kv_write_bytes == a.kv_write_bytes  # the KV cache keeps the activations' dtype
