"""Block structure from the trace (fused, separate, MoE, MLA, hybrid) and the counts and advice
that follow from it, on kernel-only traces built from real engine kernel names and on the
public vLLM/SGLang samples in ../shared."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

import profdiag
from tests.helpers import FIXTURES, diagnosed, shared_or_skip

# Real kernel names (../shared/samples/kineto/tracelens/ and the engines' sources).
SGL_QKV = "Cijk_Alik_Bljk_BBS_BH_Bias_HA_S_SAV_UserArgs_MT64x32x256_MI16x16x1_SN_LDSB1_qkv"
SGL_O = "Cijk_Alik_Bljk_BBS_BH_Bias_HA_S_SAV_UserArgs_MT16x32x512_MI16x16x1_SN_LDSB1_o"
SGL_GU = "Cijk_Alik_Bljk_BBS_BH_Bias_HA_S_SAV_UserArgs_MT256x32x64_MI16x16x1_SN_LDSB1_gu"
SGL_DOWN = "Cijk_Alik_Bljk_BBS_BH_Bias_HA_S_SAV_UserArgs_MT32x32x256_MI16x16x1_SN_LDSB1_dn"
SGL_HEAD = "Cijk_Alik_Bljk_BBS_BH_Bias_HA_S_SAV_UserArgs_MT256x48x64_MI16x16x1_SN_LDSB1_head"
PA = ("void paged_attention_ll4mi_QKV_mfma16_kernel<0, __hip_bfloat16, __hip_bfloat16, "
      "(vllm::Fp8KVCacheDataType)0, 1, 128, 256, false, 4, 1, ck_tile::ComposedAttention<0u, "
      "false> >(__hip_bfloat16 const*)")
PA_REDUCE = ("void paged_attention_ll4mi_reduce_kernel<__hip_bfloat16, __hip_bfloat16, 128, 128, "
             "256, 3, false>(__hip_bfloat16*, float const*)")
ROPE = "void rotary_embedding_kernel<c10::BFloat16, true>(long const*, c10::BFloat16*)"
NORM = "_ZN5aiter24add_rmsnorm_quant_kernelIDF16bDF16bLi64ELi8ELb0ELb0ELb1ELi1EEEvPT0_PT_PfS4_"
ACT = "_ZN7sgl_hip10activation18act_and_mul_kernelI14__hip_bfloat16TnPFT_RKS3_EXadL_Z4siluIS2_ES3"
KV = "void (anonymous namespace)::store_kvcache<2048l, 4, false, long>(StoreKVCacheParams)"
FA2 = ("void flash_fwd_splitkv_kernel<Flash_fwd_kernel_traits<128, 64, 128, 4, false, false, "
       "cutlass::bfloat16_t>, false, true, false>(Flash_fwd_params)")
FA2_COMBINE = "void flash_fwd_splitkv_combine_kernel<Flash_fwd_kernel_traits<128, 64, 128, 4>>()"
NVJ_Q = "nvjet_sm90_tst_64x8_64x16_4x1_v_bz_TNT"
NVJ_KV = "nvjet_sm90_tst_8x64_64x16_4x1_v_bz_TNN"
NVJ_BIG = "nvjet_sm90_tst_384x8_64x4_2x1_v_bz_TNT"
OGS_GU = "_matmul_ogs_NNT_bf16xbf16xmxfp4_16x128x256x1_swiglu"
OGS_DN = "_matmul_ogs_NNT_bf16xbf16xmxfp4_16x128x256x1"
OGS_FIN = "_finalize_matmul_scatter_bf16"
ROUTING = ["_topk_forward", "_combined_routing_memset", "_combined_routing_compute",
           "_sum_bitmatrix_rows"]
UNIFIED = "kernel_unified_attention_3d"
UNIFIED_REDUCE = "reduce_segments"
MLA = ("void flash_fwd_splitkv_mla_kernel<Flash_fwd_kernel_traits_mla<576, 64, 64, 8, "
       "cutlass::bfloat16_t, 512>, true>(Flash_fwd_mla_params)")
MLA_META = "void get_mla_metadata_kernel(__nv_bfloat16*, int*, int*, int, int, int, int, int)"
MLA_COMBINE = "void flash_fwd_mla_combine_kernel<cutlass::bfloat16_t, 512, 8, 32>(Flash_fwd_mla_params)"
FUSED_MOE = "fused_moe_kernel"
MOE_ALIGN = ("void vllm::moe::moe_align_block_size_kernel<int>(int const*, int*, int*, int*, "
             "int, int, int, int, unsigned long, int*)")
MOE_SUM = "void vllm::moe::moe_sum_kernel<c10::BFloat16, 8>(c10::BFloat16*, c10::BFloat16 const*, int)"
CONV = "_causal_conv1d_update_kernel"
GDN = "fused_recurrent_gated_delta_rule_fwd_kernel"
GDN_GATE = "fused_gdn_gating_kernel"


def kernel_trace(path: Path, kernels: list[str]) -> Path:
    """A kernel-only Kineto trace (as a CUDA-graph replay looks: no CPU ops, no shapes)."""
    events: list[dict[str, Any]] = []
    ts = 1000.0
    for i, name in enumerate(kernels):
        events.append({"ph": "X", "cat": "kernel", "name": name, "pid": 0, "tid": 7, "ts": ts,
                       "dur": 4.0, "args": {"device": 0, "stream": 7, "correlation": i + 1}})
        ts += 5.0
    doc = {"traceEvents": events, "deviceProperties": [{"id": 0, "name": "test GPU"}]}
    path.write_bytes(gzip.compress(json.dumps(doc).encode()))
    return path


def _diag(path: Path, **kw: Any) -> dict[str, Any]:
    return profdiag.diagnose(profdiag.load(path), use_manifest=False, **kw).to_dict()


def _recs(d: dict[str, Any]) -> set[str]:
    return {r["id"] for r in d["recommendations"]}


def test_fused_qkv_and_gate_up_sglang_kernels(tmp_path: Path) -> None:
    layer = [NORM, SGL_QKV, ROPE, KV, PA, PA_REDUCE, SGL_O, NORM, SGL_GU, ACT, SGL_DOWN]
    d = _diag(kernel_trace(tmp_path / "t.json.gz", layer * 3 + [NORM, SGL_HEAD]))
    kc = d["kernel_counts"]
    st = kc["structure"]
    assert st["kind"] == "fused" and st["fused_qkv"] and st["fused_gate_up"]
    assert [g["role"] for g in st["layouts"]["dense"]["gemms"]] == [
        "qkv (fused)", "o", "gate_up (fused)", "down"]
    # the reduce pass of paged attention is not a second layer
    assert kc["layers"] == 3 and kc["gemms_per_layer"] == 4
    assert kc["observed_gemm_calls"] == kc["expected_gemm_calls"] == 3 * 4 + 1
    assert "counts.fuse_projections" not in _recs(d)


def test_separate_projections_get_fusion_advice(tmp_path: Path) -> None:
    layer = [NVJ_Q, NVJ_KV, NVJ_KV, FA2, FA2_COMBINE, NVJ_Q, NVJ_BIG, NVJ_BIG, NVJ_Q]
    d = _diag(kernel_trace(tmp_path / "t.json.gz", layer * 4 + [NVJ_BIG]))
    kc = d["kernel_counts"]
    assert kc["structure"]["kind"] == "separate"
    assert [g["role"] for g in kc["structure"]["layouts"]["dense"]["gemms"]] == [
        "q", "k", "v", "o", "gate", "up", "down"]
    assert kc["observed_gemm_calls"] == kc["expected_gemm_calls"] == 4 * 7 + 1
    rec = next(r for r in d["recommendations"] if r["id"] == "counts.fuse_projections")
    assert "separate q, k and v" in rec["evidence"] and "separate gate and up" in rec["evidence"]


def test_moe_layers_gpt_oss_kernels(tmp_path: Path) -> None:
    layer = [NORM, SGL_QKV, ROPE, UNIFIED, UNIFIED_REDUCE, SGL_O, NORM, SGL_GU, *ROUTING,
             OGS_GU, OGS_DN, OGS_FIN]
    d = _diag(kernel_trace(tmp_path / "t.json.gz", layer * 2 + [NORM, SGL_HEAD]))
    kc = d["kernel_counts"]
    st = kc["structure"]
    assert st["kind"] == "moe" and st["moe"]
    assert [g["role"] for g in st["layouts"]["moe"]["gemms"]] == [
        "qkv (fused)", "o", "router", "experts gate/up (fused)", "experts down"]
    # the finalize scatter is no GEMM; each grouped expert GEMM is one call per layer
    assert kc["observed_gemm_calls"] == kc["expected_gemm_calls"] == 2 * 5 + 1
    assert kc["gemm_precision"]["shares"]["mxfp4"] > 0
    assert "counts.fuse_projections" not in _recs(d)


def test_mla_with_fused_moe(tmp_path: Path) -> None:
    # DeepSeek-style: fused q_a/kv_a, q_b, kv_b before FlashMLA; o; router + Triton fused MoE
    layer = [NORM, NVJ_Q, NVJ_KV, NVJ_BIG, KV, MLA_META, MLA, MLA_COMBINE, NVJ_Q, NORM,
             SGL_GU, MOE_ALIGN, FUSED_MOE, ACT, FUSED_MOE, MOE_SUM]
    d = _diag(kernel_trace(tmp_path / "t.json.gz", layer * 3 + [NORM, SGL_HEAD]))
    kc = d["kernel_counts"]
    st = kc["structure"]
    assert st["mla"] and st["moe"] and st["kind"] == "mla"
    roles = [g["role"] for g in st["layouts"]["moe"]["gemms"]]
    assert roles == ["q_a+kv_a (fused)", "q_b", "kv_b", "o", "router",
                     "experts gate/up (fused)", "experts down"]
    assert kc["layers"] == 3  # metadata and combine passes are not layers
    assert kc["observed_gemm_calls"] == kc["expected_gemm_calls"] == 3 * 7 + 1


def test_hybrid_linear_attention_layers(tmp_path: Path) -> None:
    # Qwen3-Next-style: 3 gated-delta-net layers (2 in_proj GEMMs) then 1 full-attention layer
    gdn = [NORM, NVJ_BIG, NVJ_Q, CONV, GDN_GATE, GDN, NVJ_Q, NORM, SGL_GU, ACT, SGL_DOWN]
    att = [NORM, SGL_QKV, ROPE, KV, FA2, SGL_O, NORM, SGL_GU, ACT, SGL_DOWN]
    d = _diag(kernel_trace(tmp_path / "t.json.gz", (gdn * 3 + att) * 2 + [NORM, SGL_HEAD]))
    kc = d["kernel_counts"]
    st = kc["structure"]
    assert st["hybrid"] and st["kind"] == "hybrid"
    assert st["layouts"]["dense_mixer"]["layers_per_forward"] == 6
    assert [g["role"] for g in st["layouts"]["dense_mixer"]["gemms"]] == [
        "in_proj", "in_proj_1", "out_proj", "gate_up (fused)", "down"]
    assert st["layouts"]["dense"]["gemms_per_layer"] == 4
    assert kc["layers"] == 8
    assert kc["observed_gemm_calls"] == kc["expected_gemm_calls"] == 6 * 5 + 2 * 4 + 1


def test_a_gemm_run_twice_is_the_only_extra(tmp_path: Path) -> None:
    layer = [SGL_QKV, PA, SGL_O, SGL_GU, SGL_DOWN]
    odd = [SGL_QKV, PA, SGL_O, SGL_O, SGL_GU, SGL_DOWN]
    d = _diag(kernel_trace(tmp_path / "t.json.gz", layer * 3 + odd + layer * 2 + [SGL_HEAD]))
    kc = d["kernel_counts"]
    assert kc["expected_gemm_calls"] == 6 * 4 + 1 and kc["observed_gemm_calls"] == 26
    assert [e["signature"] for e in kc["extra"]] == [SGL_O]
    assert d["checks"][[c["id"] for c in d["checks"]].index("kernel_count")]["status"] == "fail"
