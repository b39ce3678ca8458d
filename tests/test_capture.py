"""`profdiag capture`: real CPU traces of a tiny Llama, checked against their manifests.

Tests that run torch are marked ``torch`` and skip without it; option, memory and
missing-dependency tests need no torch. Shapes are tiny so the whole file runs in seconds.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from profdiag.capture.config import (
    GIB,
    CaptureOptions,
    MemoryEstimate,
    check_memory,
    estimate_memory,
    gemms_per_forward,
    param_count,
    resolve_config,
)
from profdiag.commands.capture import command
from profdiag.errors import MissingDependencyError, OutputError, UsageError

REPO = Path(__file__).resolve().parents[1]
SMALL = {"layers": 2, "hidden": 128, "ffn": 256, "vocab": 512}
SMALL_ARGS = ["--layers", "2", "--hidden", "128", "--ffn", "256", "--vocab", "512",
              "--tokens", "16", "--context", "32", "--steps", "3", "--device", "cpu"]
GEMM_OPS = ("aten::mm", "aten::addmm")
BATCHED_OPS = ("aten::bmm", "aten::baddbmm")


def _torch() -> Any:
    return pytest.importorskip("torch")


def _options(tmp: Path, phase: str, **kw: Any) -> CaptureOptions:
    cfg_kw = {k: kw.pop(k) for k in list(kw) if k in ("layers", "hidden", "heads", "kv_heads",
                                                       "ffn", "vocab")}
    cfg = resolve_config("tiny", **{**SMALL, **cfg_kw})
    base: dict[str, Any] = {"tokens": 16, "context": 32, "steps": 3, "device": "cpu"}
    return CaptureOptions(out=tmp, config=cfg, phase=phase, **{**base, **kw})


def _events(trace: Path) -> list[dict[str, Any]]:
    with gzip.open(trace, "rb") as fh:
        data = json.loads(fh.read())
    return data["traceEvents"]


def _cpu_ops(events: list[dict[str, Any]]) -> Counter[str]:
    return Counter(e["name"] for e in events if e.get("cat") == "cpu_op")


def _annotations(events: list[dict[str, Any]]) -> Counter[str]:
    return Counter(e["name"] for e in events if e.get("cat") == "user_annotation")


def _gemm_dims(events: list[dict[str, Any]]) -> list[list[list[int]]]:
    return [e["args"]["Input Dims"] for e in events
            if e.get("cat") == "cpu_op" and e["name"] in GEMM_OPS]


@pytest.fixture(scope="module")
def captures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One small capture per phase (batch 2, GQA with 2 KV heads), shared by the tests."""
    _torch()
    from profdiag.capture import capture

    out = tmp_path_factory.mktemp("captures")
    results = {}
    for phase in ("prefill", "decode", "generate"):
        results[phase] = capture(_options(out, phase, batch=2, heads=8, kv_heads=2))
    return results


# Manifest and trace content ------------------------------------------------------------


@pytest.mark.torch
@pytest.mark.parametrize("phase,forwards,tokens,context,steps", [
    ("prefill", 1, 16, 0, 0), ("decode", 3, 1, 32, 3), ("generate", 4, 16, 16, 3)])
def test_manifest(captures: dict[str, Any], phase: str, forwards: int, tokens: int,
                  context: int, steps: int) -> None:
    torch = _torch()
    res = captures[phase]
    m = json.loads(res.manifest.read_text())
    assert m == res.data
    assert m["manifest_version"] == 1
    assert m["file"] == res.trace.name and res.trace.is_file()
    assert res.manifest.name == res.trace.name.replace(".json.gz", ".manifest.json")
    assert (m["phase"], m["forwards"], m["tokens"], m["context"], m["steps"]) == (
        phase, forwards, tokens, context, steps)
    assert m["batch"] == 2
    assert m["config"] == {"name": "custom", "layers": 2, "hidden": 128, "heads": 8,
                           "kv_heads": 2, "ffn": 256, "vocab": 512, "head_dim": 16}
    assert m["gemms_per_layer"] == 7 and m["gemms_per_forward"] == 15
    assert m["cuda_graphs"] is False and m["fused_qkv"] is False
    assert m["dtype"] == "torch.float32" and m["device"] == "cpu" and m["device_name"]
    assert m["record_shapes"] is True and m["with_stack"] is False
    assert m["torch"] == torch.__version__


@pytest.mark.torch
@pytest.mark.parametrize("phase", ["prefill", "decode", "generate"])
def test_gemm_count_is_exact(captures: dict[str, Any], phase: str) -> None:
    res = captures[phase]
    ops = _cpu_ops(_events(res.trace))
    gemms = sum(ops[name] for name in GEMM_OPS)
    assert gemms == res.data["gemms_per_forward"] * res.data["forwards"]
    # attention goes through SDPA's fused kernel, never through a (batched) matmul
    assert not any(ops[name] for name in BATCHED_OPS)
    assert ops["aten::scaled_dot_product_attention"] == 2 * res.data["forwards"]


@pytest.mark.torch
def test_gemm_shapes(captures: dict[str, Any]) -> None:
    """M = batch x tokens for prefill layers, batch for decode; lm_head on the last token."""
    prefill = _gemm_dims(_events(captures["prefill"].trace))
    assert [d[0][0] for d in prefill] == [32] * 14 + [2]
    assert prefill[-1] == [[2, 128], [128, 512]]
    decode = _gemm_dims(_events(captures["decode"].trace))
    assert {d[0][0] for d in decode} == {2}
    generate = _gemm_dims(_events(captures["generate"].trace))
    assert [d[0][0] for d in generate[:15]] == [32] * 14 + [2]
    assert {d[0][0] for d in generate[15:]} == {2}
    # q, k, v, o, gate, up, down: GQA makes k and v narrower (2 KV heads x 16)
    assert [d[1] for d in decode[:7]] == [[128, 128], [128, 32], [128, 32], [128, 128],
                                          [128, 256], [128, 256], [256, 128]]


@pytest.mark.torch
@pytest.mark.parametrize("phase", ["prefill", "decode", "generate"])
def test_annotations(captures: dict[str, Any], phase: str) -> None:
    res = captures[phase]
    ann = _annotations(_events(res.trace))
    expected = Counter({f"layer_{i}": res.data["forwards"] for i in range(2)})
    if phase != "decode":
        expected["prefill"] = 1
    if phase != "prefill":
        expected.update({f"decode_step_{i}": 1 for i in range(3)})
    assert ann == expected


@pytest.mark.torch
def test_annotations_nest_gemms(captures: dict[str, Any]) -> None:
    """Each decode_step_N range holds exactly one forward's GEMMs."""
    events = _events(captures["decode"].trace)
    steps = [e for e in events if e.get("cat") == "user_annotation"
             and e["name"].startswith("decode_step_")]
    gemms = [e for e in events if e.get("cat") == "cpu_op" and e["name"] in GEMM_OPS]
    for step in steps:
        inside = [g for g in gemms if step["ts"] <= g["ts"] <= step["ts"] + step["dur"]]
        assert len(inside) == 15, step["name"]


@pytest.mark.torch
def test_fused_qkv_changes_count(tmp_path: Path) -> None:
    _torch()
    from profdiag.capture import capture

    res = capture(_options(tmp_path, "decode", fused_qkv=True))
    assert res.data["gemms_per_layer"] == 5 and res.data["gemms_per_forward"] == 11
    assert res.trace.name == "custom_decode_ctx32_B1_steps3_fusedqkv.json.gz"
    ops = _cpu_ops(_events(res.trace))
    assert sum(ops[n] for n in GEMM_OPS) == 11 * 3
    dims = _gemm_dims(_events(res.trace))
    assert dims[0] == [[1, 128], [128, 3 * 128]]  # one qkv projection


@pytest.mark.torch
def test_extra_gemm_trace_fails_the_kernel_count_check(tmp_path: Path) -> None:
    _torch()
    import profdiag
    from profdiag.capture import capture

    res = capture(_options(tmp_path, "decode", extra_gemm=True))
    assert res.data["extra_gemms_per_layer"] == 1
    assert res.data["gemms_per_forward"] == 15  # the architecture's count, not the trace's
    d = profdiag.diagnose(profdiag.load(res.trace))
    kc = d.kernel_counts
    assert kc["expected_gemm_calls"] == 15 * 3
    assert kc["observed_gemm_calls"] == 15 * 3 + 2 * 3  # one extra per layer per forward
    assert d.check("kernel_count").status == "fail"
    assert "counts.extra_gemms" in {r.id for r in d.recommendations}


@pytest.mark.torch
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_dtypes(tmp_path: Path, dtype: str) -> None:
    _torch()
    from profdiag.capture import capture

    res = capture(_options(tmp_path, "generate", dtype=dtype, steps=1, warmup=0))
    assert res.data["dtype"] == f"torch.{dtype}"
    ops = _cpu_ops(_events(res.trace))
    assert sum(ops[n] for n in GEMM_OPS) == 15 * 2


@pytest.mark.torch
def test_no_temp_files_left(captures: dict[str, Any]) -> None:
    out = captures["prefill"].trace.parent
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


@pytest.mark.torch
def test_failed_export_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An export that dies half-way leaves neither a partial trace nor a manifest."""
    _torch()
    from torch.profiler import profile

    from profdiag.capture import capture

    def broken(self: Any, path: str) -> None:
        Path(path).write_text('{"traceEvents": [')
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(profile, "export_chrome_trace", broken)
    with pytest.raises(OutputError, match="No space left"):
        capture(_options(tmp_path, "prefill"))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.torch
def test_model_config_file(tmp_path: Path) -> None:
    _torch()
    from profdiag.capture import capture

    cfg = tmp_path / "llama_small.json"
    cfg.write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 3, "hidden_size": 64,
                               "num_attention_heads": 4, "num_key_value_heads": 2,
                               "intermediate_size": 128, "vocab_size": 256}))
    res = CliRunner().invoke(command, ["--out", str(tmp_path / "o"), "--model-config", str(cfg),
                                       "--layers", "1", "--phase", "prefill", "--tokens", "8",
                                       "--device", "cpu", "--quiet"])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "o" / "llama_small_prefill_T8_B1.manifest.json").read_text())
    assert m["config"] == {"name": "llama_small", "layers": 1, "hidden": 64, "heads": 4,
                           "kv_heads": 2, "ffn": 128, "vocab": 256, "head_dim": 16}
    assert capture  # imported only to skip without torch


# CLI ---------------------------------------------------------------------------------


@pytest.mark.torch
def test_cli_generate(tmp_path: Path) -> None:
    _torch()
    res = CliRunner().invoke(command, ["--out", str(tmp_path), "--phase", "generate",
                                       *SMALL_ARGS])
    assert res.exit_code == 0, res.output
    trace = tmp_path / "custom_generate_T16_B1_steps3.json.gz"
    assert f"trace: {trace}" in res.output
    assert "generate: 4 forward(s) x 15 GEMMs on cpu" in res.output
    m = json.loads((tmp_path / "custom_generate_T16_B1_steps3.manifest.json").read_text())
    assert m["forwards"] == 4 and m["phase"] == "generate"
    ops = _cpu_ops(_events(trace))
    assert sum(ops[n] for n in GEMM_OPS) == 15 * 4


@pytest.mark.torch
def test_cli_name_quiet_and_options(tmp_path: Path) -> None:
    _torch()
    res = CliRunner().invoke(command, ["--out", str(tmp_path), "--phase", "decode", "--name",
                                       "mine", "--quiet", "--no-record-shapes", "--warmup", "0",
                                       "--batch", "3", "--dtype", "bfloat16", *SMALL_ARGS])
    assert res.exit_code == 0, res.output
    assert res.output == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.json.gz", "mine.manifest.json"]
    m = json.loads((tmp_path / "mine.manifest.json").read_text())
    assert (m["record_shapes"], m["batch"], m["dtype"], m["file"]) == (
        False, 3, "torch.bfloat16", "mine.json.gz")
    events = _events(tmp_path / "mine.json.gz")
    assert not any("Input Dims" in e.get("args", {}) for e in events
                   if e.get("cat") == "cpu_op")


@pytest.mark.torch
def test_cli_tiny_preset_default_name(tmp_path: Path) -> None:
    """The real tiny preset, named like the shared H100 traces."""
    _torch()
    res = CliRunner().invoke(command, ["--out", str(tmp_path), "--steps", "2", "--context",
                                       "64", "--device", "cpu", "-q"])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "tiny_decode_ctx64_B1_steps2.manifest.json").read_text())
    assert m["config"]["name"] == "tiny" and m["gemms_per_forward"] == 29
    ops = _cpu_ops(_events(tmp_path / "tiny_decode_ctx64_B1_steps2.json.gz"))
    assert ops["aten::mm"] == 29 * 2


@pytest.mark.torch
def test_memory_refusal(tmp_path: Path) -> None:
    _torch()
    res = CliRunner().invoke(command, ["--out", str(tmp_path), "--preset", "8b", "--batch",
                                       "100000", "--device", "cpu"])
    assert res.exit_code != 0
    exc = res.exception
    assert isinstance(exc, UsageError), res.output
    msg = str(exc)
    assert "\n" not in msg
    assert "GiB" in msg and "KV cache" in msg and "available" in msg
    # weights of the 8b shape in fp32: ~8.0e9 params x 4 bytes
    assert "weights 29.92 GiB" in msg
    assert not any(tmp_path.iterdir())


@pytest.mark.torch
def test_cuda_requested_without_cuda(tmp_path: Path) -> None:
    torch = _torch()
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    res = CliRunner().invoke(command, ["--out", str(tmp_path), "--device", "cuda"])
    assert isinstance(res.exception, MissingDependencyError)
    assert "CUDA is not available" in str(res.exception)
    assert res.exception.exit_code == 6


@pytest.mark.torch
def test_cuda_graphs_need_cuda(tmp_path: Path) -> None:
    torch = _torch()
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    res = CliRunner().invoke(command, ["--out", str(tmp_path), "--cuda-graphs"])
    assert isinstance(res.exception, UsageError)
    assert "--cuda-graphs" in str(res.exception)


# No torch needed ---------------------------------------------------------------------


@pytest.mark.parametrize("args,match", [
    (["--cuda-graphs", "--phase", "prefill"], "decode"),
    (["--cuda-graphs", "--device", "cpu"], "cuda"),
    (["--hidden", "100", "--heads", "8"], "multiple of heads"),
    (["--heads", "8", "--kv-heads", "3"], "multiple of kv_heads"),
    (["--steps", "0"], "--steps"),
    (["--phase", "decode", "--context", "0"], "--context"),
    (["--name", "a/b"], "--name"),
    (["--layers", "0"], "--layers"),
])
def test_bad_options(tmp_path: Path, args: list[str], match: str) -> None:
    res = CliRunner().invoke(command, ["--out", str(tmp_path), *args])
    assert isinstance(res.exception, UsageError), res.output
    assert match in str(res.exception)


def test_missing_torch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    from profdiag.capture import capture

    with pytest.raises(MissingDependencyError) as info:
        capture(_options(tmp_path, "prefill"))
    assert str(info.value) == "torch is not installed: pip install 'profdiag[capture]'"
    assert info.value.exit_code == 6


def test_command_import_does_not_import_torch() -> None:
    code = ("import sys, profdiag.commands.capture, profdiag.capture; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_presets_and_counts() -> None:
    tiny = resolve_config("tiny")
    assert (tiny.layers, tiny.hidden, tiny.heads, tiny.kv_heads, tiny.ffn, tiny.vocab) == (
        4, 512, 8, 8, 1536, 32000)
    assert gemms_per_forward(tiny) == 29 and gemms_per_forward(tiny, fused_qkv=True) == 21
    b8 = resolve_config("8b")
    assert gemms_per_forward(b8) == 32 * 7 + 1 and b8.d == 128
    # 8B-class parameter count (Llama 3 8B: 8.03e9)
    assert 8.0e9 < param_count(b8) < 8.1e9
    assert resolve_config("1b", layers=2).name == "custom"
    assert resolve_config("tiny", layers=4).name == "tiny"  # unchanged shape keeps its name


def test_model_config_from_fixture() -> None:
    cfg = resolve_config(model_config=REPO / "fixtures" / "configs" / "llama_1b.json")
    assert cfg.name == "llama_1b"
    assert (cfg.layers, cfg.hidden, cfg.heads, cfg.kv_heads, cfg.ffn, cfg.vocab) == (
        16, 2048, 32, 8, 8192, 128256)


def test_model_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps({"num_hidden_layers": 2}))
    with pytest.raises(UsageError, match="lacks hidden_size"):
        resolve_config(model_config=bad)
    bad.write_text("{nope")
    with pytest.raises(UsageError, match="not valid JSON"):
        resolve_config(model_config=bad)
    with pytest.raises(UsageError, match="cannot read"):
        resolve_config(model_config=tmp_path / "missing.json")


def test_memory_estimate_kv_formula() -> None:
    opts = CaptureOptions(out=Path("."), config=resolve_config("8b"), phase="decode",
                          batch=4, context=2048, steps=8)
    est = estimate_memory(opts, "bfloat16")
    # 2 x layers x batch x (context + steps) x kv_heads x head_dim x 2 bytes
    assert est.kv_cache == 2 * 32 * 4 * (2048 + 8) * 8 * 128 * 2
    assert est.weights == param_count(resolve_config("8b")) * 2
    assert est.total == est.weights + est.kv_cache + est.activations


def test_memory_estimate_activations_by_hand() -> None:
    # tiny: hidden 512, 8 heads of 64, 8 kv heads, ffn 1536, vocab 32000; fp32 (4 bytes);
    # decode at batch 2, context 100, 4 steps: kv_len 104, one token per sequence.
    opts = CaptureOptions(out=Path("."), config=resolve_config("tiny"), phase="decode",
                          batch=2, context=100, steps=4)
    est = estimate_memory(opts, "float32")
    per_token = 4 * 512 + 3 * 1536 + (8 + 2 * 8) * 64  # hidden x4, gate/up/down, q/k/v = 8192
    scores = 2 * 8 * 1 * 104 * 4  # batch x heads x tokens x kv_len x bytes
    logits = 2 * 32000 * 4 * 2
    assert est.activations == 2 * 1 * per_token * 4 + scores + logits + 256 * 1024**2
    assert est.kv_cache == 2 * 4 * 2 * 104 * 8 * 64 * 4


def test_check_memory_message() -> None:
    est = MemoryEstimate(weights=2 * GIB, kv_cache=3 * GIB, activations=GIB)
    check_memory(est, 7 * GIB, "GPU 0")
    check_memory(est, None, "GPU 0")  # unknown: no refusal
    with pytest.raises(UsageError) as info:
        check_memory(est, 5 * GIB, "GPU 0")
    assert str(info.value).startswith("capture needs ~6.00 GiB (weights 2.00 GiB + KV cache "
                                      "3.00 GiB + activations 1.00 GiB) but GPU 0 has 5.00 GiB")


def test_default_names() -> None:
    cfg = resolve_config("tiny")
    mk = lambda **kw: CaptureOptions(out=Path("."), config=cfg, **kw).default_name()  # noqa: E731
    assert mk(phase="decode") == "tiny_decode_ctx512_B1_steps8"
    assert mk(phase="prefill", tokens=512) == "tiny_prefill_T512_B1"
    assert mk(phase="generate", batch=4) == "tiny_generate_T128_B4_steps8"
    assert mk(phase="decode", cuda_graphs=True, device="cuda") == \
        "tiny_decode_ctx512_B1_steps8_cudagraph"


# End to end with the diagnosis ---------------------------------------------------------


@pytest.mark.torch
@pytest.mark.parametrize("phase,mode", [("prefill", "prefill"), ("decode", "decode"),
                                        ("generate", "mixed")])
def test_diagnosis_finds_mode_and_count(captures: dict[str, Any], phase: str,
                                        mode: str) -> None:
    try:
        import profdiag.diagnosis  # noqa: F401
        import profdiag.parsers.torch_json  # noqa: F401
    except ImportError:
        pytest.skip("the diagnosis is not available")
    import profdiag

    res = captures[phase]
    diag = profdiag.diagnose(profdiag.load(res.trace), model_config=res.manifest).to_dict()
    assert diag["mode"]["value"] == mode
    counts = diag["kernel_counts"]
    assert counts["observed_gemm_calls"] == counts["expected_gemm_calls"] == (
        res.data["gemms_per_forward"] * res.data["forwards"])
    # the manifest beside the trace is found without being named
    auto = profdiag.diagnose(profdiag.load(res.trace)).to_dict()
    assert auto["model"]["source"] == "manifest"
    assert auto["kernel_counts"]["expected_gemm_calls"] == counts["expected_gemm_calls"]


# The CUDA-graph step's model path, checked on CPU ---------------------------------------


@pytest.mark.torch
@pytest.mark.parametrize("kv_heads", [8, 2])
def test_graph_step_matches_eager_decode(kv_heads: int) -> None:
    """The captured step (tensor position, index_copy_ into the full cache, masked attention)
    computes the same logits as the eager step (sliced cache), so both traces do equal work."""
    torch = _torch()
    from profdiag.capture.model import Llama

    torch.manual_seed(0)
    cfg = resolve_config("tiny", **{**SMALL, "kv_heads": kv_heads})
    model = Llama(cfg, batch=2, max_len=12, device=torch.device("cpu"), dtype=torch.float32)
    model.fill_cache(8)
    saved = model.k_cache.clone(), model.v_cache.clone()
    tokens = torch.tensor([[3], [7]])
    eager = [model(tokens, pos=8), model(tokens, pos=9)]
    model.k_cache.copy_(saved[0])
    model.v_cache.copy_(saved[1])
    pos_t = torch.tensor([8])
    graphed = [model(tokens, pos_t=pos_t), model(tokens, pos_t=pos_t + 1)]
    for a, b in zip(eager, graphed):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.torch
def test_model_is_dense_for_a_config_with_experts() -> None:
    """A Qwen-MoE-style config (intermediate_size 256, moe_intermediate_size 32, 8 experts)
    builds the capture's dense Llama with the 256-wide MLP, as ``--ffn`` says."""
    torch = _torch()
    from profdiag.capture.model import Llama

    cfg = replace(resolve_config("tiny", **SMALL), moe_ffn=32, experts=8, experts_per_tok=2)
    assert cfg.dims().ffn == 32  # the roofline's width: one expert
    model = Llama(cfg, batch=1, max_len=4, device=torch.device("cpu"), dtype=torch.float32)
    block = model.layers[0]
    assert (block.gate_proj.out_features, block.up_proj.out_features,
            block.down_proj.in_features) == (256, 256, 256)
    # q/k/v/o of head_dim 128 / 8 = 16: q 8 x 16 = 128 wide, k/v 8 x 16 = 128 (tiny: 8 kv heads)
    assert (block.q_proj.out_features, block.k_proj.out_features) == (128, 128)
    assert tuple(model.k_cache.shape) == (2, 1, 8, 4, 16)  # layers, batch, kv_heads, len, d


@pytest.mark.torch
def test_hf_model(tmp_path: Path) -> None:
    _torch()
    pytest.importorskip("transformers")
    from profdiag.capture import capture

    res = capture(_options(tmp_path, "generate", hf=True))
    assert res.data["impl"] == "hf"
    ops = _cpu_ops(_events(res.trace))
    assert sum(ops[n] for n in GEMM_OPS) == 15 * 4
