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


# CPU captures (torch) ---------------------------------------------------------------------

LLAMA = {"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 128,
         "num_attention_heads": 8, "num_key_value_heads": 2, "intermediate_size": 256,
         "vocab_size": 512}


@pytest.fixture(scope="module")
def fused_generate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A CPU `profdiag capture --fused-qkv --phase generate` and the plain Llama config."""
    pytest.importorskip("torch")
    from click.testing import CliRunner

    from profdiag.commands.capture import command

    out = tmp_path_factory.mktemp("fused")
    cfg = out / "llama.json"
    cfg.write_text(json.dumps(LLAMA))
    res = CliRunner().invoke(command, ["--out", str(out), "--model-config", str(cfg),
                                       "--fused-qkv", "--phase", "generate", "--tokens", "16",
                                       "--steps", "3", "--device", "cpu", "--name", "fused",
                                       "--quiet"])
    assert res.exit_code == 0, res.output
    return out / "fused.json.gz", cfg


@pytest.mark.torch
def test_fused_qkv_capture_with_a_plain_llama_config(fused_generate: tuple[Path, Path]) -> None:
    trace, cfg = fused_generate
    d = _diag(trace, model_config=str(cfg))
    kc = d["kernel_counts"]
    st = kc["structure"]
    # qkv: N = (heads + 2 kv_heads) x head_dim = (8 + 2 x 2) x 16 = 192; gate and up separate
    qkv = st["layouts"]["dense"]["gemms"][0]
    assert qkv["role"] == "qkv (fused)" and qkv["signature"] == "aten::mm [[M,128],[128,192]]"
    assert st["fused_qkv"] is True and st["fused_gate_up"] is False
    assert kc["gemms_per_layer"] == 5  # qkv, o, gate, up, down: not the config's 7
    # 1 prefill + 3 decode forwards of (2 layers x 5 + 1 lm_head)
    assert kc["observed_gemm_calls"] == kc["expected_gemm_calls"] == 4 * (2 * 5 + 1)
    assert any("config implies 7" in n for n in st["notes"])
    assert kc["extra"] == [] and d["checks"][[c["id"] for c in d["checks"]].index(
        "kernel_count")]["status"] == "pass"


@pytest.mark.torch
def test_mixed_trace_counts_per_phase_without_fractions(fused_generate: tuple[Path, Path]) -> None:
    trace, cfg = fused_generate
    kc = _diag(trace, model_config=str(cfg))["kernel_counts"]
    assert kc["gemm_calls_per_forward"] is None  # no average over prefill and decode forwards
    assert kc["phases"]["prefill"]["forwards"] == 1 and kc["phases"]["decode"]["forwards"] == 3
    assert kc["phases"]["prefill"]["gemm_calls_per_forward"] == 11
    assert kc["phases"]["decode"]["gemm_calls_per_forward"] == 11
    for row in kc["by_shape"]:
        assert float(row["calls_per_forward"]).is_integer(), row


def test_truncated_trace_count_is_not_a_fail(tmp_path: Path) -> None:
    raw = gzip.decompress((FIXTURES / "torch" / "own_tiny_decode_ctx512_B1_steps8.json.gz")
                          .read_bytes())
    cut = tmp_path / "cut.json"
    cut.write_bytes(raw[: int(len(raw) * 0.85)])
    tr = profdiag.load(cut)
    assert tr.meta.salvaged
    d = profdiag.diagnose(tr, layers=4, gemms_per_layer=7, use_manifest=False)
    check = d.check("kernel_count")
    # the cut leaves the count off by a few calls: a warning that names the truncation
    assert check is not None and check.status == "warn" and check.evidence["difference"] != 0
    assert "truncated" in check.summary and "not a failure" in check.summary


# The public samples ---------------------------------------------------------------------

SAMPLES = ["sglang_Qwen3-8B_decode", "sglang_Qwen3-8B_prefilldecode",
           "vllm_prefilldecode_piecewise_graph_execution", "vllm_decode_full_graph_execution",
           "b200_eager_trace"]


def _sample(name: str) -> str:
    return str(shared_or_skip("samples", "kineto", "tracelens", f"{name}.json.gz"))


@pytest.mark.parametrize("name", SAMPLES)
def test_samples_get_no_fusion_advice(name: str) -> None:
    d = diagnosed(_sample(name))
    assert "counts.fuse_projections" not in {r.id for r in d.recommendations}
    assert not any("fused QKV" in r.advice for r in d.recommendations)
    kc = d.kernel_counts
    assert kc["structure"]["fused_qkv"] is True
    assert kc["observed_gemm_calls"] == kc["expected_gemm_calls"]


def test_sglang_decode_with_the_qwen3_config_expects_145() -> None:
    cfg = str(shared_or_skip("traces", "configs", "qwen3_8b.json"))
    d = diagnosed(_sample("sglang_Qwen3-8B_decode"), model_config=cfg)
    kc = d.kernel_counts
    assert kc["layers"] == 36 and kc["layers_source"] == "config"
    assert kc["gemms_per_layer"] == 4
    assert kc["observed_gemm_calls"] == kc["expected_gemm_calls"] == 36 * 4 + 1 == 145
    assert any("config implies 7" in n and "fused QKV" in n for n in kc["structure"]["notes"])
    assert d.check("kernel_count").status == "pass"


def test_sglang_prefill_shapes_are_the_fused_qwen3_projections() -> None:
    cfg = str(shared_or_skip("traces", "configs", "qwen3_8b.json"))
    d = diagnosed(_sample("sglang_Qwen3-8B_prefilldecode"), model_config=cfg)
    sigs = [(g["role"], g["signature"]) for g in
            d.kernel_counts["structure"]["layouts"]["dense"]["gemms"]]
    # QKV N = (32 + 2 x 8) x 128 = 6144; gate/up N = 2 x 12288 = 24576
    assert sigs == [("qkv (fused)", "aten::mm [[M,4096],[4096,6144]]"),
                    ("o", "aten::mm [[M,4096],[4096,4096]]"),
                    ("gate_up (fused)", "aten::mm [[M,4096],[4096,24576]]"),
                    ("down", "aten::mm [[M,12288],[12288,4096]]")]


@pytest.mark.parametrize("name", ["vllm_prefilldecode_piecewise_graph_execution",
                                  "vllm_decode_full_graph_execution", "b200_eager_trace"])
def test_gpt_oss_moe_mxfp4(name: str) -> None:
    d = diagnosed(_sample(name))
    ids = {r.id for r in d.recommendations}
    assert not ids & {"memory.quantize", "compute.fp8"}
    kc = d.kernel_counts
    layers = 36 if name.startswith("b200") else 24  # gpt-oss-120b / gpt-oss-20b
    assert kc["structure"]["kind"] == "moe" and kc["layers"] == layers
    assert kc["expected_gemm_calls"] == layers * 5 + 1
    assert kc["gemm_precision"]["low_precision_share"] > 0.5
    assert "moe.expert_gemms" in ids
    if "memory.already_quantized" in ids:
        rec = next(r for r in d.recommendations if r.id == "memory.already_quantized")
        assert "MXFP4" in rec.evidence


def test_hf_trace_lists_only_the_rope_bmm() -> None:
    """HF transformers Qwen1.5 prefill: separate q/k/v (addmm with bias), one RoPE bmm per
    forward before the first layer; kernels launched before the CPU window are left out."""
    d = diagnosed(_sample("h100_Qwen_Qwen1.5-0.5B-Chat__1016005"))
    kc = d.kernel_counts
    assert kc["layers"] == 24 and kc["structure"]["kind"] == "separate"
    assert [e["signature"] for e in kc["extra"]] == ["aten::bmm [[1,32,1],[1,1,559]]"]
    assert "counts.fuse_projections" in {r.id for r in d.recommendations}


def test_forwards_split_at_the_lm_head_without_step_ranges() -> None:
    """No step ranges at all (not even inferred): the window is cut after each lm_head, so
    8 decode forwards of a 4-layer model give 4 layers, not 32."""
    from profdiag.classify import load_rules
    from profdiag.diagnosis import counts
    from profdiag.diagnosis.context import build, thresholds
    from profdiag.modelspec import ModelSpec

    tr = profdiag.load(FIXTURES / "torch" / "own_tiny_decode_ctx512_B1_steps8.json.gz")
    ctx = build(tr, ModelSpec(), load_rules(), thresholds())
    work = ctx.work.assign(step=-1)
    kc, _ = counts.count(work, ctx.annotations.iloc[0:0], ModelSpec(), ctx.steps.iloc[0:0],
                         0, 1.5, step_phases=["decode"])
    assert kc["layers"] == 4 and kc["forwards"] == 8
    assert kc["observed_gemm_calls"] == kc["expected_gemm_calls"] == 8 * (4 * 7 + 1)


def test_gpt_oss_120b_config_tensor_parallel_and_sliding_layers(tmp_path: Path) -> None:
    """b200_eager_trace is gpt-oss-120b at TP 8: fused QKV per rank N = (64 + 2 x 8) x 64 / 8
    = 640; half the layers run the sliding-window FMHA variant, as layer_types says."""
    cfg = tmp_path / "gpt_oss_120b.json"
    cfg.write_text(json.dumps({
        "model_type": "gpt_oss", "num_hidden_layers": 36, "hidden_size": 2880,
        "num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 64,
        "intermediate_size": 2880, "num_local_experts": 128, "num_experts_per_tok": 4,
        "vocab_size": 201088, "layer_types": ["sliding_attention", "full_attention"] * 18}))
    d = profdiag.diagnose(profdiag.load(_sample("b200_eager_trace")), model_config=str(cfg))
    kc = d.kernel_counts
    st = kc["structure"]
    assert st["tensor_parallel"] == 8
    assert st["layouts"]["moe"]["gemms"][0]["signature"] == (
        "aten::addmm [[640],[M,2880],[2880,640],[],[]]")
    assert st["attention_layers"]["sliding_window"] == 18 and st["attention_layers"]["full"] == 18
    assert kc["layers"] == 36 and kc["layers_source"] == "config"
    assert kc["observed_gemm_calls"] == kc["expected_gemm_calls"] == 36 * 5 + 1
    assert any("config implies 7" in n and "MoE expert GEMMs: 5 per layer" in n
               for n in st["notes"])
    assert not any("sliding-window layers" in n for n in st["notes"])  # config and trace agree


def test_mixed_trace_hotspots_and_shapes_have_whole_calls_per_forward(tmp_path: Path) -> None:
    """The real tiny prefill followed by its 8-step decode: every per-forward figure is a
    count in one phase (prefill 4 layers x 4 q/k/v/o = 16 calls of [M,512]x[512,512])."""
    from tests.helpers import splice_generate

    diag = profdiag.diagnose(profdiag.load(splice_generate(tmp_path / "gen.json.gz")),
                             use_manifest=False)
    d = diag.to_dict()
    kc = d["kernel_counts"]
    assert d["mode"]["value"] == "mixed" and kc["gemm_calls_per_forward"] is None
    assert kc["phases"]["prefill"]["forwards"] == 1 and kc["phases"]["decode"]["forwards"] == 8
    rows = {(r["phase"], r["signature"]): r for r in kc["by_shape"]}
    qkvo = rows[("prefill", "aten::mm [[M,512],[512,512]]")]
    assert qkvo["calls"] == 16 and qkvo["calls_per_forward"] == 16 and qkvo["role"] == "q/k/v/o"
    assert rows[("decode", "aten::mm [[M,512],[512,512]]")]["calls"] == 8 * 16
    cpf = diag.hotspots["calls_per_forward"].dropna()
    assert len(cpf) and all(float(v).is_integer() for v in cpf), list(cpf)
    assert kc["extra"] == []


def test_prefill_and_decode_attention_of_one_layer_are_one_anchor(tmp_path: Path) -> None:
    """A chunked-prefill batch on FlashInfer runs a prefill and a decode attention kernel in
    every layer: still one layer each."""
    prefill = ("void flashinfer::BatchPrefillWithPagedKVCacheKernel<flashinfer::KernelTraits<"
               "(flashinfer::MaskMode)1, 128u, 1u, 4u, 8u, 8u, 1u, 4u>>(flashinfer::PagedParams)")
    decode = ("void flashinfer::BatchDecodeWithPagedKVCacheKernel<(flashinfer::PosEncodingMode)0,"
              " 2u, 4u, 8u, 16u, 1u, 8u>(flashinfer::BatchDecodeParams<__nv_bfloat16>)")
    layer = [SGL_QKV, ROPE, prefill, decode, SGL_O, SGL_GU, ACT, SGL_DOWN]
    kc = _diag(kernel_trace(tmp_path / "t.json.gz", layer * 5 + [SGL_HEAD]))["kernel_counts"]
    assert kc["layers"] == 5 and kc["gemms_per_layer"] == 4
    assert kc["observed_gemm_calls"] == kc["expected_gemm_calls"] == 5 * 4 + 1


def test_nsys_generate_expects_per_phase_kernels() -> None:
    """nsys (no shapes): prefill and decode GEMMs are different cuBLAS kernels, so each
    phase's layout is its own; 16 layers x 7 + lm_head in 1 prefill and 64 decode forwards."""
    d = diagnosed(str(shared_or_skip("traces", "nsys", "nsys_1b_T512_decode64.sqlite.gz")))
    kc = d.kernel_counts
    assert kc["phases"]["prefill"]["expected_gemm_calls"] == 16 * 7 + 1
    assert kc["phases"]["decode"]["expected_gemm_calls"] == 64 * (16 * 7 + 1)
    assert kc["observed_gemm_calls"] == kc["expected_gemm_calls"] and kc["extra"] == []


def test_encoder_head_outside_the_layers_is_a_warning() -> None:
    """BERT-small without a config: the pooler GEMM after the last layer is listed as extra,
    but with nothing to say it should not run, the count is a warning, not a failure."""
    d = diagnosed(_sample("h100_gaunernst_bert-small-uncased__1016001"))
    kc = d.kernel_counts
    assert kc["layers"] == 4
    assert [e["role"] for e in kc["extra"]] == ["extra (after the last layer)"]
    assert d.check("kernel_count").status == "warn"


def linked_trace(path: Path, items: list[tuple[str, str | None, list[Any] | None]]) -> Path:
    """A Kineto trace whose kernels are launched by CPU ops with Input Dims (eager mode)."""
    events: list[dict[str, Any]] = []
    ts = 1000.0
    for i, (name, op, dims) in enumerate(items, start=1):
        if op:
            events.append({"ph": "X", "cat": "cpu_op", "name": op, "pid": 1, "tid": 1,
                           "ts": ts, "dur": 3.0, "args": {"External id": i, "Input Dims": dims}})
        events.append({"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1,
                       "tid": 1, "ts": ts + 1, "dur": 1.0,
                       "args": {"correlation": i, "External id": i}})
        events.append({"ph": "X", "cat": "kernel", "name": name, "pid": 0, "tid": 7,
                       "ts": ts + 2, "dur": 4.0,
                       "args": {"device": 0, "stream": 7, "correlation": i, "External id": i}})
        ts += 10.0
    doc = {"traceEvents": events, "deviceProperties": [{"id": 0, "name": "test GPU"}]}
    path.write_bytes(gzip.compress(json.dumps(doc).encode()))
    return path


def test_mla_projections_named_by_shape_against_the_config(tmp_path: Path) -> None:
    """DeepSeek-V3 MLA at TP 8 (vLLM eager): fused q_a/kv_a N = 1536 + 512 + 64 = 2112,
    q_b K = q_lora_rank 1536, kv_b K = kv_lora_rank 512, o K = 128 x 128 / 8 = 2048."""
    cfg = tmp_path / "dsv3.json"
    cfg.write_text(json.dumps({
        "model_type": "deepseek_v3", "num_hidden_layers": 2, "hidden_size": 7168,
        "num_attention_heads": 128, "num_key_value_heads": 128, "q_lora_rank": 1536,
        "kv_lora_rank": 512, "qk_rope_head_dim": 64, "qk_nope_head_dim": 128,
        "v_head_dim": 128, "intermediate_size": 18432, "n_routed_experts": 256,
        "vocab_size": 129280}))
    t = 4
    layer = [(NVJ_BIG, "aten::mm", [[t, 7168], [7168, 2112]]),
             (NVJ_Q, "aten::mm", [[t, 1536], [1536, 3072]]),
             (NVJ_KV, "aten::mm", [[t, 512], [512, 4096]]),
             (MLA, "vllm::unified_attention_with_output", [[t, 16, 576]]),
             (NVJ_Q, "aten::mm", [[t, 2048], [2048, 7168]]),
             (NVJ_KV, "aten::mm", [[t, 7168], [7168, 256]]),
             (FUSED_MOE, "vllm::moe_forward", [[t, 7168]]),
             (FUSED_MOE, "vllm::moe_forward", [[t, 7168]])]
    head = [(NVJ_BIG, "aten::mm", [[t, 7168], [7168, 16160]])]
    d = _diag(linked_trace(tmp_path / "t.json.gz", layer * 2 + head), model_config=str(cfg))
    st = d["kernel_counts"]["structure"]
    assert st["mla"] and st["moe"]
    assert [g["role"] for g in st["layouts"]["moe"]["gemms"]] == [
        "q_a+kv_a (fused)", "q_b", "kv_b", "o", "router", "experts gate/up (fused)",
        "experts down"]
    assert st["layouts"]["moe"]["gemms"][1]["signature"] == "aten::mm [[M,1536],[1536,3072]]"
    assert d["kernel_counts"]["observed_gemm_calls"] == d["kernel_counts"][
        "expected_gemm_calls"] == 2 * 7 + 1


def test_mla_labels_follow_shapes_not_positions(tmp_path: Path) -> None:
    cfg = tmp_path / "mla.json"
    cfg.write_text(json.dumps({"model_type": "deepseek_v3", "num_hidden_layers": 2,
                               "hidden_size": 7168, "num_attention_heads": 128,
                               "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_rope_head_dim": 64,
                               "intermediate_size": 18432, "vocab_size": 129280}))
    t = 4
    layer = [(NVJ_BIG, "aten::mm", [[t, 7168], [7168, 2112]]),
             (NVJ_KV, "aten::mm", [[t, 512], [512, 4096]]),  # kv_b second (no q_b here)
             (MLA, "vllm::unified_attention_with_output", [[t, 16, 576]]),
             (NVJ_Q, "aten::mm", [[t, 2048], [2048, 7168]]),
             (SGL_GU, "aten::mm", [[t, 7168], [7168, 4608]]),
             (SGL_DOWN, "aten::mm", [[t, 2304], [2304, 7168]])]
    head = [(NVJ_BIG, "aten::mm", [[t, 7168], [7168, 16160]])]
    d = _diag(linked_trace(tmp_path / "t.json.gz", layer * 2 + head), model_config=str(cfg))
    roles = [g["role"] for g in d["kernel_counts"]["structure"]["layouts"]["dense"]["gemms"]]
    assert roles[:2] == ["q_a+kv_a (fused)", "kv_b"]


# ----------------------------------------- analyse() against a per-step loop over segment()


def _calls_and_anchors() -> tuple[Any, Any]:
    """Two forwards (steps 0 and 2; step 1 has no GEMMs) of two layers each, by hand:
    qkv | attention | o gate_up down qkv | attention | o gate_up down lm_head; the steps'
    rows interleaved in the table, as a trace's streams interleave them."""
    import pandas as pd

    rows = []
    t = {0: 1_000, 2: 100_000}
    names: list[tuple[int, str]] = []
    for step in (0, 2):
        for layer in range(2):
            names += [(step, "qkv")] if layer == 0 else []
            names += [(step, "ATT"), (step, "o"), (step, "gate_up"), (step, "down")]
            names += [(step, "qkv")] if layer == 0 else [(step, "head")]
    anc = []
    for step, name in names:
        t[step] += 10
        if name == "ATT":
            anc.append({"start_ns": t[step], "step": step, "kind": "attention",
                        "name": "flash_fwd_kernel", "linked": False})
        else:
            rows.append({"name": f"gemm_{name}", "op_name": pd.NA, "input_dims": pd.NA,
                         "start_ns": t[step], "launch_ns": t[step] - 5, "dur_ns": 4,
                         "step": step, "role": pd.NA, "kernel_dtype": "bf16" if step else pd.NA})
    calls = pd.DataFrame(rows).astype({"name": "string", "op_name": "string",
                                       "input_dims": "string", "role": "string",
                                       "kernel_dtype": "string"})
    # interleave the steps' rows (the table is in no step order), keep each step's own order
    n = len(calls) // 2  # 9 GEMMs per forward
    calls = calls.iloc[[i // 2 + (i % 2) * n for i in range(2 * n)]].reset_index(drop=True)
    return calls, pd.DataFrame(anc).astype({"kind": "string", "name": "string"})


def _reference(calls: Any, anc: Any, spec: Any, forwards: list[tuple[int, str]]) -> list[Any]:
    """analyse's forwards by the plain loop: a row mask per step (and per cut), segment()."""
    import numpy as np

    from profdiag.diagnosis import structure as st

    segs = []
    for step, phase in forwards:
        c = calls[calls["step"] == step] if step >= 0 else calls
        a = anc[anc["step"] == step] if step >= 0 else anc
        cuts: list[Any] = []
        if step < 0 and spec.layers and len(a) > spec.layers and len(a) % spec.layers == 0:
            t = a["start_ns"].to_numpy()
            cuts = [t[i] for i in range(spec.layers, len(t), spec.layers)]
        bounds = [-np.inf, *cuts, np.inf]
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            seg = st.segment(c[(c["start_ns"] >= lo) & (c["start_ns"] < hi)],
                             a[(a["start_ns"] >= lo) & (a["start_ns"] < hi)], phase)
            if seg:
                segs.append(seg)
    layers = [ly for f in segs for ly in f.layers]
    d = st._dims(spec, {}, layers)
    for ly in layers:
        st.label_layer(ly, d, False)
    for f in segs:
        st._label_edges(f)
    return segs


def test_analyse_per_step_matches_the_segment_loop_and_the_hand_layout() -> None:
    from dataclasses import replace

    from profdiag.diagnosis import structure as st
    from profdiag.modelspec import ModelSpec

    calls, anc = _calls_and_anchors()
    spec = ModelSpec()
    forwards = [(0, "prefill"), (1, "decode"), (2, "decode")]
    out = st.analyse(calls, anc, spec, forwards)
    got = out["forwards"]
    assert got == _reference(calls, anc, spec, forwards)
    # every call's signature, in table order (no shapes: the kernel name)
    assert out["signatures"] == [st.signature(o, d, str(n)) for o, d, n in
                                 zip(calls["op_name"], calls["input_dims"], calls["name"])]
    assert out["signatures"][:4] == ["gemm_qkv", "gemm_qkv", "gemm_o", "gemm_o"]
    assert [(f.phase, len(f.layers)) for f in got] == [("prefill", 2), ("decode", 2)]
    for f in got:
        assert [[g.label for g in ly.gemms] for ly in f.layers] == \
            [["qkv (fused)", "o", "gate_up (fused)", "down"]] * 2
        assert [g.label for g in f.tail] == ["lm_head"] and not f.before
    assert {g.dtype for g in got[0].layers[0].gemms} == {""}  # step 0: no dtype (missing)
    assert {g.dtype for g in got[1].layers[0].gemms} == {"bf16"}
    assert [g.name for g in got[1].layers[1].gemms] == ["gemm_qkv", "gemm_o", "gemm_gate_up",
                                                        "gemm_down"]
    # GEMM objects are the calls' own: labelling one layer leaves the others' alone
    assert len({id(g) for f in got for ly in f.layers for g in ly.gemms}) == 16
    # no step ranges, 2 layers given: one forward per 2 anchors (cut at the anchors)
    whole = st.analyse(calls.sort_values("start_ns"), anc.sort_values("start_ns"),
                       replace(spec, layers=2), [(-1, "all")])["forwards"]
    assert whole == _reference(calls.sort_values("start_ns"), anc.sort_values("start_ns"),
                               replace(spec, layers=2), [(-1, "all")])
    assert len(whole) == 2


def test_rows_by_step_and_gemm_table_are_the_masks_and_gemms_of_every_row() -> None:
    from profdiag.diagnosis import structure as st

    calls, _ = _calls_and_anchors()
    by = st._rows_by_step(calls)
    assert sorted(by) == [0, 2]
    for step, rows in by.items():
        assert rows.tolist() == calls.index[calls["step"] == step].tolist()
    of, fields = st._gemm_table(calls)
    # 5 distinct GEMMs (qkv, o, gate_up, down, head) x 2 dtypes (missing in step 0, bf16)
    assert len(fields) == 10
    assert [st.Gemm(*fields[j]) for j in of.tolist()] == st._gemms(calls)
